"""The search space: a searched key's range, the values a trial draws, and their Hydra overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vice.launch.tracking.params import override_value

PARAM_TYPES = ("float", "int", "categorical")


@dataclass
class ParamConfig:
    """One searched config key.

    ``type: float|int`` draw from ``[low, high]`` (``log`` for a log scale, ``step`` for a grid);
    ``categorical`` picks one of ``choices`` (a list value such as ``[0.5, 2.0]`` is allowed). ``when``
    makes the key conditional: it is searched only when every named (earlier) key took one of the
    listed values, and otherwise keeps the base experiment's value.
    """

    type: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    when: dict[str, list[Any]] = field(default_factory=dict)


def choice_token(value: Any) -> Any:
    """A categorical choice as Optuna stores it: lists become their override text ``[0.5,2.0]``."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(choice_token(v)) for v in value) + "]"
    return value


def corner_values(params: Mapping[str, ParamConfig]) -> dict[str, Any]:
    """Every parameter at its low value (numbers) or first choice (categoricals), conditions ignored."""
    values: dict[str, Any] = {}
    for key, p in params.items():
        if p.type == "categorical":
            values[key] = choice_token((p.choices or [None])[0])
        else:
            values[key] = int(p.low or 0) if p.type == "int" else float(p.low or 0)
    return values


def suggest(trial: Any, params: Mapping[str, ParamConfig]) -> dict[str, Any]:
    """Draw the trial's value of every active parameter, in file order.

    Args:
        trial: an ``optuna.Trial``.
        params: the study's search space.

    Returns:
        Key -> value (Optuna's value; categorical lists as their override text), inactive keys left out.
    """
    values: dict[str, Any] = {}
    for key, p in params.items():
        active = all(
            other in values and values[other] in [choice_token(c) for c in allowed]
            for other, allowed in p.when.items()
        )
        if not active:
            continue
        if p.type == "categorical":
            values[key] = trial.suggest_categorical(key, [choice_token(c) for c in p.choices or []])
        elif p.type == "int":
            values[key] = trial.suggest_int(
                key, int(p.low or 0), int(p.high or 0), step=int(p.step or 1), log=p.log
            )
        else:
            values[key] = trial.suggest_float(
                key, float(p.low or 0), float(p.high or 0), step=p.step, log=p.log
            )
    return values


def trial_overrides(values: Mapping[str, Any]) -> list[str]:
    """The Hydra overrides of a trial's parameter values (``views.mask_ratio=0.31``)."""
    return [f"{key}={override_value(value)}" for key, value in values.items()]
