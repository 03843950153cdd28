"""The error every part of vice-sweep raises for bad input, and how a list of problems is shown."""

from __future__ import annotations

from collections.abc import Sequence

#: Problems listed in one error; the rest are counted.
MAX_LISTED_PROBLEMS = 20


class SweepError(ValueError):
    """Bad input, found before anything was submitted; the message says how to fix it."""


def listing(title: str, problems: Sequence[str]) -> str:
    """``title:`` and one indented line per distinct problem (at most :data:`MAX_LISTED_PROBLEMS`)."""
    shown = [f"  - {p}" for p in dict.fromkeys(problems)][:MAX_LISTED_PROBLEMS]
    more = len(set(problems)) - len(shown)
    return "\n".join([f"{title}:", *shown, *([f"  ... and {more} more"] if more > 0 else [])])
