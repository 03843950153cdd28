"""Hydra entry points over ``sweeps/``: the schema is registered, then YAML composes onto it."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from vice.config import ConfigError

if TYPE_CHECKING:
    from vice.train import TrainResult

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
EXPERIMENTS_DIR = SWEEPS_DIR / "experiment"
#: How each task's entry point is called, for its error lines.
PROGRAMS = {"train": "vice-train", "job": "python -m vice.job", "eval": "vice-eval"}
#: Characters of Hydra's sweep functions and globs; such an experiment value is left to Hydra.
SWEEP_SYNTAX = "()[]{}*"
#: Exit status of a refused command line (argparse's, and vice-sweep's).
USAGE_ERROR = 2


def list_experiments() -> list[str]:
    """Every experiment file in ``sweeps/experiment/``, paper and smoke."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def check_experiment_overrides(overrides: Sequence[str]) -> None:
    """Refuse an ``experiment=NAME`` override naming no file of ``sweeps/experiment/``.

    Hydra treats the optional experiment group as absent when the name is misspelt; this runs before
    Hydra, so nothing is composed, trained or created. Multirun lists (``experiment=a,b``) are checked
    name by name; sweep functions (``choice(a,b)``) and globs are left to Hydra.

    Args:
        overrides: the command line after the program name.

    Raises:
        ConfigError: naming the unknown experiment and listing the valid ones.
    """
    known = list_experiments()
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key.lstrip("+~") != "experiment" or any(c in value for c in SWEEP_SYNTAX):
            continue  # choice(...), range(...), glob(...): Hydra expands and checks those
        for name in value.split(","):
            if name.strip() not in known:
                raise ConfigError(
                    f"experiment={name.strip()!r} is not in {EXPERIMENTS_DIR}: one of {', '.join(known)}"
                )


def refuse(program: str, error: Exception) -> NoReturn:
    """Print ``program: error`` as one line on stderr and exit with :data:`USAGE_ERROR`."""
    print(f"{program}: {' '.join(str(error).split())}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _remove_hydra_only_dir() -> None:
    """Remove the job dir Hydra just created when it holds nothing but Hydra's own files."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir)
    own = {str(hydra_cfg.output_subdir), f"{hydra_cfg.job.name}.log"}
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= own:
        shutil.rmtree(folder)


@contextmanager
def config_errors_refused(program: str) -> Iterator[None]:
    """Inside a Hydra task: a :class:`ConfigError` becomes one line and exit status 2, no traceback.

    The job dir Hydra created for the refused run is removed when it holds only Hydra's own files.
    """
    try:
        yield
    except ConfigError as error:
        _remove_hydra_only_dir()
        refuse(program, error)


def hydra_entry_point(program: str, run: Callable[[], None]) -> None:
    """Check the command line's experiment, then call ``run`` (a ``@hydra.main`` function)."""
    try:
        check_experiment_overrides(sys.argv[1:])
    except ConfigError as error:
        refuse(program, error)
    run()


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
        with config_errors_refused(PROGRAMS[task]):
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

    hydra_entry_point(PROGRAMS[task], _main)
