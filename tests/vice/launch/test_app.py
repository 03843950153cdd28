"""The Hydra entry points (vice-train, vice-eval, ``python -m vice.launch.job``) refuse a misspelt experiment
and a bad config value with one line and exit status 2, and leave no run dir behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vice.config import ConfigError
from vice.launch.app import USAGE_ERROR, check_experiment_overrides, list_experiments

#: The console scripts as installed beside this interpreter, and the job's module.
ENTRY_POINTS = {
    "vice-train": [str(Path(sys.executable).with_name("vice-train"))],
    "vice-eval": [str(Path(sys.executable).with_name("vice-eval"))],
    "python -m vice.launch.job": [sys.executable, "-m", "vice.launch.job"],
}


def run_entry_point(command: list[str], *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *overrides], capture_output=True, text=True)


def test_an_unknown_experiment_is_refused_naming_every_valid_one() -> None:
    check_experiment_overrides(["experiment=demo", "seed=1", "experiment_note=x"])
    check_experiment_overrides(["+experiment=table3_decomposition_smoke,demo"])
    check_experiment_overrides(["experiment=choice(demo,table3_decomposition_smoke)"])  # Hydra's to expand
    with pytest.raises(ConfigError) as error:
        check_experiment_overrides(["seed=1", "experiment=demo,table3_decompositon_smoke"])
    message = str(error.value)
    assert message.startswith("experiment='table3_decompositon_smoke' is not in ")
    assert message.endswith(f"one of {', '.join(list_experiments())}")
    assert len(list_experiments()) == len(
        list((Path(__file__).parents[3] / "sweeps" / "experiment").glob("*.yaml"))
    )


def test_vice_sweep_lists_the_experiments_from_the_same_place() -> None:
    import vice.launch.app
    import vice.launch.sweep.compose

    assert vice.launch.sweep.compose.list_experiments is vice.launch.app.list_experiments


@pytest.mark.parametrize("program", list(ENTRY_POINTS))
def test_a_misspelt_experiment_exits_2_with_one_line_and_creates_nothing(
    program: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    done = run_entry_point(ENTRY_POINTS[program], "experiment=demoo", f"run_dir={run_dir}")
    assert done.returncode == USAGE_ERROR
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"{program}: experiment='demoo' is not in ")
    assert "one of demo, " in line and "table3_decomposition_smoke" in line
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("program", "override", "message"),
    [
        ("vice-train", "views.num_views=1", "views.num_views=1 is invalid: >= 2"),
        (
            "vice-eval",
            "eval.checkpoint=/nonexistent.pt",
            "eval.checkpoint='/nonexistent.pt' is invalid: null",
        ),
        ("python -m vice.launch.job", "optim.momentum=1.5", "optim.momentum=1.5 is invalid: within [0, 1)"),
    ],
)
def test_a_config_error_exits_2_with_one_line_and_leaves_no_run_dir(
    program: str, override: str, message: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    done = run_entry_point(ENTRY_POINTS[program], "experiment=demo", f"run_dir={run_dir}", override)
    assert done.returncode == USAGE_ERROR
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"{program}: {message}")
    assert not run_dir.exists()


def test_a_config_error_keeps_a_run_dir_that_holds_more_than_hydras_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    done = run_entry_point(
        ENTRY_POINTS["vice-train"], "experiment=demo", f"run_dir={run_dir}", "views.num_views=1"
    )
    assert done.returncode == USAGE_ERROR
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "app.log", "checkpoints"]
