"""A study's results: the best trial as an experiment file, the trials table and Optuna's plots."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from vice.launch.tracking.identity import SMOKE_SUFFIX, is_smoke
from vice.launch.tracking.params import override_value
from vice.launch.tune.driver import StudySession, finished_count
from vice.launch.tune.space import trial_overrides

log = logging.getLogger(__name__)


HISTORY_PNG = "optimization_history.png"

IMPORTANCES_PNG = "param_importances.png"

TRIALS_CSV = "trials.csv"


def _nested(overrides: Sequence[str], parser: Any) -> dict[str, Any]:
    """Value overrides as a nested dict (``views.mask_ratio=0.3`` -> ``{views: {mask_ratio: 0.3}}``)."""
    tree = OmegaConf.create()
    for override in parser.parse_overrides(list(overrides)):
        OmegaConf.update(tree, override.key_or_group, override.value(), merge=True)
    result = OmegaConf.to_container(tree)
    assert isinstance(result, dict)
    return {str(key): value for key, value in result.items()}


def best_experiment(session: StudySession) -> tuple[str, str]:
    """The best trial as an experiment file.

    The file includes the base experiment and holds the fixed overrides and the best values as deltas;
    the base experiment's own sweep axes are pinned to what the study used.

    Returns:
        ``(experiment name, YAML text)``; copy the file to ``sweeps/experiment/`` to run it with vice-sweep.
    """
    best = session.optuna_study.best_trial
    name = f"{session.name}_best" + (SMOKE_SUFFIX if is_smoke(session.cfg.experiment) else "")
    parser = session.composer.parser
    is_group = {
        o.input_line: session.composer.loader.repository.group_exists(o.key_or_group)
        for o in parser.parse_overrides(session.task_overrides)
    }
    values = [o for o in session.task_overrides if not is_group[o]] + trial_overrides(best.params)
    axes: dict[str, str] = {}
    for key in session.master.hydra.sweeper.params or {}:
        given = [o.split("=", 1)[1] for o in session.task_overrides if o.split("=", 1)[0] == key]
        if given:
            axes[key] = given[-1]
        elif key in session.master.hydra.runtime.choices:
            axes[key] = str(session.master.hydra.runtime.choices[key])
        else:
            axes[key] = override_value(OmegaConf.select(session.master, key))
    body = {
        "defaults": [f"/experiment/{session.cfg.experiment}", "_self_"],
        "experiment": name,
        **_nested(values, parser),
        "hydra": {"sweeper": {"params": axes}},
    }
    header = (
        f"# @package _global_\n# Best trial of study {session.name}: #{best.number}, {session.cfg.metric} = {best.value:.4f} "
        f"({finished_count(session.optuna_study)} trials). Copy to sweeps/experiment/ and run `vice-sweep {name}`.\n"
    )
    return name, header + yaml.safe_dump(body, sort_keys=False)


def save_results(session: StudySession) -> list[Path]:
    """Write the best experiment file, the trials table and the plots into the study dir.

    They are logged on the parent run, with the best value and parameters.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    from vice.launch.tracking.write import run_logger

    written: list[Path] = []
    frame = session.optuna_study.trials_dataframe()
    (session.study_dir / TRIALS_CSV).write_text(frame.to_csv(index=False))
    written.append(session.study_dir / TRIALS_CSV)
    complete = session.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        name, text = best_experiment(session)
        best_file = session.study_dir / f"{name}.yaml"
        best_file.write_text(text)
        written.append(best_file)
    plots: list[tuple[str, Callable[[Any], Any]]] = [(HISTORY_PNG, ovm.plot_optimization_history)]
    if len(complete) >= 2:
        plots.append((IMPORTANCES_PNG, ovm.plot_param_importances))
    for file_name, plot in plots:
        try:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", ExperimentalWarning)
                axes = plot(session.optuna_study)
        except (ValueError, RuntimeError) as error:  # e.g. no parameter varied yet
            log.warning("no %s: %s", file_name, error)
            continue
        axes.figure.savefig(session.study_dir / file_name, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(session.study_dir / file_name)
    logger = run_logger(session.tracking_uri, session.parent_run_id)
    for path in written:
        logger.log_artifact(path)
    if complete:
        best = session.optuna_study.best_trial
        logger.log_metrics(
            {f"best/{session.cfg.metric}": float(best.value)}, step=len(session.optuna_study.trials)
        )
        logger.set_tags(
            {"best_trial": str(best.number), "best_params": " ".join(trial_overrides(best.params))}
        )
    return written
