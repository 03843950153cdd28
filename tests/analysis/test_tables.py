"""Tables 1-6 regenerated from the fixture store, against golden files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow_fixtures import VICE_FAMILIES, check_golden

from analysis.cells import MixedCellError
from analysis.cli import main
from analysis.runs import load_runs
from analysis.tables import (
    build_table1,
    build_table3,
    build_table4,
    build_table5,
    render_experiment,
    resolve_experiment,
    write_experiment,
)

# Tables ------------------------------------------------------------------------------------------


def test_table3_cells_bold_and_gap_footnotes(uri: str) -> None:
    table = build_table3(load_runs(uri, ["table3_decomposition"], sweep_id="sw1"), "table3_decomposition")
    low, high = table.sections
    assert low.title == "Low-resolution Cityscapes" and high.title == "High-resolution Cityscapes"
    assert low.columns == (
        "FPN 1px",
        "Masking",
        "Grid 10px",
        "Super 10px",
        "DLV3+",
        "FPN super 20px +mask 25%",
    )
    miou = dict(zip(low.columns, low.rows[0][1], strict=True))
    assert miou["Super 10px"].ours() == "32.00 ± 2.00 (3)" and miou["Super 10px"].bold
    assert miou["Grid 10px"].ours() == "29.50 ± 0.71 (2)" and not miou["Grid 10px"].bold
    assert miou["FPN super 20px +mask 25%"].ours() == "31.00 (1)"
    assert [miou[c].ours() for c in ("FPN 1px", "Masking", "DLV3+")] == ["—"] * 3
    assert miou["Super 10px"].delta() == "+0.45"  # paper 31.55
    time = dict(zip(low.columns, low.rows[1][1], strict=True))
    assert time["Super 10px"].ours() == "1h 2min (3)"  # (3600 + 3720 + 3840) / 3 s
    assert time["Grid 10px"].paper_str() == "5h 31min" and time["Grid 10px"].delta() == "+0s"
    assert all(s.ours() == "—" for s in high.rows[0][1])
    overrides = (
        "data.name=cityscapes views.view_size=256 regions.method={} {}views.mask_ratio={} model.decoder=fpn"
    )
    assert table.footnotes[:3] == (
        "missing: Low-resolution Cityscapes / FPN 1px: run table3_decomposition with "
        f"`{overrides.format('pixel', '', '0.0')} seed=0`",
        "missing: Low-resolution Cityscapes / Masking: run table3_decomposition with "
        f"`{overrides.format('pixel', '', '0.25')}`",
        "incomplete (2 finished): Low-resolution Cityscapes / Grid 10px: run table3_decomposition with "
        f"`{overrides.format('grid', 'regions.region_size=10 ', '0.25')} seed=2`",
    )


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
def test_table3_golden_every_format(uri: str, fmt: str) -> None:
    text = render_experiment(uri, "table3_decomposition", fmt=fmt)
    check_golden(f"table3_decomposition.{ {'markdown': 'md', 'latex': 'tex', 'csv': 'csv'}[fmt] }", text)


def test_table3_golden_paper_beside_ours(uri: str) -> None:
    text = render_experiment(uri, "table3_decomposition", sweep_id="sw1", compare=True)
    check_golden("table3_decomposition_compare.md", text)


def test_smoke_sweep_table_is_labelled_synthetic_and_has_no_paper_cells(uri: str) -> None:
    text = render_experiment(uri, "table3_decomposition", sweep_id="smoke1")
    check_golden("table3_decomposition_smoke.md", text)
    assert "64px-resolution Synthetic (smoke)" in text
    assert "42.00 ± 2.83 (2)†" in text and "**42.00 ± 2.83 (2)†**" in text
    assert "*Low-resolution Cityscapes*" not in text and "missing" not in text


PICIE_EVALS = ("C 27", "C 27◇", "C 27⋆", "C 128⋆", "C 256⋆", "Linear")
OTHERS_BEFORE = [(m, "C 27") for m in ("ResNet50", "MoCoV2", "DINO*", "IIC")] + [
    ("PiCIE", e) for e in PICIE_EVALS
]
OTHERS_AFTER = [("PiCIE+H", "C 27+100")]
STEGO = [("STEGO*", "C 27"), ("STEGO*", "Linear")]


def test_table1_sub_rows_markers_and_best_cnn_bold(uri: str) -> None:
    table = build_table1(load_runs(uri, ["table1_main"], sweep_id="sw1"))
    coco, city = table.sections
    rows = {labels: values for labels, values in coco.rows}
    assert list(rows) == [
        *OTHERS_BEFORE,
        *OTHERS_AFTER,
        *[("ViCE (low-res)", e) for e in VICE_FAMILIES],
        *[("ViCE (high-res)", e) for e in VICE_FAMILIES],
        *STEGO,
    ]
    assert rows[("ViCE (low-res)", "C 27◇")][0].ours() == "11.50 ± 0.71 (2)"
    assert rows[("ViCE (low-res)", "C 27◇")][1].ours() == "31.00 ± 1.41 (2)"
    assert rows[("ViCE (low-res)", "C 256⋆")][0].paper == 17.98
    bold = [(labels, i) for labels, values in coco.rows for i, v in enumerate(values) if v.bold]
    assert bold == [
        (("ViCE (high-res)", "C 256⋆"), 0),
        (("ViCE (high-res)", "C 256⋆"), 1),
        (("ViCE (high-res)", "Linear"), 0),
        (("ViCE (high-res)", "Linear"), 1),
    ]
    assert [labels for labels, _ in city.rows] == [
        *OTHERS_BEFORE,
        *OTHERS_AFTER,
        *[("ViCE (low-res)", e) for e in VICE_FAMILIES],
        ("ViCE (no pretrain)", "Linear"),
        ("ViCE (high-res)", "C 256⋆"),
        ("ViCE (high-res)", "Linear"),
        *STEGO,
    ]
    assert all(v.ours() == "—" for _, values in city.rows for v in values)
    check_golden("table1_main.md", render_experiment(uri, "table1_main", sweep_id="sw1"))


def test_table1_paper_only_rows_show_the_papers_numbers_and_never_bold(uri: str) -> None:
    table = build_table1(load_runs(uri, ["table1_main"], sweep_id="sw1"))
    coco, city = table.sections
    others = {labels: values for labels, values in coco.rows if not labels[0].startswith("ViCE")}
    assert all(v.ours() == "—" and not v.bold for values in others.values() for v in values)
    assert [v.paper for v in others[("PiCIE", "C 256⋆")]] == [12.42, 66.02]
    assert [v.paper for v in others[("PiCIE+H", "C 27+100")]] == [14.4, 50.0]
    assert [v.paper for v in others[("STEGO*", "Linear")]] == [41.0, 76.1]  # ViT: above ours, not bold
    city_rows = dict(city.rows)
    assert [v.paper_str() for v in city_rows[("IIC", "C 27")]] == ["6.35", "47.88"]
    assert [v.paper_str() for v in city_rows[("DINO*", "C 27")]] == ["n/a", "n/a"]  # printed '-'
    assert table.footnotes[-1] == (
        "ResNet50, MoCoV2, DINO*, IIC, PiCIE, PiCIE+H, STEGO*: other methods as the paper reports them;"
        " this repo does not run them, so ours is —. * marks ViT-based models, which the bold leaves out"
        " (it compares CNN results)."
    )
    compare = render_experiment(uri, "table1_main", sweep_id="sw1", compare=True)
    assert "| STEGO*          | C 27     |      28.20 |                — |       |      56.90 |" in compare
    assert "|                 | Linear   |      41.00 |                — |       |      76.10 |" in compare
    check_golden("table1_main_compare.md", compare)


def test_table1_of_a_smoke_sweep_has_no_paper_rows(uri: str) -> None:
    table = build_table1(load_runs(uri, ["table1_main"], sweep_id="smoke1"))
    (section,) = table.sections
    assert section.title == "Synthetic (smoke)"
    model = "ViCE (64px-res, RN18, FPN, no pretrain)"
    assert [(labels, [v.ours() for v in values]) for labels, values in section.rows] == [
        ((model, "C 27◇"), ["20.00 (1)†", "50.00 (1)†"]),
        ((model, "Linear"), ["30.00 (1)†", "60.00 (1)†"]),
    ]
    assert not any("other methods" in note for note in table.footnotes)


def test_table2_table6_golden(uri: str) -> None:
    table2 = render_experiment(uri, "table2_resolution", compare=True)
    check_golden("table2_resolution_compare.md", table2)
    assert "22.00 ± 0.00 (2)" in table2 and "C 128⋆" in table2  # best cluster: C 128⋆ beats C 27◇ (20.00)
    table6 = render_experiment(uri, "table6_dk")
    check_golden("table6_dk.md", table6)
    assert "**29.00 (1)**" in table6 and "27.50 ± 0.71 (2)" in table6


def test_table5_baseline_and_deltas_from_a_smoke_study(uri: str) -> None:
    table = build_table5(load_runs(uri, ["table5_hparams"]))
    (section,) = table.sections
    rows = [(labels[0], values[0].ours(), values[1]) for labels, values in section.rows]
    assert rows == [
        ("baseline", "21.00 ± 1.41 (2)†", ""),
        ("mask coverage 0.5 → 0.25", "23.00 (1)†", "+2.00 (+9.5%)"),
        ("D 16 → 32", "19.00 (1)†", "-2.00 (-9.5%)"),
        ("K 16 → 32", "—", ""),
    ]
    assert section.rows[1][1][0].bold
    check_golden("table5_hparams.md", render_experiment(uri, "table5_hparams"))


def test_table4_domain_cell_beside_the_paper(uri: str) -> None:
    table = build_table4(load_runs(uri, ["table4_domain"], sweep_id="sw1"))
    (section,) = table.sections
    rows = {labels: values for labels, values in section.rows}
    assert list(rows) == [("Cityscapes", "Cityscapes"), ("COCO", "Cityscapes")]
    miou, acc = rows[("COCO", "Cityscapes")]
    assert (miou.ours(), miou.paper, miou.delta()) == ("35.00 ± 1.41 (2)", 34.14, "+0.86")
    assert (acc.ours(), acc.paper, acc.delta()) == ("86.50 ± 0.71 (2)", 86.1, "+0.40")
    assert [v.ours() for v in rows[("Cityscapes", "Cityscapes")]] == ["—", "—"]
    assert table.footnotes == (
        "missing: Cityscapes → Cityscapes: run table4_domain with `data.name=cityscapes eval.dataset=cityscapes`",
    )
    check_golden(
        "table4_domain_compare.md", render_experiment(uri, "table4_domain", sweep_id="sw1", compare=True)
    )


def test_mixed_protocol_cell_is_refused(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MixedCellError, match=r"eval_protocol = \['full', 'picie'\]"):
        render_experiment(uri, "table4_domain")
    assert main(["--tracking-uri", uri, "--experiment", "table4_domain", "--out", "/nonexistent"]) == 1
    assert "mix eval_protocol" in capsys.readouterr().err


def test_same_runs_give_byte_identical_files(uri: str, tmp_path: Path) -> None:
    first = write_experiment(uri, "table3_decomposition", tmp_path / "a")
    second = write_experiment(uri, "table3_decomposition", tmp_path / "b")
    for a, b in zip(first.files, second.files, strict=True):
        if a.suffix != ".png":
            assert a.read_bytes() == b.read_bytes(), a.name
    assert [p.name for p in first.files] == [
        "table3_decomposition.md",
        "table3_decomposition.tex",
        "table3_decomposition.csv",
        "table3_decomposition.png",
        "table3_decomposition.pdf",
        "table3_decomposition_plot.csv",
    ]


def test_experiment_names_resolve_to_paper_experiments() -> None:
    assert resolve_experiment("table3_decomposition_smoke") == "table3_decomposition"
    with pytest.raises(KeyError, match="names none of the paper experiments"):
        resolve_experiment("exp138")
