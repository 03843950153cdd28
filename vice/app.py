"""Hydra entry points over ``sweeps/``: the schema is registered, then YAML composes onto it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vice.train import TrainResult

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"


def train_summary(result: TrainResult) -> str:
    """What ``vice-train`` prints at the end; a re-run of a finished run dir trains nothing."""
    where = f"checkpoints in {result.run_dir / 'checkpoints'}"
    if not result.losses:
        return f"already finished at step {result.steps}: nothing to train\n{where}"
    first, last = result.losses[0], result.losses[-1]
    return f"trained steps {result.resumed_from + 1}..{result.steps}; loss {first:.3f} -> {last:.3f}\n{where}"


def run_app(task: str) -> None:
    """Run the Hydra app ``task`` ("train" | "job") with ``sweeps/config.yaml`` as primary config."""
    import hydra
    from omegaconf import DictConfig

    from vice.config import register_schema

    register_schema()

    @hydra.main(version_base="1.3", config_path=str(SWEEPS_DIR), config_name="config")
    def _main(cfg: DictConfig) -> None:
        from vice.config import redacted, to_config, validate
        from vice.redact import redact_hydra_output

        redact_hydra_output()
        config = to_config(cfg)
        validate(config)
        if task == "train":
            from vice.train import train

            print(train_summary(train(redacted(config))))
        elif task == "job":
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            from vice.job import run_job

            if HydraConfig.get().mode == RunMode.MULTIRUN and config.tracking.sweep_id is None:
                raise ValueError(
                    "every job of a plain multirun would share run_dir: run sweeps with "
                    "`vice-sweep EXPERIMENT [overrides]`, which gives each job its own"
                )
            metrics = run_job(config)
            print("\n".join(f"{key} = {value:.4f}" for key, value in sorted(metrics.items())))
            print(f"run dir: {config.run_dir}")
        else:
            raise ValueError(f"unknown task {task!r}")

    _main()
