"""Atomic checkpoints in a job's run dir, and resume from the latest one."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from vice.io import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint taken after ``step`` optimizer steps lives."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` atomically (:func:`vice.io.atomic_write`: temp file, fsync, ``os.replace``).

    A crash at any moment leaves either the previous checkpoints or the complete new one, never a
    half-written file. Only the newest ``keep`` checkpoints are kept.

    Args:
        run_dir: the job's deterministic directory.
        step: optimizer steps taken so far (names the file).
        state: anything ``torch.save`` takes.
        keep: number of newest checkpoints to keep.

    Returns:
        The path of the new checkpoint.
    """
    target = atomic_write(checkpoint_path(run_dir, step), lambda handle: torch.save(state, handle))
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run dir, oldest first (temp files are ignored)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one checkpoint, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise RuntimeError(
            f"checkpoint {path} is unreadable ({err}); delete it to resume from an older one"
        ) from err
    if not isinstance(state, dict) or "step" not in state:
        raise RuntimeError(f"checkpoint {path} is not a vice training checkpoint (no 'step')")
    return state


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest readable checkpoint of a run dir, or None when there is none."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path, map_location)
        except RuntimeError as err:
            log.warning("skipping %s", err)
    return None


def load_for_eval(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """The trained embedder of a training checkpoint, in eval mode, and the run's :class:`Config`.

    Args:
        path: a ``step_*.pt`` file, or a run dir (its newest checkpoint is used).
        map_location: where the tensors are loaded.
    """
    from vice.config import to_config
    from vice.model import build_model

    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(
                f"no checkpoint in {path / CHECKPOINT_DIR}: train first, or pass a .pt file"
            )
        path = found[-1]
    state = load_checkpoint(path, map_location)
    cfg = to_config(state["config"])
    model = build_model(cfg.model)
    prefix = "embedder."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    model.load_state_dict(weights)
    return model.eval(), cfg
