"""The Hydra entry points: ``vice-train``, ``vice-eval`` and ``python -m vice.launch.job``.

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
    from vice.evaluate.app import run_eval

    if not config.eval.enabled:
        log.warning("eval.enabled=false: nothing to do")
        return
    run_eval(redacted(config))


def _job(config: Config) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vice.launch.job import run_job

    if HydraConfig.get().mode == RunMode.MULTIRUN and config.tracking.sweep_id is None:
        raise ValueError(
            "every job of a plain multirun would share run_dir: run sweeps with "
            "`vice-sweep EXPERIMENT [overrides]`, which gives each job its own"
        )
    metrics = run_job(config)
    print("\n".join(f"{key} = {value:.4f}" for key, value in sorted(metrics.items())))
    print(f"run dir: {config.run_dir}")


def train_main() -> None:
    """``vice-train``: train one run from ``sweeps/config.yaml`` and the command line's overrides."""
    run_app(PROGRAMS["train"], _train)


def eval_main() -> None:
    """``vice-eval``: evaluate a checkpoint (or a random init) from the composed config."""
    run_app(PROGRAMS["eval"], _evaluate)


def job_main() -> None:
    """``python -m vice.launch.job experiment=demo``: one sweep job, recorded in MLflow."""
    run_app(PROGRAMS["job"], _job)
