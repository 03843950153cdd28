"""Deprecated: ``vice-sweep`` moved to :mod:`vice.launch.sweep`; this re-export stays for one release."""

from __future__ import annotations

import sys

from vice.launch.app import list_experiments
from vice.launch.sweep.cli import Sweep, main, prepare, run_sweep
from vice.launch.sweep.compose import Composer, Job, compose_jobs, experiment_name
from vice.launch.sweep.errors import SweepError
from vice.launch.sweep.plan import plan_state, plan_table
from vice.launch.sweep.slurm import slurm_available
from vice.launch.sweep.state import RunState, fetch_states

__all__ = [
    "Composer",
    "Job",
    "RunState",
    "Sweep",
    "SweepError",
    "compose_jobs",
    "experiment_name",
    "fetch_states",
    "list_experiments",
    "main",
    "plan_state",
    "plan_table",
    "prepare",
    "run_sweep",
    "slurm_available",
]

if __name__ == "__main__":
    sys.exit(main())
