"""Hydra override text: which overrides are Hydra's, which tell jobs apart, and how a path is quoted."""

from __future__ import annotations

from collections.abc import Iterable

#: Override keys left out of a job's display name: paths and the tracking settings vice-sweep adds.
HIDDEN_OVERRIDE_KEYS = (
    "experiment",
    "run_dir",
    "data.root",
    "eval.root",
    "model.pretrained",
    "regions.cache_dir",
)
HIDDEN_OVERRIDE_PREFIXES = ("tracking.", "hydra.", "hydra/")
#: The override the sweep replaces by the resolved URI, without its credentials.
TRACKING_URI_KEY = "tracking.tracking_uri"


class UnquotablePathError(ValueError):
    """A path holds a character that Hydra override text cannot carry."""


def override_key(override: str) -> str:
    """The key of an override, without Hydra's ``+``/``~`` prefixes (``+a.b=1`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


def display_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides that tell jobs apart, without paths and the settings vice-sweep adds."""
    shown = []
    for override in overrides:
        key = override_key(override)
        if key in HIDDEN_OVERRIDE_KEYS or key.startswith(HIDDEN_OVERRIDE_PREFIXES):
            continue
        shown.append(override)
    return shown


def split_overrides(overrides: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split command-line overrides into Hydra's (``hydra.*``, ``hydra/...``) and the task's."""
    hydra_overrides: list[str] = []
    task_overrides: list[str] = []
    for override in overrides:
        key = override_key(override)
        (
            hydra_overrides if key == "hydra" or key.startswith(("hydra.", "hydra/")) else task_overrides
        ).append(override)
    return hydra_overrides, task_overrides


def drop_tracking_uri(overrides: Iterable[str]) -> list[str]:
    """``overrides`` without the user's ``tracking.tracking_uri`` (which may hold credentials)."""
    return [o for o in overrides if override_key(o) != TRACKING_URI_KEY]


def quoted(value: str) -> str:
    """``value`` (a path) as a single-quoted override value.

    Raises:
        UnquotablePathError: the path holds a quote or a backslash.
    """
    if "'" in value or "\\" in value:
        raise UnquotablePathError(
            f"path {value!r} holds a quote or a backslash, which Hydra overrides cannot carry: rename it"
        )
    return f"'{value}'"
