"""The Hydra entry points ``vice-train`` and ``vice-eval`` (``python -m vice.launch.job`` is in :mod:`.job`).

``vice-sweep`` and ``vice-tune`` take their own arguments (:mod:`vice.launch.sweep.cli`,
:mod:`vice.launch.tune.cli`); ``vice-tables`` is :mod:`analysis.cli`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vice.config import Config, redacted
from vice.launch.app import PROGRAMS, run_app

if TYPE_CHECKING:
    from vice.train import TrainResult

log = logging.getLogger(__name__)


def train_summary(result: TrainResult) -> str:
    """What ``vice-train`` prints at the end; a re-run of a finished run dir trains nothing."""
    where = f"checkpoints in {result.run_dir / 'checkpoints'}"
    if not result.losses:
        return f"already finished at step {result.steps}: nothing to train\n{where}"
    first, last = result.losses[0], result.losses[-1]
    return f"trained steps {result.resumed_from + 1}..{result.steps}; loss {first:.3f} -> {last:.3f}\n{where}"


def _train(config: Config) -> None:
    from vice.train import train

    print(train_summary(train(redacted(config))))


def _evaluate(config: Config) -> None:
    from vice.evaluate.harness import run_eval

    if not config.eval.enabled:
        log.warning("eval.enabled=false: nothing to do")
        return
    run_eval(redacted(config))


def train_main() -> None:
    """``vice-train``: train one run from ``sweeps/config.yaml`` and the command line's overrides."""
    run_app(PROGRAMS["train"], _train)


def eval_main() -> None:
    """``vice-eval``: evaluate a checkpoint (or a random init) from the composed config."""
    run_app(PROGRAMS["eval"], _evaluate)
