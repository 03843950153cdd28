"""Compose every job of an experiment's sweep onto the typed schema, like Hydra would, and validate it.

Private Hydra APIs, kept on purpose (Hydra 1.3 has no public equivalent):

- ``ConfigLoaderImpl._apply_overrides_to_config``: :class:`Composer` composes each distinct set of group
  choices once and applies the value overrides with Hydra's own function; composing every job with the
  public ``hydra.compose`` instead would take seconds per job on a large sweep (CI time);
- ``hydra._internal.core_plugins.basic_sweeper.BasicSweeper.split_arguments``: the expansion of a sweep
  into jobs exactly as the basic sweeper does it (order included, which numbers the jobs).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vice.config import Config, to_config, validate
from vice.launch.app import EXPERIMENTS_DIR, list_experiments
from vice.launch.overrides import (
    display_overrides,
)
from vice.launch.sweep.errors import SweepError, listing
from vice.launch.tracking.identity import SMOKE_SUFFIX, compute_run_key, is_smoke, job_dir


@dataclass(frozen=True)
class Job:
    """One job of a sweep.

    Attributes:
        index: position in the sweep (Hydra's job number).
        overrides: the job's task overrides (the experiment's sweep axes and the user's overrides).
        config: the composed, validated config.
        run_key: :func:`vice.launch.tracking.identity.compute_run_key` of ``config``.
        run_dir: the job's deterministic dir.
    """

    index: int
    overrides: tuple[str, ...]
    config: Config
    run_key: str
    run_dir: Path


def experiment_name(name: str, smoke: bool) -> str:
    """The experiment file to run: ``name``, or its smoke variant with ``smoke``.

    Raises:
        SweepError: no such file (the message lists the experiments).
    """
    chosen = f"{name}{SMOKE_SUFFIX}" if smoke and not is_smoke(name) else name
    if chosen not in list_experiments():
        paper = [e for e in list_experiments() if not is_smoke(e)]
        raise SweepError(
            f"no experiment {chosen!r} in {EXPERIMENTS_DIR}: one of {', '.join(paper)} (add --smoke for "
            "its synthetic smoke variant)"
        )
    return chosen


class Composer:
    """Compose job configs like Hydra does, composing each distinct set of group choices only once.

    Hydra composes the defaults list (the group choices) and then applies the value overrides; this
    caches the first step, and applies the value overrides with Hydra's own function. Use it inside
    ``hydra.initialize_config_dir``.
    """

    def __init__(self) -> None:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        loader = GlobalHydra.instance().config_loader()
        assert isinstance(loader, ConfigLoaderImpl)
        self.loader = loader
        self.parser = OverridesParser.create(config_loader=loader)
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def expand(self, params: Mapping[str, Any], overrides: Sequence[str]) -> list[list[str]]:
        """Every job of a sweep, as Hydra's basic sweeper expands it.

        Args:
            params: ``hydra.sweeper.params`` of the experiment (key -> ``"a,b,c"``).
            overrides: the user's task overrides; a key given here replaces the experiment's axis.

        Returns:
            One override list per job (the cartesian product of the axes, in Hydra's order).
        """
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        lines = [f"{key}={value}" for key, value in params.items()] + list(overrides)
        return BasicSweeper.split_arguments(self.parser.parse_overrides(lines), None)[0]

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The task config of ``sweeps/config.yaml`` with ``overrides`` (no sweep syntax)."""
        from hydra import compose
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        parsed = self.parser.parse_overrides(list(overrides))
        is_group = [self.loader.repository.group_exists(o.key_or_group) for o in parsed]
        groups = tuple(str(o.input_line) for o, g in zip(parsed, is_group, strict=True) if g)
        if groups not in self._composed:
            self._composed[groups] = compose("config", overrides=list(groups))
        cfg = copy.deepcopy(self._composed[groups])
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o, g in zip(parsed, is_group, strict=True) if not g], cfg
        )
        return cfg


def error_message(error: BaseException) -> str:
    """One line from a Hydra/OmegaConf/validation error: what failed and, from its cause, why."""
    lines = []
    for line in str(error).splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip() and not line.startswith("To append"):
            lines.append(line.strip().rstrip("."))
    if error.__cause__ is not None:
        lines.append(str(error.__cause__).splitlines()[0])
    return "; ".join(lines)


def launcher_world_size(launcher: Mapping[str, Any]) -> int:
    """Ranks one job of a launcher preset runs (nodes x tasks per node): part of its run key."""
    return int(launcher.get("nodes") or 1) * int(launcher.get("tasks_per_node") or 1)


def compose_jobs(
    composer: Composer,
    experiment: str,
    params: Mapping[str, Any],
    overrides: Sequence[str],
    output_dir: Path,
    world_size: int = 1,
) -> list[Job]:
    """Compose and validate every job of an experiment's sweep; give each its run key and run dir.

    Args:
        composer: composes one job's config.
        experiment: the experiment (its file of ``sweeps/experiment/``).
        params: the sweep's axes (``hydra.sweeper.params``).
        overrides: the command line's task overrides.
        output_dir: holds the run dirs.
        world_size: ranks per job (:func:`launcher_world_size`), part of the run key.

    Raises:
        SweepError: listing every job that does not compose or validate, or jobs that share a run key.
    """
    jobs: list[Job] = []
    problems: dict[str, list[Sequence[str]]] = {}
    for index, job_overrides in enumerate(composer.expand(params, overrides)):
        full = [f"experiment={experiment}", *job_overrides]
        try:
            cfg = to_config(composer.compose(full))
            validate(cfg)
        except Exception as error:  # Hydra, OmegaConf and ConfigError all name the key
            problems.setdefault(error_message(error), []).append(job_overrides)
            continue
        key = compute_run_key(cfg, world_size)
        jobs.append(Job(index, tuple(job_overrides), cfg, key, job_dir(output_dir, experiment, key)))
    if problems:
        listed = [
            f"{message} (in {len(where)} job(s), e.g. [{' '.join(display_overrides(where[0]))}])"
            for message, where in problems.items()
        ]
        raise SweepError(listing("invalid config (keys and types: vice/config.py)", listed))
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.run_key in seen:
            first = seen[job.run_key]
            raise SweepError(
                f"jobs [{' '.join(display_overrides(first.overrides))}] and "
                f"[{' '.join(display_overrides(job.overrides))}] have the same config (run key {job.run_key}): "
                "drop the duplicate axis value"
            )
        seen[job.run_key] = job
    return jobs
