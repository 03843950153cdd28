"""Hydra entry points over ``sweeps/``: the schema is registered, then YAML composes onto it."""

from __future__ import annotations

from pathlib import Path

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"


def run_app(task: str) -> None:
    """Run the Hydra app ``task`` ("train" | "job") with ``sweeps/config.yaml`` as primary config."""
    import hydra
    from omegaconf import DictConfig

    from vice.config import register_schema

    register_schema()

    @hydra.main(version_base="1.3", config_path=str(SWEEPS_DIR), config_name="config")
    def _main(cfg: DictConfig) -> None:
        from vice.config import to_config, validate

        config = to_config(cfg)
        validate(config)
        if task == "train":
            from vice.train import train

            result = train(config)
            print(f"trained {result.steps} steps; loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
            print(f"checkpoints in {result.run_dir / 'checkpoints'}")
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
