"""Checks against the real local SLURM cluster (``bash slurm/local-cluster.sh up``).

Every test submits through submitit, the same path hydra-submitit-launcher takes, into a fresh folder
(job ids restart at 1 when the cluster is restarted, so an old folder would return stale results).
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slurm

#: Seconds a cancelled job may take to surface (submitit waits 15 s for a result file after sacct says done).
CANCEL_SURFACE_TIMEOUT_S = 120
#: A healthy local controller answers at once; a stopped one makes `sinfo` retry for ~9 s.
SINFO_TIMEOUT_S = 3
SINFO = ["sinfo", "-h", "-p", "debug", "-o", "%t"]
START = "`bash slurm/local-cluster.sh up`"


def _cluster_down_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return f"no `sinfo` on PATH: install and start the cluster with {START}"
    try:
        probe = subprocess.run(SINFO, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"`sinfo` got no answer in {SINFO_TIMEOUT_S} s: start the cluster with {START}"
    states = probe.stdout.split()
    if probe.returncode != 0 or not any(s in ("idle", "mix", "alloc") for s in states):
        detail = (probe.stderr.strip() or "node states " + ",".join(states)).splitlines()[0]
        return f"local SLURM cluster is down ({detail}): start it with {START}"
    return None


_DOWN = _cluster_down_reason()
if _DOWN is not None and os.environ.get("VICE_REQUIRE_SLURM") == "1":
    pytest.fail(f"VICE_REQUIRE_SLURM=1 (as in .ci/run) but {_DOWN}", pytrace=False)
if _DOWN is not None:
    pytestmark = [pytest.mark.slurm, pytest.mark.skip(reason=_DOWN)]


def _executor(folder: Path) -> Any:
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1)
    return executor


def _sacct_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _wait_for(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(shutil.which("ss") is None, reason="no `ss` to list listening sockets")
@pytest.mark.skipif(
    socket.gethostbyname(socket.gethostname()) != "127.0.0.1",
    reason="the host name does not resolve to 127.0.0.1, so the cluster listens on every interface",
)
def test_the_daemons_listen_on_127_0_0_1_only() -> None:
    ports = "( sport = :6817 or sport = :6818 or sport = :6819 )"  # slurmctld, slurmd, slurmdbd
    listening = subprocess.run(["ss", "-ltnH", ports], capture_output=True, text=True, check=True).stdout
    assert sorted(line.split()[3] for line in listening.splitlines()) == [
        "127.0.0.1:6817",
        "127.0.0.1:6818",
        "127.0.0.1:6819",
    ]


def test_submitit_job_returns_its_result_and_is_accounted(tmp_path: Path) -> None:
    job = _executor(tmp_path).submit(math.factorial, 10)
    assert job.result() == 3_628_800
    assert _wait_for(lambda: _sacct_state(job.job_id) == "COMPLETED", timeout_s=30), _sacct_state(job.job_id)


def test_array_of_four_jobs_returns_every_result_in_order(tmp_path: Path) -> None:
    jobs = _executor(tmp_path).map_array(math.factorial, [3, 4, 5, 6])
    assert [j.result() for j in jobs] == [6, 24, 120, 720]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one SLURM array


def _ddp_rank_sum() -> tuple[int, int, float]:
    import torch

    from vice.dist import all_reduce_, cleanup, init_distributed

    env = init_distributed("cpu")
    total = all_reduce_(torch.tensor([env.rank + 1.0]))
    cleanup()
    return env.rank, env.world_size, float(total.item())


def test_two_task_job_joins_one_gloo_group(tmp_path: Path) -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job cannot import this test module
    executor = _executor(tmp_path)
    executor.update_parameters(nodes=1, tasks_per_node=2, mem_gb=2)
    job = executor.submit(_ddp_rank_sum)
    assert job.results() == [(0, 2, 3.0), (1, 2, 3.0)]  # ranks 1 + 2 summed on both


@pytest.mark.slow
def test_scancelled_job_surfaces_as_failed_not_a_hang(tmp_path: Path) -> None:
    import submitit

    job = _executor(tmp_path).submit(time.sleep, 600)
    assert _wait_for(lambda: _sacct_state(job.job_id) == "RUNNING", timeout_s=60), _sacct_state(job.job_id)
    subprocess.run(["scancel", job.job_id], check=True)

    outcome: dict[str, BaseException | object] = {}

    def wait_result() -> None:
        try:
            outcome["result"] = job.result()
        except BaseException as exc:  # the outcome is inspected below
            outcome["error"] = exc

    waiter = threading.Thread(target=wait_result, daemon=True)
    waiter.start()
    waiter.join(CANCEL_SURFACE_TIMEOUT_S)
    assert not waiter.is_alive(), f"job.result() still blocks {CANCEL_SURFACE_TIMEOUT_S} s after scancel"
    assert isinstance(outcome.get("error"), submitit.core.utils.UncompletedJobError), outcome
    assert _sacct_state(job.job_id).startswith("CANCELLED")
