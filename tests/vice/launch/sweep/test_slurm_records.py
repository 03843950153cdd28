"""SLURM jobs recorded at submission: a PENDING job is not submitted twice, a recycled id is not ours."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from vice.config import Config
from vice.launch.sweep import launch
from vice.launch.sweep.compose import Job
from vice.launch.sweep.plan import DEAD, RUNNING, jobs_to_submit, plan_label, plan_state
from vice.launch.sweep.slurm import (
    SlurmRecord,
    check_slurm,
    is_ours,
    parse_slurm_records,
    read_slurm_record,
    write_slurm_record,
)
from vice.launch.sweep.state import RunState

OURS = SlurmRecord("1_0", "table3_decomposition_smoke.s1.a1b2c3", "vice", "2026-12-06T04:00:00")


def answering(*found: SlurmRecord) -> object:
    """A SLURM that knows ``found``; records which ids it was asked."""

    def query(ids: Sequence[str]) -> dict[str, SlurmRecord]:
        query.asked = list(ids)  # type: ignore[attr-defined]
        return {r.job_id: r for r in found if r.job_id in ids}

    return query


def test_squeue_and_sacct_lines_are_parsed_into_records() -> None:
    output = (
        "1_0|PENDING|table3_decomposition_smoke.s1.a1b2c3|vice|2026-12-06T04:00:00\n"
        "7|CANCELLED by 1000|other|root|2026-12-06T05:00:00\n"
        "garbage\n"
    )
    assert parse_slurm_records(output) == {
        "1_0": SlurmRecord("1_0", OURS.name, "vice", "2026-12-06T04:00:00", "PENDING"),
        "7": SlurmRecord("7", "other", "root", "2026-12-06T05:00:00", "CANCELLED"),
    }


def test_a_job_is_ours_only_when_name_user_and_submit_time_match() -> None:
    assert is_ours(OURS, OURS)
    assert is_ours(OURS, SlurmRecord("1_0", OURS.name, "vice", "2026-12-06T04:30:00"))  # requeued later
    assert not is_ours(OURS, SlurmRecord("1_0", "sleep", "vice", "2026-12-06T05:00:00"))  # a recycled id
    assert not is_ours(OURS, SlurmRecord("1_0", OURS.name, "root", OURS.submit_time))
    assert not is_ours(OURS, SlurmRecord("1_0", OURS.name, "vice", "2026-12-06T03:59:59"))
    assert not is_ours(OURS, None)


def test_the_record_round_trips_through_the_run_dir(tmp_path: Path) -> None:
    assert read_slurm_record(tmp_path) is None
    write_slurm_record(tmp_path, replace(OURS, state="PENDING"))
    assert read_slurm_record(tmp_path) == OURS


def test_a_recycled_job_id_does_not_keep_a_dead_run_alive() -> None:
    running = RunState("RUNNING", "r1", {"slurm_array_id": "1_0", "slurm_job_id": "1"})
    stranger = SlurmRecord("1_0", "sleep", "vice", "2026-12-06T05:00:00", "RUNNING")
    checked = check_slurm({"k": running}, records={"k": OURS}, query_records=answering(stranger))  # type: ignore[arg-type]
    assert plan_state(checked["k"]) == DEAD
    assert plan_label(checked["k"]) == "dead (SLURM 1_0: unknown to SLURM)"


def test_a_pending_job_without_an_mlflow_run_is_running_and_not_submitted_again(tmp_path: Path) -> None:
    pending = replace(OURS, state="PENDING")
    checked = check_slurm({}, records={"k": OURS}, query_records=answering(pending))  # type: ignore[arg-type]
    assert plan_state(checked["k"]) == RUNNING
    assert plan_label(checked["k"]) == "running (SLURM 1_0: PENDING)"
    job = Job(0, (), Config(), "k", tmp_path / "k")
    assert jobs_to_submit([job], checked, resubmit_running=True) == ([], [job])


def test_a_requeued_job_whose_run_was_closed_killed_is_left_to_run() -> None:
    killed = RunState("KILLED", "r1", {"slurm_array_id": "1_0"})
    requeued = SlurmRecord("1_0", OURS.name, "vice", "2026-12-06T04:30:00", "PENDING")
    checked = check_slurm({"k": killed}, records={"k": OURS}, query_records=answering(requeued))  # type: ignore[arg-type]
    assert (checked["k"].status, checked["k"].run_id, plan_state(checked["k"])) == (
        "SCHEDULED",
        "r1",
        RUNNING,
    )


def test_a_finished_run_is_not_asked_and_an_ended_job_leaves_a_killed_run_failed() -> None:
    query = answering(replace(OURS, state="COMPLETED"))
    finished = RunState("FINISHED", "r1", {})
    killed = RunState("KILLED", "r2", {})
    checked = check_slurm({"f": finished, "k": killed}, records={"f": OURS, "k": OURS}, query_records=query)  # type: ignore[arg-type]
    assert query.asked == ["1_0"]  # type: ignore[attr-defined]
    assert checked == {"f": finished, "k": killed}


def test_submissions_are_recorded_by_array_task_in_each_jobs_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omegaconf import OmegaConf

    jobs = [Job(i, (), Config(), f"k{i}", tmp_path / f"k{i}") for i in range(2)]
    shown = {f"5_{i}": SlurmRecord(f"5_{i}", "n", "vice", "2026-12-06T04:00:00", "PENDING") for i in (1, 0)}
    monkeypatch.setattr(launch, "submitted_jobs", lambda name: shown if name == "n" else {})
    slurm = OmegaConf.create(
        {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "name": "n"}
    )
    assert launch.record_submissions(slurm, jobs, threading.Event()) == 2
    assert [read_slurm_record(j.run_dir).job_id for j in jobs] == ["5_0", "5_1"]  # type: ignore[union-attr]
    local = OmegaConf.create(
        {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "name": "n"}
    )
    assert launch.record_submissions(local, jobs, threading.Event()) == 0
