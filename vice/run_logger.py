"""What the trainer and the evaluation log through: the :class:`RunLogger` protocol and a null logger.

The library logs only through this protocol; the MLflow implementation lives in the orchestration
(:class:`vice.launch.tracking.write.MLflowLogger`), so the method never imports the tracking.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

#: Run statuses a job can end with.
END_STATUSES = ("FINISHED", "FAILED", "KILLED")


class RunLogger(Protocol):
    """What a job logs through. Only rank 0 holds a real logger; other ranks get :class:`NullLogger`."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params (flat, dotted keys; values are stored as strings)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record metric values at a training step."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set (or overwrite) run tags."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts, under ``artifact_path`` if given."""

    def close(self, status: str = "FINISHED") -> None:
        """End the run with a status from :data:`END_STATUSES`."""


def check_status(status: str) -> None:
    """Refuse a run status that is not one of :data:`END_STATUSES`.

    Raises:
        ValueError: naming the allowed statuses.
    """
    if status not in END_STATUSES:
        raise ValueError(f"run status {status!r} is not one of {END_STATUSES}")


class NullLogger:
    """A logger that records nothing (tracking disabled, or a rank other than 0)."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record nothing."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record nothing."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Record nothing."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Record nothing."""

    def close(self, status: str = "FINISHED") -> None:
        """Check the status like a real logger would, record nothing."""
        check_status(status)
