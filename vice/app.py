"""Deprecated: moved to :mod:`vice.launch.app` and :mod:`vice.launch.cli`; this re-export stays for one release.

Nothing in the repository imports it; ``vice.train.main`` still calls :func:`run_app` until it is removed.
"""

from __future__ import annotations

from vice.launch.app import (
    EXPERIMENTS_DIR,
    PROGRAMS,
    SWEEP_SYNTAX,
    SWEEPS_DIR,
    USAGE_ERROR,
    check_experiment_overrides,
    config_errors_refused,
    hydra_entry_point,
    list_experiments,
    refuse,
)
from vice.launch.cli import train_summary

__all__ = [
    "EXPERIMENTS_DIR",
    "PROGRAMS",
    "SWEEPS_DIR",
    "SWEEP_SYNTAX",
    "USAGE_ERROR",
    "check_experiment_overrides",
    "config_errors_refused",
    "hydra_entry_point",
    "list_experiments",
    "refuse",
    "run_app",
    "train_summary",
]


def run_app(task: str) -> None:
    """Run the Hydra app ``task`` ("train" | "job"): :func:`vice.launch.cli.train_main` or :func:`vice.launch.job.job_main`."""
    from vice.launch.cli import train_main
    from vice.launch.job import job_main

    mains = {"train": train_main, "job": job_main}
    if task not in mains:
        raise ValueError(f"unknown task {task!r}")
    mains[task]()
