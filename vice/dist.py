"""Distributed data parallel setup from torchrun or SLURM (submitit) environments.

Every rank of a DDP job runs the whole entry point, so only rank 0 may log, checkpoint or write
outputs: guard those with :func:`is_main` or ``env.rank == 0``.

Rank layout invariant: ranks are numbered node-major, ``rank = node_rank * local_world_size + local_rank``
(torchrun and SLURM's default block distribution both do this); :func:`node_process_group` relies on it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch.distributed import ProcessGroup

#: Backend per device type: NCCL between GPUs, gloo between CPU processes.
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}
#: How long a rank waits in a collective. Rank 0 alone runs the intermediate evaluations
#: (``train.eval_every``) while the others wait in the next step's all-reduce; NCCL's default 10 minutes
#: would abort the job during a full COCO evaluation.
COLLECTIVE_TIMEOUT_MIN = 120
#: Reductions :func:`all_reduce_` offers.
REDUCE_OPS = ("sum", "max")
#: Range of the rendezvous port derived from a SLURM job id (same range as submitit's).
MIN_MASTER_PORT, MAX_MASTER_PORT = 20000, 60000


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a (possibly multi-node) job.

    Attributes:
        rank: global rank in [0, world_size).
        world_size: number of processes in the job.
        local_rank: rank among the processes on this node.
        local_world_size: processes per node (the same on every node).
        master_addr: host of rank 0, for the TCP rendezvous.
        master_port: port of the TCP rendezvous on ``master_addr``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def node_rank(self) -> int:
        """Index of this process's node."""
        return self.rank // self.local_world_size

    @property
    def num_nodes(self) -> int:
        """Number of nodes in the job."""
        return self.world_size // self.local_world_size


def _int_var(environ: Mapping[str, str], key: str) -> int:
    value = environ[key]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r} is not an integer") from None


def _check_layout(env: DistEnv, source: str) -> DistEnv:
    if not (0 <= env.rank < env.world_size and 0 <= env.local_rank < env.local_world_size):
        raise ValueError(
            f"{source}: rank {env.rank} of {env.world_size} (local {env.local_rank} of "
            f"{env.local_world_size}) is out of range; check the launcher's task counts"
        )
    if env.world_size % env.local_world_size != 0:
        raise ValueError(
            f"{source}: world size {env.world_size} is not a multiple of {env.local_world_size} processes "
            "per node; give every node the same number of tasks (SLURM: --ntasks-per-node)"
        )
    return env


def _from_torchrun(environ: Mapping[str, str]) -> DistEnv:
    world_size = _int_var(environ, "WORLD_SIZE")
    if world_size > 1:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in environ]
        if missing:
            raise ValueError(f"RANK/WORLD_SIZE are set but {', '.join(missing)} is not: launch with torchrun")
    return DistEnv(
        rank=_int_var(environ, "RANK"),
        world_size=world_size,
        local_rank=_int_var(environ, "LOCAL_RANK") if "LOCAL_RANK" in environ else 0,
        local_world_size=_int_var(environ, "LOCAL_WORLD_SIZE")
        if "LOCAL_WORLD_SIZE" in environ
        else world_size,
        master_addr=environ.get("MASTER_ADDR", DistEnv.master_addr),
        master_port=_int_var(environ, "MASTER_PORT") if "MASTER_PORT" in environ else DistEnv.master_port,
    )


def _from_submitit() -> DistEnv:
    from submitit.helpers import TorchDistributedEnvironment

    tde = TorchDistributedEnvironment()
    return DistEnv(
        rank=tde.rank,
        world_size=tde.world_size,
        local_rank=tde.local_rank,
        local_world_size=tde.local_world_size,
        master_addr=tde.master_addr,
        master_port=tde.master_port,
    )


def _from_slurm(environ: Mapping[str, str]) -> DistEnv:
    from submitit.slurm.slurm import SlurmJobEnvironment

    world_size = _int_var(environ, "SLURM_NTASKS")
    num_nodes = _int_var(environ, "SLURM_JOB_NUM_NODES") if "SLURM_JOB_NUM_NODES" in environ else 1
    job_id = environ.get("SLURM_JOB_ID", "0")
    port = (
        _int_var(environ, "MASTER_PORT")
        if "MASTER_PORT" in environ
        else random.Random(job_id).randint(MIN_MASTER_PORT, MAX_MASTER_PORT)
    )
    return DistEnv(
        rank=_int_var(environ, "SLURM_PROCID"),
        world_size=world_size,
        local_rank=_int_var(environ, "SLURM_LOCALID") if "SLURM_LOCALID" in environ else 0,
        local_world_size=max(world_size // num_nodes, 1),
        master_addr=SlurmJobEnvironment().hostnames[0],
        master_port=port,
    )


def read_dist_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read this process's place in the job from the environment.

    Precedence: torchrun's ``RANK``/``WORLD_SIZE`` (also what ``TorchDistributedEnvironment.export`` sets),
    then a submitit job (``SUBMITIT_EXECUTOR``, via ``submitit.helpers.TorchDistributedEnvironment``),
    then a bare ``srun`` task (``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``/``SLURM_JOB_NODELIST``).
    Anything else is a single process.

    Args:
        environ: the variables to read; None reads ``os.environ`` (submitit always reads ``os.environ``).

    Returns:
        The rank layout; ``DistEnv()`` (rank 0 of 1) outside any launcher.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return _check_layout(_from_torchrun(env), "torchrun variables RANK/WORLD_SIZE/LOCAL_RANK")
    if env.get("SUBMITIT_EXECUTOR"):
        return _check_layout(_from_submitit(), f"submitit {env['SUBMITIT_EXECUTOR']} job")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return _check_layout(_from_slurm(env), "SLURM variables SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID")
    return DistEnv()


def init_distributed(device_type: str) -> DistEnv:
    """Join the job's process group; a no-op for a single process or when already initialized.

    On CUDA it also selects this rank's GPU (``local_rank`` modulo the visible GPUs, so both one GPU per
    task and all node GPUs per task work): use ``torch.cuda.current_device()`` for DDP's ``device_ids``.

    Args:
        device_type: "cuda" (NCCL) or "cpu" (gloo).

    Returns:
        The rank layout read by :func:`read_dist_env`.
    """
    import torch
    import torch.distributed as dist

    if device_type not in BACKENDS:
        raise ValueError(
            f"device_type={device_type!r} has no distributed backend: use one of {sorted(BACKENDS)}"
        )
    env = read_dist_env()
    if env.world_size == 1 or dist.is_initialized():
        return env
    if device_type == "cuda":
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend=BACKENDS[device_type],
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(minutes=COLLECTIVE_TIMEOUT_MIN),
    )
    return env


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on global rank 0 (the only rank that logs, checkpoints and writes outputs)."""
    if _initialized():
        import torch.distributed as dist

        return dist.get_rank() == 0
    return read_dist_env().rank == 0


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` over all ranks in place (``sum`` or ``max``); unchanged when not distributed.

    Args:
        tensor: any shape, on the backend's device (CPU for gloo, this rank's GPU for NCCL).
        op: ``sum`` or ``max``.

    Returns:
        ``tensor`` itself, now holding the reduction over ranks.
    """
    if op not in REDUCE_OPS:
        raise ValueError(f"op={op!r} is not a reduction: use one of {REDUCE_OPS}")
    if _initialized():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error naming the key."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible: use train.device=auto or cpu")
    return torch.device(name)


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (None: no autocast; AMP is CUDA-only)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if device.type == "cuda" else None


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank (a MAX all-reduce); ``flag`` itself when not distributed.

    Every rank must call it at the same point: decisions that end or skip a step (a non-finite loss,
    a preemption signal) are then taken by all ranks together, so none waits in a collective alone.

    Args:
        flag: this rank's value.
        device: the backend's device (CPU for gloo, this rank's GPU for NCCL).
    """
    if not _initialized():
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    """Wait for every rank; a no-op when not distributed."""
    if _initialized():
        import torch.distributed as dist

        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of the job); a no-op when not distributed."""
    if _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def node_process_group(env: DistEnv) -> ProcessGroup | None:
    """Process group of the ranks on this node, for SyncBatchNorm statistics shared within a node.

    Every rank must call this (``new_group`` is collective), after :func:`init_distributed`.

    Args:
        env: this process's layout; ranks must be node-major (see the module docstring).

    Returns:
        This node's group; None (the default, whole-world group) when the job has a single node or
        is not distributed.
    """
    if env.num_nodes == 1 or not _initialized():
        return None
    if env.rank != env.node_rank * env.local_world_size + env.local_rank:
        raise ValueError(
            f"rank {env.rank} is local rank {env.local_rank} of {env.local_world_size} per node, so ranks "
            "are not node-major; use SLURM's default block distribution (--distribution=block)"
        )
    import torch.distributed as dist

    span = env.local_world_size
    groups = [dist.new_group(list(range(n * span, (n + 1) * span))) for n in range(env.num_nodes)]
    group = groups[env.node_rank]
    assert isinstance(group, dist.ProcessGroup)  # a member of its own node's group
    return group
