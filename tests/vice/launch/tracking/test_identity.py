"""The run key covers the world size, which the LR scales with; vice-sweep plans with the launcher's."""

from __future__ import annotations

from pathlib import Path

import pytest

from vice.config import Config
from vice.launch.sweep.cli import _parser, prepare
from vice.launch.sweep.compose import launcher_world_size
from vice.launch.tracking.identity import WORLD_SIZE_KEY, compute_run_key, semantic_config


def test_the_world_size_enters_the_run_key_and_one_rank_keeps_the_earlier_key() -> None:
    cfg = Config()
    keys = {compute_run_key(cfg, n) for n in (1, 2, 4, 32)}
    assert len(keys) == 4
    assert compute_run_key(cfg, 1) == compute_run_key(cfg)
    assert WORLD_SIZE_KEY not in semantic_config(cfg, 1) and semantic_config(cfg, 32)[WORLD_SIZE_KEY] == "32"
    with pytest.raises(ValueError, match="world_size=0 must be >= 1"):
        compute_run_key(cfg, 0)


def test_the_world_size_of_a_launcher_is_nodes_times_tasks() -> None:
    assert launcher_world_size({"nodes": 8, "tasks_per_node": 4}) == 32
    assert launcher_world_size({"nodes": None, "tasks_per_node": None}) == 1


def test_vice_sweep_plans_run_keys_with_the_launchers_world_size(tmp_path: Path) -> None:
    argv = ["table3_decomposition", "--smoke", "--launcher", "local", "--output-dir", str(tmp_path)]
    one = prepare(_parser().parse_intermixed_args([*argv, "seed=0", "regions.method=slic"]))
    two = prepare(
        _parser().parse_intermixed_args(
            [*argv, "seed=0", "regions.method=slic", "hydra.launcher.tasks_per_node=2"]
        )
    )
    (single,), (double,) = one.jobs, two.jobs
    assert single.run_key == compute_run_key(single.config, 1)
    assert double.run_key == compute_run_key(double.config, 2) != single.run_key
    assert double.run_dir.name == double.run_key
