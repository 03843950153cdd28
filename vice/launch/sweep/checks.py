"""Check a sweep's inputs before anything is submitted: its datasets are the experiment's own and exist."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vice.config import Config
from vice.launch.sweep.compose import Job
from vice.launch.sweep.errors import SweepError, listing
from vice.launch.tracking.identity import SMOKE_SUFFIX, is_smoke


def _eval_dataset(cfg: Config) -> tuple[str, str | None]:
    return cfg.eval.dataset or cfg.data.name, cfg.eval.root or cfg.data.root


def experiment_datasets(jobs: Iterable[Job]) -> tuple[set[str], set[str]]:
    """The training and the evaluation datasets an experiment's jobs use."""
    jobs = list(jobs)
    return {j.config.data.name for j in jobs}, {
        _eval_dataset(j.config)[0] for j in jobs if j.config.eval.enabled
    }


def check_datasets_match(
    jobs: Iterable[Job], experiment: str, train_sets: set[str], eval_sets: set[str]
) -> None:
    """Refuse jobs whose datasets are not the experiment's own (an override pointing elsewhere).

    Raises:
        SweepError: naming the key and the datasets the experiment uses.
    """
    problems = []
    for job in jobs:
        name = job.config.data.name
        if name not in train_sets:
            problems.append(
                f"data.name={name} does not match experiment {experiment}, which trains on "
                f"{', '.join(sorted(train_sets))}: drop the override"
                + ("" if is_smoke(experiment) else f" (or run {experiment}{SMOKE_SUFFIX})")
            )
        evaluated = _eval_dataset(job.config)[0]
        if job.config.eval.enabled and evaluated not in eval_sets:
            problems.append(
                f"evaluation dataset {evaluated} does not match experiment {experiment}, which evaluates on "
                f"{', '.join(sorted(eval_sets))}: drop the eval.dataset/data.name override"
            )
    if problems:
        raise SweepError(listing("dataset does not match the experiment", problems))


def _dataset_problem(
    key: str, name: str, root: str | None, splits: Sequence[str], split_set: str
) -> str | None:
    """Why a dataset cannot be loaded (None when it can), naming the key to fix."""
    from vice.data.labelled import build_labelled_dataset

    if name == "synthetic":
        return None
    how = f"set VICE_DATA_DIR to the folder holding {name}/, or pass {key}=/path/to/{name}"
    if root is None:
        return f"{key} is not set for dataset {name}: {how}"
    if not Path(root).is_dir():
        return f"{key}={root} (dataset {name}) does not exist: {how}"
    if name == "folder":
        return None
    try:
        for split in splits:
            build_labelled_dataset(name, root, split, split_set)
    except (OSError, ValueError) as error:  # DataError is a ValueError
        return f"{key}={root} does not hold dataset {name}: {error}"
    return None


def check_inputs(jobs: Iterable[Job]) -> list[str]:
    """Every dataset root and weights file the jobs need, checked once each.

    Returns:
        One message per problem (empty when everything is in place).
    """
    checked: dict[tuple[Any, ...], str | None] = {}
    problems = []
    for job in jobs:
        cfg = job.config
        needs: list[tuple[str, str, str | None, tuple[str, ...], str]] = [
            ("data.root", cfg.data.name, cfg.data.root, (cfg.data.split,), cfg.data.split_set)
        ]
        if cfg.eval.enabled:
            name, root = _eval_dataset(cfg)
            key = "eval.root" if cfg.eval.root else "data.root"
            needs.append((key, name, root, ("train", "val"), cfg.data.split_set))
        for need in needs:
            if need not in checked:
                checked[need] = _dataset_problem(*need)
        problems += [checked[n] for n in needs if checked[n] is not None]
        weights = cfg.model.pretrained
        if weights is not None and not Path(weights).is_file():
            problems.append(
                f"model.pretrained={weights} does not exist: save torchvision's ImageNet {cfg.model.backbone} "
                "state dict there (VICE_WEIGHTS_DIR holds <backbone>.pth), or pass model.pretrained=null "
                "for random init"
            )
    return list(dict.fromkeys(p for p in problems if p is not None))
