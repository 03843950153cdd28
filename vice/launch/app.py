"""The Hydra app over ``sweeps/``: the schema is registered, then YAML composes onto it.

One ``@hydra.main`` (:func:`run_app`) serves every Hydra entry point (:mod:`vice.launch.cli`). The module
keeps the name ``app``: Hydra names a job after the file of its task function, so the job log stays
``app.log`` as before.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from vice.config import Config, ConfigError

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"
EXPERIMENTS_DIR = SWEEPS_DIR / "experiment"
#: How each task's entry point is called, for its error lines.
PROGRAMS = {"train": "vice-train", "job": "python -m vice.launch.job", "eval": "vice-eval"}
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


def run_app(program: str, task: Callable[[Config], None]) -> None:
    """Run ``task`` on the config Hydra composes from ``sweeps/config.yaml`` and the command line.

    The config is typed and validated first; a bad experiment or value is refused as one line with exit
    status 2 (:func:`config_errors_refused`). ``task`` gets the config as typed, credentials included:
    it redacts what it saves or logs (:func:`vice.config.redacted`).

    Args:
        program: the entry point's name in error lines (:data:`PROGRAMS`).
        task: what the entry point does with the validated config.
    """
    import hydra
    from omegaconf import DictConfig

    from vice.config import register_schema, to_config, validate
    from vice.redact import redact_hydra_output

    register_schema()

    @hydra.main(version_base="1.3", config_path=str(SWEEPS_DIR), config_name="config")
    def _main(raw: DictConfig) -> None:
        redact_hydra_output()
        with config_errors_refused(program):
            config = to_config(raw)
            validate(config)
        task(config)

    hydra_entry_point(program, _main)
