"""How a config value is written as text: as an MLflow param or tag, and as a Hydra override.

:func:`param_text` is what ``analysis.runs.cast_param`` reads back; :func:`override_value` is what
``vice-tune`` writes into trials' overrides and what ``vice-tables`` names table cells with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vice.redact import redact_uri

#: MLflow's limits (mlflow.utils.validation) on value lengths.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
#: Appended to a value cut to MLflow's length limit (the cut is deterministic, so re-logging matches).
TRUNCATION_MARK = "...<truncated>"


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in :data:`TRUNCATION_MARK` when cut."""
    return text if len(text) <= limit else text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def tag_text(value: Any) -> str:
    """A tag value: credentials redacted, cut to MLflow's 8000-character limit."""
    return truncate(redact_uri(str(value)), MAX_TAG_VALUE_LENGTH)


def param_text(value: Any) -> str:
    """Render one config value as an MLflow param string that ``analysis.runs.cast_param`` reads back.

    ``None`` -> ``"None"``, booleans -> ``"true"``/``"false"``, sequences -> ``"[0.5, 1.5]"``, others
    ``str``; credentials in a URI redacted (:func:`vice.redact.redact_uri`); cut to MLflow's
    6000-character limit with :data:`TRUNCATION_MARK`.
    """
    if value is None:
        text = "None"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = str(list(value))
    else:
        text = str(value)
    return truncate(redact_uri(text), MAX_PARAM_VALUE_LENGTH)


def override_value(value: Any) -> str:
    """Write a value as a Hydra override would (``null``, ``true``, ``[0.5,1.5]``, ``0.25``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return str(value)


def _as_container(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a resolved config into MLflow params with dotted keys (``model.embed_dim`` -> ``"128"``).

    Args:
        cfg: a :class:`vice.config.Config`, a DictConfig (interpolations are resolved) or a nested dict.
        prefix: prepended to every key (used in the recursion).

    Returns:
        One entry per leaf, in config order; lists are leaves; values rendered by :func:`param_text`.
    """
    flat: dict[str, str] = {}
    for key, value in _as_container(cfg).items():
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = param_text(value)
    return flat
