"""Every experiment file (paper and smoke) composes onto the schema, and its jobs are the paper's.

The jobs are composed exactly as ``vice-sweep`` composes them (Hydra's sweep expansion, the typed
schema, :func:`vice.config.validate`); then each experiment is checked against the paper's numbers
(``analysis/paper_results.json``), seeds and recipe.
"""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from vice.config import Config, register_schema
from vice.launch.app import list_experiments
from vice.launch.sweep.compose import Composer, Job, compose_jobs
from vice.launch.sweep.cost import launcher_gpus
from vice.launch.sweep.launch import list_launchers
from vice.launch.tracking.identity import semantic_config

PAPER_RESULTS = Path(__file__).resolve().parents[2] / "analysis" / "paper_results.json"
PAPER_EXPERIMENTS = (
    "table1_main",
    "table2_resolution",
    "table3_decomposition",
    "table4_domain",
    "table5_hparams",
    "table6_dk",
    "fig5_element_size",
    "fig6_random_init",
    "fig7_backbone",
)
#: Jobs per experiment: cells (or axis products) x seeds.
PAPER_JOB_COUNTS = {
    "table1_main": 5 * 3,
    "table2_resolution": 4 * 3,
    "table3_decomposition": 8 * 3,
    "table4_domain": 2 * 3,
    "table5_hparams": 10 * 3,
    "table6_dk": 3 * 3 * 3,
    "fig5_element_size": 2 * 5 * 3,
    "fig6_random_init": 3 * 3,
    "fig7_backbone": 2 * 4 * 3,
}
SMOKE_JOB_COUNTS = {
    "table1_main_smoke": 4,
    "table2_resolution_smoke": 4,
    "table3_decomposition_smoke": 6,
    "table4_domain_smoke": 2,
    "table5_hparams_smoke": 4,
    "table6_dk_smoke": 4,
    "fig5_element_size_smoke": 4,
    "fig6_random_init_smoke": 2,
    "fig7_backbone_smoke": 2,
}


def _compose_all() -> dict[str, list[Job]]:
    from hydra import compose, initialize_config_dir

    from vice.launch.app import SWEEPS_DIR

    register_schema()
    jobs = {}
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="test"):
        composer = Composer()
        for name in [*PAPER_EXPERIMENTS, *SMOKE_JOB_COUNTS]:
            master = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
            params = master.hydra.sweeper.params or {}
            jobs[name] = compose_jobs(composer, name, params, [], Path("/out"))
    return jobs


@pytest.fixture(scope="module")
def experiments() -> dict[str, list[Job]]:
    return _compose_all()


def value(cfg: Config, key: str) -> Any:
    """A flattened config value, or one of the analysis's derived axes."""
    if key == "pretrained":
        return cfg.model.pretrained is not None
    if key == "element_size":
        return 1 if cfg.regions.method == "pixel" else cfg.regions.region_size
    if key == "eval_dataset":
        return cfg.eval.dataset or cfg.data.name
    section, name = key.split(".")
    found = getattr(getattr(cfg, section), name)
    return list(found) if isinstance(found, list | tuple) else found


def paper_cells() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(experiment, row label, config) of every paper table cell that reports a number."""
    tables = json.loads(PAPER_RESULTS.read_text())["tables"]
    for table in tables.values():
        for row in table.get("rows", []):
            if row.get("config") and row.get("miou") is not None:
                yield table["experiment"], json.dumps(row)[:80], row["config"]


def test_every_paper_experiment_has_its_file_and_a_smoke_variant() -> None:
    names = set(list_experiments())
    assert set(PAPER_EXPERIMENTS) | set(SMOKE_JOB_COUNTS) <= names
    assert {f"{name}_smoke" for name in PAPER_EXPERIMENTS} == set(SMOKE_JOB_COUNTS)


def test_every_experiment_composes_to_its_number_of_valid_jobs(experiments: dict[str, list[Job]]) -> None:
    counts = {name: len(jobs) for name, jobs in experiments.items()}
    assert counts == {**PAPER_JOB_COUNTS, **SMOKE_JOB_COUNTS}
    assert all(job.config.experiment == name for name, jobs in experiments.items() for job in jobs)


@pytest.mark.parametrize("name", PAPER_EXPERIMENTS)
def test_paper_experiments_run_every_configuration_with_seeds_0_1_2(
    experiments: dict[str, list[Job]], name: str
) -> None:
    seeds_per_config = collections.defaultdict(set)
    for job in experiments[name]:
        without_seed = {k: v for k, v in semantic_config(job.config).items() if k != "seed"}
        seeds_per_config[json.dumps(without_seed, sort_keys=True)].add(job.config.seed)
    assert list(seeds_per_config.values()) == [{0, 1, 2}] * (PAPER_JOB_COUNTS[name] // 3)


@pytest.mark.parametrize(("experiment", "row", "config"), list(paper_cells()))
def test_every_reported_paper_cell_is_swept_with_three_seeds(
    experiments: dict[str, list[Job]], experiment: str, row: str, config: dict[str, Any]
) -> None:
    matching = [j for j in experiments[experiment] if all(value(j.config, k) == v for k, v in config.items())]
    assert sorted(j.config.seed for j in matching) == [0, 1, 2], row


def test_table5_cells_change_exactly_one_setting_of_the_appendix_b_baseline(
    experiments: dict[str, list[Job]],
) -> None:
    baseline_entry = json.loads(PAPER_RESULTS.read_text())["tables"]["5"]["baseline"]
    jobs = [j for j in experiments["table5_hparams"] if j.config.seed == 0]
    baseline = [j for j in jobs if "cell/table5_hparams=baseline" in j.overrides]
    assert len(baseline) == 1
    assert {k: value(baseline[0].config, k) for k in baseline_entry} == baseline_entry
    reference = semantic_config(baseline[0].config)
    changed = []
    for job in jobs:
        if job is baseline[0]:
            continue
        diff = {k for k, v in semantic_config(job.config).items() if reference[k] != v}
        assert len(diff) == 1, (job.overrides, diff)
        changed += diff
    assert sorted(changed) == sorted(
        [
            "views.view_size",
            "views.mask_ratio",
            "views.mask_ratio",
            "swav.num_prototypes",
            "swav.num_prototypes",
            "swav.queue_length",
            "views.num_views",
            "model.embed_dim",
            "views.resize_range",
        ]
    )


def test_table6_is_the_full_d_by_k_grid_around_the_paper_pairs(experiments: dict[str, list[Job]]) -> None:
    pairs = {(j.config.model.embed_dim, j.config.swav.num_prototypes) for j in experiments["table6_dk"]}
    assert pairs == set(itertools.product((64, 128, 256), repeat=2))
    assert {(64, 64), (64, 128), (128, 128), (128, 256), (256, 128), (256, 256)} < pairs


@pytest.mark.parametrize("name", ["table1_main", "table2_resolution", "table4_domain", "fig7_backbone"])
def test_main_experiments_use_the_papers_recipe(experiments: dict[str, list[Job]], name: str) -> None:
    for job in experiments[name]:
        cfg = job.config
        low = cfg.views.view_size == 256
        assert (cfg.views.num_views, cfg.data.batch_size, cfg.model.embed_dim, cfg.swav.num_prototypes) == (
            5,
            4,
            128,
            128,
        )
        assert (
            cfg.swav.queue_length,
            cfg.views.mask_ratio,
            cfg.optim.base_lr,
            cfg.optim.base_lr_world_size,
        ) == (
            5000,
            0.25,
            0.04,
            4,
        )
        assert cfg.regions.region_size == (10 if low else 20)
        assert cfg.views.view_size in (256, 512)
        assert cfg.train.max_steps == {"cocostuff": 7552, "cityscapes": 558}[cfg.data.name]


def test_fig6_evaluates_during_training_from_random_init(experiments: dict[str, list[Job]]) -> None:
    schedule = {
        (j.config.data.name, j.config.model.pretrained is None): (
            j.config.train.max_steps,
            j.config.train.eval_every,
        )
        for j in experiments["fig6_random_init"]
    }
    assert schedule == {
        ("cocostuff", True): (22656, 1888),
        ("cityscapes", True): (3348, 279),
        ("cityscapes", False): (558, 93),
    }


def test_every_job_evaluates_the_floors_its_table_shows(experiments: dict[str, list[Job]]) -> None:
    """eval.baselines (random init, raw colours), so every table shows its floor, smoke tables included."""
    without = sorted(
        {name for name, jobs in experiments.items() for j in jobs if not j.config.eval.baselines}
    )
    assert without == []


@pytest.mark.parametrize("name", list(SMOKE_JOB_COUNTS))
def test_smoke_jobs_are_tiny_and_synthetic(experiments: dict[str, list[Job]], name: str) -> None:
    for job in experiments[name]:
        cfg = job.config
        assert (cfg.data.name, cfg.data.root, cfg.model.pretrained, cfg.data.num_workers) == (
            "synthetic",
            None,
            None,
            0,
        )
        assert cfg.views.view_size <= 64 and cfg.train.max_steps <= 20 and cfg.eval.probe_steps <= 50
        assert cfg.model.backbone in ("resnet18", "resnet34")
        assert cfg.eval.max_images <= 4 and max(cfg.eval.num_clusters) <= 16


def _launcher(name: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from vice.launch.app import SWEEPS_DIR

    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="test"):
        cfg = compose("config", overrides=[f"hydra/launcher={name}", *overrides], return_hydra_config=True)
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(launcher, dict)
    return launcher


def test_launcher_presets_hold_one_task_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VICE_SLURM_PARTITION", raising=False)
    found = {name: _launcher(name, []) for name in list_launchers()}
    assert {name: launcher_gpus(launcher) for name, launcher in found.items()} == {
        "local": 0,
        "slurm": 0,
        "v100": 1,
        "v100_node": 4,
        "v100_8nodes": 32,
    }
    assert [found[n]["tasks_per_node"] for n in ("v100", "v100_node", "v100_8nodes")] == [1, 4, 4]
    assert found["v100_8nodes"]["nodes"] == 8 and found["v100"]["partition"] is None
    assert found["local"]["_target_"].endswith("LocalLauncher")
    assert all(found[n]["_target_"].endswith("SlurmLauncher") for n in found if n != "local")


@pytest.mark.parametrize("name", ["slurm", "v100", "v100_node", "v100_8nodes"])
def test_slurm_settings_are_overridable_from_the_environment_and_the_command_line(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("VICE_SLURM_PARTITION", "gpu-v100")
    monkeypatch.setenv("VICE_SLURM_SETUP", "module load cuda/12.4")
    overrides = [
        "hydra.launcher.account=vision",
        "hydra.launcher.qos=high",
        "hydra.launcher.constraint=v100-32g",
        "hydra.launcher.timeout_min=90",
        "hydra.launcher.max_num_timeout=5",
        "hydra.launcher.signal_delay_s=240",
    ]
    launcher = _launcher(name, overrides)
    assert {k: launcher[k] for k in ("partition", "account", "qos", "constraint")} == {
        "partition": "gpu-v100",
        "account": "vision",
        "qos": "high",
        "constraint": "v100-32g",
    }
    assert (launcher["timeout_min"], launcher["max_num_timeout"], launcher["signal_delay_s"]) == (90, 5, 240)
    assert launcher["setup"] == ["module load cuda/12.4"]
    assert _launcher(name, ["hydra.launcher.setup=[module load gcc,source env.sh]"])["setup"] == [
        "module load gcc",
        "source env.sh",
    ]


def test_every_experiment_file_is_composed_here_or_in_test_config() -> None:
    """A new experiment file must join the lists above (demo, photos and learning_photos are checked in
    tests/vice/test_config.py)."""
    from vice.launch.app import list_experiments

    assert set(list_experiments()) == {
        *PAPER_EXPERIMENTS,
        *SMOKE_JOB_COUNTS,
        "demo",
        "photos",
        "learning_photos",
    }
