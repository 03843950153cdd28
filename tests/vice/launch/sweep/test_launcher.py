"""``--launcher auto``: waits for a completing node, is decided once per sweep or study, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from vice.launch.sweep import launch
from vice.launch.sweep.cli import main, sweep_dir
from vice.launch.sweep.errors import SweepError
from vice.launch.sweep.launch import LAUNCHER_FILE, decide_launcher, record_launcher
from vice.launch.sweep.slurm import slurm_available

SMOKE = "table3_decomposition_smoke"


def answers(*states: list[str] | None) -> tuple[list[float], object]:
    """A sinfo that answers ``states`` in turn, and the waits between its calls."""
    replies, waits = list(states), []
    return waits, (lambda: replies.pop(0))


def test_a_completing_node_is_waited_for_and_then_used() -> None:
    waits, probe = answers(["comp"], ["comp"], ["idle"])
    assert slurm_available(wait_s=60, poll_s=2, probe=probe, sleep=waits.append)  # type: ignore[arg-type]
    assert waits == [2, 2]


def test_a_node_completing_for_longer_than_the_wait_still_means_slurm() -> None:
    waits, probe = answers(["comp"], ["comp"], ["comp"], ["comp"])
    assert slurm_available(wait_s=6, poll_s=2, probe=probe, sleep=waits.append)  # type: ignore[arg-type]
    assert waits == [2, 2, 2]


@pytest.mark.parametrize("states", [None, [], ["down"], ["drain", "down"]])
def test_no_answer_or_no_usable_node_is_no_slurm_without_waiting(states: list[str] | None) -> None:
    waits, probe = answers(states)
    assert not slurm_available(wait_s=60, poll_s=2, probe=probe, sleep=waits.append)  # type: ignore[arg-type]
    assert waits == []


def test_the_launcher_is_decided_once_and_never_switched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / LAUNCHER_FILE
    monkeypatch.setattr(launch, "slurm_available", lambda: False)
    assert decide_launcher("auto", SMOKE, record)[0] == "local"
    record_launcher(record, "local")
    monkeypatch.setattr(launch, "slurm_available", lambda: True)  # the cluster came back mid-way
    assert decide_launcher("auto", SMOKE, record) == ("local", f"decided when it started ({record})")
    assert decide_launcher("auto", SMOKE, None)[0] == "slurm"  # a new sweep decides afresh
    record_launcher(record, "slurm")
    assert record.read_text() == "local\n"
    with pytest.raises(SweepError, match=r"runs on local since it started .* launchers never change mid-way"):
        decide_launcher("slurm", SMOKE, record)


def test_vice_sweep_continuing_a_sweep_keeps_its_launcher_and_says_so_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(launch, "slurm_available", lambda: True)
    record_launcher(sweep_dir(tmp_path, SMOKE, "s1") / LAUNCHER_FILE, "local")
    argv = ["table3_decomposition", "--smoke", "--output-dir", str(tmp_path), "--plan", "seed=0"]
    assert main([*argv, "--sweep-id", "s1"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        f"vice-sweep: jobs run on launcher LOCAL: decided when it started ({tmp_path}/{SMOKE}/sweeps/s1/launcher.txt)"
    )
    assert main([*argv, "--sweep-id", "s1", "--launcher", "slurm"]) == 2
    assert "launchers never change mid-way" in capsys.readouterr().err
    assert main(argv) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        "vice-sweep: jobs run on launcher SLURM: a SLURM cluster answers (sinfo)"
    )


def test_vice_tune_refuses_another_launcher_for_a_study_that_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vice.launch.tune.cli import main as tune_main

    record_launcher(tmp_path / "tune_smoke" / LAUNCHER_FILE, "local")
    assert tune_main(["smoke", "--launcher", "slurm", "--output-dir", str(tmp_path)]) == 2
    assert "runs on local since it started" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_the_ui_hint_runs_mlflow_ui_only_over_a_sqlite_file() -> None:
    from vice.launch.sweep.launch import ui_hint

    assert ui_hint("sqlite:////o/mlflow.db").startswith(
        "mlflow ui --backend-store-uri sqlite:////o/mlflow.db"
    )
    assert ui_hint("http://127.0.0.1:5077") == "open http://127.0.0.1:5077"  # a server is its own UI
