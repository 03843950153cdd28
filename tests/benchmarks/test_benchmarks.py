import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from benchmarks.__main__ import SECTIONS, main, run_benchmarks
from benchmarks.pooling import extrapolate_loop, pooling_regions, pooling_shape
from benchmarks.reference import loop_region_means
from benchmarks.report import fmt, render_markdown
from benchmarks.scaling import loglog_fit, synthetic_batch
from benchmarks.targets import Target, evaluate_targets, workers_needed
from benchmarks.training import (
    LOWRES,
    PHASES,
    bench_config,
    build_step_parts,
    summarize_phases,
)
from vice.pooling import region_means

CPU = torch.device("cpu")


def planted_maps(num_regions, num_views, h, w, seed=0):
    """Random ids in -1..R_b-1 with every region planted once in every view (all regions mutual)."""
    torch.manual_seed(seed)
    maps = []
    for b, r_b in enumerate(num_regions.tolist()):
        for _ in range(num_views):
            m = torch.randint(-1, r_b, (h, w))
            m.view(-1)[:r_b] = torch.arange(r_b)
            maps.append(m)
        del b
    return torch.stack(maps)


def test_loop_reference_equals_region_means_in_values_and_gradients():
    num_regions, m, d = torch.tensor([4, 1, 6]), 3, 5
    regions = planted_maps(num_regions, m, 7, 9)
    emb = torch.randn(9, d, 7, 9, dtype=torch.float64)
    weights = torch.randn(m, int(num_regions.sum()), d, dtype=torch.float64)
    grads = []
    outs = []
    for fn in (region_means, loop_region_means):
        leaf = emb.clone().requires_grad_()
        out = fn(leaf, regions, num_regions, m)
        (out * weights).sum().backward()
        outs.append(out.detach())
        grads.append(leaf.grad)
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(grads[1], grads[0])
    # Gradient of a pixel = weight of its region / region size; ignore pixels get none.
    assert float(grads[0][regions.unsqueeze(1).expand_as(emb) < 0].abs().max()) == 0.0


def test_loop_reference_on_a_subset_gives_the_leading_rows_of_each_view():
    num_regions, m = torch.tensor([5, 3]), 2
    regions = planted_maps(num_regions, m, 6, 6, seed=1)
    emb = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    full = region_means(emb, regions, num_regions, m)
    subset = loop_region_means(emb, regions, num_regions, m, max_images=1, max_regions=2)
    torch.testing.assert_close(subset, full[:, :2])
    one_map = loop_region_means(emb, regions, num_regions, m, max_views=1, max_images=1, max_regions=9)
    torch.testing.assert_close(one_map, full[:1, :5])  # image 0 has only 5 regions


def test_hand_computed_loop_means():
    emb = torch.tensor([[[[1.0, 3.0], [5.0, 100.0]]], [[[2.0, 4.0], [100.0, 8.0]]]])  # (2, 1, 2, 2)
    regions = torch.tensor([[[0, 0], [1, -1]], [[1, 0], [-1, 1]]])
    out = loop_region_means(emb, regions, torch.tensor([2]), 2)
    torch.testing.assert_close(out, torch.tensor([[[2.0], [5.0]], [[4.0], [5.0]]]))


def test_extrapolate_loop_recovers_per_map_and_per_region_costs():
    # One map costs 3 ms, each region 0.5 ms: k = 4, 16, 64 take 5, 11 and 35 ms.
    fit = extrapolate_loop([4, 16, 64], [5.0, 11.0, 35.0], maps_total=20, pairs_total=4000)
    assert fit["per_region_ms"] == pytest.approx(0.5)
    assert fit["per_map_ms"] == pytest.approx(3.0)
    assert fit["total_ms"] == pytest.approx(20 * 3.0 + 4000 * 0.5)


def test_extrapolate_loop_clamps_negative_costs_and_needs_two_counts():
    fit = extrapolate_loop([2, 8], [10.0, 9.0], maps_total=20, pairs_total=4000)
    assert fit["per_region_ms"] == 0.0
    assert fit["per_map_ms"] == pytest.approx(10 + 2 / 6)  # intercept of the line through both points
    assert fit["total_ms"] == pytest.approx(20 * fit["per_map_ms"])
    with pytest.raises(ValueError, match="distinct"):
        extrapolate_loop([8, 8], [1.0, 2.0], 20, 4000)


def test_pooling_regions_are_mutual_and_consecutive():
    shape = pooling_shape(CPU, quick=True)
    regions, num_regions = pooling_regions(shape)
    m = shape.num_views
    for b, r_b in enumerate(num_regions.tolist()):
        views = regions[b * m : (b + 1) * m]
        assert int(views.max()) == r_b - 1
        for r in range(r_b):  # every region id is present in every view of its image
            assert bool((views == r).flatten(1).any(dim=1).all())


def test_loglog_fit_recovers_an_exact_power_law():
    x = [1e3, 4e3, 1.6e4, 6.4e4]
    fit = loglog_fit(x, [3.0 * v**1.5 for v in x])
    assert fit["slope"] == pytest.approx(1.5)
    assert fit["r2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 2"):
        loglog_fit([1.0], [1.0])


def test_summarize_phases_medians_and_ratios():
    samples = {
        "data_wait": [1.0, 1.0, 7.0],
        "forward": [10.0, 12.0, 11.0],
        "pool_sinkhorn_loss": [1.0, 2.0, 1.5],
        "backward": [20.0, 30.0, 22.0],
        "optimizer": [2.0, 2.0, 2.0],
    }
    s = summarize_phases(samples)
    assert s["phases_ms"]["forward"] == 11.0
    assert s["phases_ms"]["backward"] == 22.0
    assert s["step_ms"] == 43.5  # median of the per-step sums 34, 47, 43.5
    assert s["compute_ms"] == 36.5  # per-step sums without data wait 33, 46, 36.5
    assert s["backward_over_forward"] == pytest.approx(2.0)
    assert s["loss_share_of_forward"] == pytest.approx(1.5 / 11.0)
    with pytest.raises(ValueError, match="never timed"):
        summarize_phases({"forward": [1.0]})


def test_split_step_equals_regional_swav_forward(tmp_path):
    shape = replace(LOWRES, decoder_channels=16, embed_dim=8, num_prototypes=6)
    cfg = bench_config(shape, CPU, str(tmp_path), str(tmp_path), 0, 1)
    cfg.model.output_stride = 16
    cfg.swav.queue_length = 12
    parts = build_step_parts(cfg, CPU)
    batch = synthetic_batch(2, 3, 32, cell=8)
    queue = parts.queue.contents()
    torch.manual_seed(0)
    expected = parts.model(batch.views, batch.regions, batch.num_regions, 3, queue)
    embeddings = parts.model.embedder(batch.views)
    got = parts.model.loss_from_embeddings(embeddings, batch.regions, batch.num_regions, 3, queue)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert queue.shape == (12, 8)
    torch.testing.assert_close(queue.norm(dim=1), torch.ones(12))  # pre-filled with unit vectors


def test_synthetic_batch_grid_regions():
    batch = synthetic_batch(2, 3, 20, cell=8)
    assert batch.num_regions.tolist() == [9, 9]  # ceil(20 / 8)^2
    assert batch.regions[0, 0, :].tolist() == [0] * 8 + [1] * 8 + [2] * 4
    assert torch.equal(batch.regions[0], batch.regions[5])


def test_target_bounds_and_workers_needed():
    assert Target("a", "", 2.5, False, 2.5, None).met is True
    assert Target("a", "", 2.5, False, 2.6, None).met is False
    assert Target("a", "", 50.0, True, 49.0, None).met is False
    assert Target("a", "", 50.0, True, None, None).met is None
    # 4 images x 5 views every 500 ms = 40 views/s; at 10 views/s per worker that is 4 workers.
    assert workers_needed(500.0, 4, 5, 10.0) == pytest.approx(4.0)


def test_evaluate_targets_from_hand_written_results():
    config = {
        "batch_size": 4,
        "num_views": 5,
        "view_size": 512,
        "backward_over_forward": 2.0,
        "loss_share_of_forward": 0.2,
        "compute_ms": 250.0,
    }
    results = {
        "meta": {"device": "cuda"},
        "training": {"configs": {"r50_dlv3p_highres": config}},
        "data": {
            "views": {
                "r50_dlv3p_highres": {
                    "batch_size": 4,
                    "num_views": 5,
                    "view_size": 512,
                    "views_per_s": {"cached": 20.0, "cold": 5.0},
                }
            }
        },
        "evaluation": {
            "image_size": [512, 683],
            "linear_probe_classes": 27,
            "cluster_over_linear": {"27": 1.0, "256": 3.0},
        },
    }
    targets = {t.key: t for t in evaluate_targets(results)}
    assert targets["backward_over_forward/r50_dlv3p_highres"].met is True
    assert targets["loss_share_of_forward/r50_dlv3p_highres"].met is False
    assert targets["loss_share_of_forward/r50_dlv3p_highres"].paper == pytest.approx(166 / 429)
    assert targets["cluster_over_linear/C27"].met is True
    assert targets["cluster_over_linear/C256"].met is False
    # 20 views per 250 ms = 80 views/s, at 20 views/s per worker: 4 workers.
    assert targets["data_workers_per_gpu"].measured == pytest.approx(4.0)
    assert "pooling_speedup" not in targets


def test_fmt():
    assert [fmt(None), fmt(4167.4), fmt(12.34), fmt(0.5), fmt(0.001234)] == [
        "-",
        "4,167",
        "12.3",
        "0.50",
        "0.0012",
    ]


@pytest.fixture(scope="module")
def quick_results():
    """Every section on tiny shapes (about 20-50 s on 2 busy cores, mostly the two networks' steps)."""
    return run_benchmarks(CPU, quick=True, sections=list(SECTIONS), workers=0, command="test")


@pytest.mark.slow
def test_quick_run_reports_every_phase(quick_results):
    configs = quick_results["training"]["configs"]
    assert set(configs) == {"r18_fpn_lowres", "r50_dlv3p_highres"}
    for config in configs.values():
        assert set(config["phases_ms"]) == set(PHASES)
        assert all(config["phases_ms"][p] > 0 for p in PHASES)
        # One timed step: the step is the sum of its phases, the compute time that without the wait.
        assert config["step_ms"] == pytest.approx(sum(config["phases_ms"].values()))
        assert config["compute_ms"] == pytest.approx(config["step_ms"] - config["phases_ms"]["data_wait"])
        assert config["backward_over_forward"] == pytest.approx(
            config["phases_ms"]["backward"] / config["phases_ms"]["forward"]
        )
        assert config["peak_memory_mb"] > 0
        assert config["regions_per_image"] >= 1


@pytest.mark.slow
def test_quick_run_pooling_agrees_with_the_loop(quick_results):
    pooling = quick_results["pooling"]
    assert pooling["max_abs_diff_vs_loop"] < 1e-5
    assert pooling["speedup"] == pytest.approx(pooling["loop_ms"]["total"] / pooling["ours_ms"]["total"])
    assert pooling["ours_ms"]["total"] == pytest.approx(
        pooling["ours_ms"]["forward"] + pooling["ours_ms"]["backward"]
    )


@pytest.mark.slow
def test_quick_run_data_evaluation_and_scaling_sections(quick_results):
    data = quick_results["data"]
    assert [r["image_size"] for r in data["slic"]] == [[60, 80], [128, 256]]
    for views in data["views"].values():
        assert set(views["views_per_s"]) == {"cold", "cached"}
        assert views["steps_per_s_per_worker"]["cached"] == pytest.approx(views["views_per_s"]["cached"] / 20)
    evaluation = quick_results["evaluation"]
    assert set(evaluation["cluster_assignment_ms"]) == {"27", "256"}
    assert evaluation["kmeans"]["reduced"] is True
    assert set(evaluation["kmeans"]["fit_s"]) == {"27", "256"}
    scaling = quick_results["scaling"]
    for point in scaling["batch_sweep"] + scaling["size_sweep"]:
        assert point["pixels"] == point["batch_size"] * point["num_views"] * point["view_size"] ** 2
    assert set(scaling["fit_all"]) == {"slope", "intercept", "r2"}


@pytest.mark.slow
def test_quick_run_targets_and_report(quick_results):
    keys = {t["key"] for t in quick_results["targets"]}
    assert keys == {
        "backward_over_forward/r18_fpn_lowres",
        "loss_share_of_forward/r18_fpn_lowres",
        "backward_over_forward/r50_dlv3p_highres",
        "loss_share_of_forward/r50_dlv3p_highres",
        "pooling_speedup",
        "cluster_over_linear/C27",
        "cluster_over_linear/C256",
        "data_workers_per_gpu",
        "scaling_slope",
    }
    for t in quick_results["targets"]:
        assert t["met"] == (
            t["measured"] >= t["threshold"] if t["goal"].startswith(">=") else t["measured"] <= t["threshold"]
        )
    text = render_markdown(quick_results)
    for heading in ("## Targets", "## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "Quick run"):
        assert heading in text
    assert text.count("| backward / forward,") == 2
    json.dumps(quick_results)  # serializable as written


def test_main_writes_json_and_markdown(tmp_path, capsys):
    main(["--device", "cpu", "--quick", "--only", "pooling", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "benchmark-quick-pooling.json").read_text())
    assert written["meta"]["sections"] == ["pooling"]
    assert [t["key"] for t in written["targets"]] == ["pooling_speedup"]
    markdown = (tmp_path / "benchmark-quick-pooling.md").read_text()
    assert markdown in capsys.readouterr().out
    assert "## 1." not in markdown
    # --render recomputes targets and Markdown from the JSON alone: the same tables.
    written["targets"] = []
    (tmp_path / "benchmark-quick-pooling.json").write_text(json.dumps(written))
    main(["--render", str(tmp_path / "benchmark-quick-pooling.json")])
    rendered = json.loads((tmp_path / "benchmark-quick-pooling.json").read_text())
    assert [t["key"] for t in rendered["targets"]] == ["pooling_speedup"]
    assert (tmp_path / "benchmark-quick-pooling.md").read_text() == markdown


@pytest.mark.slow
def test_training_section_with_a_loader_worker_does_not_deadlock(tmp_path):
    # A forked worker's cv2.setNumThreads(1) hangs if the parent used OpenCV's thread pool first.
    command = [sys.executable, "-m", "benchmarks", "--device", "cpu", "--quick", "--only", "training"]
    command += ["--workers", "1", "--out", str(tmp_path)]
    subprocess.run(command, check=True, timeout=300, capture_output=True)
    written = json.loads((tmp_path / "benchmark-quick-training.json").read_text())
    assert {c["num_workers"] for c in written["training"]["configs"].values()} == {1}


def test_without_opencv_contrib_pooling_and_data_fall_back_to_grid_cells(monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "ximgproc")
    results = run_benchmarks(CPU, quick=True, sections=["pooling", "data"], command="test")
    assert results["pooling"]["region_method"] == "grid"
    # 48 px maps in 8 px cells: 36 cells per image before Algorithm 1's masking removes some.
    assert 1 <= results["pooling"]["regions_per_image"] <= 36
    assert results["data"]["region_method"] == "grid"
    assert results["data"]["slic"] == []
    assert "SLIC not timed" in render_markdown(results)


def test_results_so_far_are_handed_out_after_every_section(monkeypatch):
    """A benchmark cut short (a lent GPU's time limit) keeps the sections it finished."""
    import benchmarks.__main__ as entry

    sections = {"first": lambda device, quick, workers: {"value": 1}, "second": lambda d, q, w: {"value": 2}}
    monkeypatch.setattr(entry, "SECTIONS", sections)
    monkeypatch.setattr(entry, "evaluate_targets", lambda results: [])
    seen = []
    entry.run_benchmarks(CPU, quick=True, sections=["first", "second"], on_section=seen.append)
    assert [sorted(k for k in partial if k in sections) for partial in seen] == [
        ["first"],
        ["first", "second"],
    ]
    assert seen[0]["first"] == {"value": 1} and seen[0]["targets"] == []
