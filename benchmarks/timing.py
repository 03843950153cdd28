"""Timers that synchronize CUDA, medians over repeats, peak memory, and the machine's description."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import torch

#: Reset the peak resident set size (VmHWM) of this process (Linux >= 4.0, see proc(5) clear_refs).
_CLEAR_PEAK_RSS = "5"


def synchronize(device: torch.device) -> None:
    """Wait for every queued kernel on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Wall-clock milliseconds per named phase, synchronizing CUDA before each clock read.

    Attributes:
        device: the device whose queue is drained before every clock read.
        samples: phase name -> list of milliseconds, one per timed occurrence.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: dict[str, list[float]] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block; the sample is recorded when the block exits normally."""
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.samples.setdefault(name, []).append((time.perf_counter() - start) * 1e3)


def median_ms(samples: list[float]) -> float:
    """Median of millisecond samples (robust to one slow repeat on a shared machine)."""
    if not samples:
        raise ValueError("no timing samples: run at least one timed repeat")
    return float(statistics.median(samples))


def time_ms(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (CUDA-synchronized)."""
    for _ in range(warmup):
        fn()
    timer = PhaseTimer(device)
    for _ in range(repeats):
        with timer.phase("call"):
            fn()
    return timer.samples["call"]


def _rss_peak_kib() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmHWM:\s+(\d+)\s+kB", status)
    return int(found.group(1)) if found else None


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak: CUDA's allocator statistics, or this process's peak RSS on CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text(_CLEAR_PEAK_RSS)
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> tuple[float | None, str]:
    """Peak memory since :func:`reset_peak_memory` and what was measured.

    Returns:
        ``(MiB, kind)``: ``cuda_max_allocated`` (tensors only) on CUDA, ``process_peak_rss`` (the
        whole process, including the model and Python) on CPU, or ``(None, "unavailable")``.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    kib = _rss_peak_kib()
    return (kib / 1024, "process_peak_rss") if kib is not None else (None, "unavailable")


def device_name(device: torch.device) -> str:
    """The card's name on CUDA, the CPU's model name otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, flags=re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def slug(text: str) -> str:
    """A directory-safe lowercase name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def git_commit() -> str | None:
    """The checkout's HEAD commit, or None outside a git tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: device, threads, versions, load, commit."""
    info: dict[str, Any] = {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_name": device_name(torch.device("cpu")),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info
