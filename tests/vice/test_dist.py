from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest
import torch

from vice import dist as vdist
from vice.dist import DistEnv, read_dist_env

LAUNCHER_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SUBMITIT_EXECUTOR",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_JOB_NUM_NODES",
    "SLURM_JOB_NODELIST",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
)

# Rank 6 of 8 on the second of two 4-task nodes gpu03, gpu04 (SLURM job 42).
SLURM_TASK = {
    "SLURM_PROCID": "6",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "2",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_JOB_NODELIST": "gpu[03-04]",
    "SLURM_JOB_ID": "42",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in LAUNCHER_VARS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_no_launcher_is_rank_0_of_1(clean_env: pytest.MonkeyPatch) -> None:
    assert read_dist_env() == DistEnv(0, 1, 0, 1, "127.0.0.1", 29500)


def test_torchrun_variables_give_the_layout() -> None:
    env = read_dist_env(
        {
            "RANK": "5",
            "WORLD_SIZE": "8",
            "LOCAL_RANK": "1",
            "LOCAL_WORLD_SIZE": "4",
            "MASTER_ADDR": "node0",
            "MASTER_PORT": "1234",
        }
    )
    assert env == DistEnv(5, 8, 1, 4, "node0", 1234)
    assert (env.node_rank, env.num_nodes) == (1, 2)


def test_torchrun_variables_win_over_slurm_variables() -> None:
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "a", "MASTER_PORT": "7"}
    assert read_dist_env({**SLURM_TASK, **torchrun}) == DistEnv(1, 2, 1, 2, "a", 7)


def test_torchrun_without_master_address_is_rejected() -> None:
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT is not"):
        read_dist_env({"RANK": "0", "WORLD_SIZE": "2"})


def test_non_integer_variable_names_the_key() -> None:
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        read_dist_env({"RANK": "0", "WORLD_SIZE": "two"})


def test_uneven_tasks_per_node_are_rejected() -> None:
    with pytest.raises(ValueError, match="world size 6 is not a multiple of 4"):
        read_dist_env(
            {"RANK": "0", "WORLD_SIZE": "6", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "a", "MASTER_PORT": "1"}
        )


def test_rank_outside_the_world_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"rank 2 of 2 .* out of range"):
        read_dist_env({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"})


def test_bare_srun_task_reads_slurm_variables(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in SLURM_TASK.items():
        clean_env.setenv(key, value)
    port = random.Random("42").randint(20000, 60000)
    env = read_dist_env()
    assert env == DistEnv(6, 8, 2, 4, "gpu03", port)
    assert (env.node_rank, env.num_nodes) == (1, 2)


def test_submitit_job_agrees_with_bare_slurm_parsing(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in SLURM_TASK.items():
        clean_env.setenv(key, value)
    bare = read_dist_env()
    clean_env.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert read_dist_env() == bare  # same rendezvous port on every rank, whichever path parsed it


def test_single_process_helpers_are_no_ops(clean_env: pytest.MonkeyPatch) -> None:
    env = vdist.init_distributed("cpu")
    assert env == DistEnv()
    assert not torch.distributed.is_initialized()
    t = torch.tensor([1.0, 2.0])
    assert vdist.all_reduce_(t) is t
    assert t.tolist() == [1.0, 2.0]
    assert vdist.is_main()
    assert vdist.node_process_group(DistEnv(0, 2, 0, 1)) is None
    vdist.barrier()
    vdist.cleanup()


def test_unknown_device_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="device_type='mps'"):
        vdist.init_distributed("mps")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    for key in LAUNCHER_VARS:
        os.environ.pop(key, None)
    # Two "nodes" of one process each, so each node group holds one rank.
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1"
    )
    os.environ["MASTER_PORT"] = str(port)
    env = vdist.init_distributed("cpu")
    total = vdist.all_reduce_(torch.tensor([rank + 1.0, 10.0 * (rank + 1)]))
    node_sum = torch.tensor([rank + 1.0])
    torch.distributed.all_reduce(node_sum, group=vdist.node_process_group(env))
    vdist.barrier()
    torch.save(
        {"total": total, "node_sum": node_sum, "main": vdist.is_main(), "node_rank": env.node_rank},
        Path(out_dir) / f"rank{rank}.pt",
    )
    vdist.cleanup()


def test_two_gloo_processes_sum_over_world_and_per_node(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for rank, result in enumerate(results):
        assert result["total"].tolist() == [3.0, 30.0]  # 1 + 2, 10 + 20
        assert result["node_sum"].tolist() == [rank + 1.0]  # alone in its node group
        assert result["node_rank"] == rank
    assert [r["main"] for r in results] == [True, False]
