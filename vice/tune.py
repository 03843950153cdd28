"""Deprecated: ``vice-tune`` moved to :mod:`vice.launch.tune`; this re-export stays for one release."""

from __future__ import annotations

import sys

from vice.launch.tune.cli import main, prepare, run_study
from vice.launch.tune.driver import StudySession, drive
from vice.launch.tune.space import ParamConfig, suggest, trial_overrides
from vice.launch.tune.study import StudyConfig, StudyError, load_study

__all__ = [
    "ParamConfig",
    "StudyConfig",
    "StudyError",
    "StudySession",
    "drive",
    "load_study",
    "main",
    "prepare",
    "run_study",
    "suggest",
    "trial_overrides",
]

if __name__ == "__main__":
    sys.exit(main())
