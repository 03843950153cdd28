"""A sweep's parent run as its summary: a readable name, params, summary metrics and the reports.

:func:`summarize_sweep` regenerates a sweep's table, figure and claims report (:mod:`analysis.tables`,
:mod:`analysis.claims`) and writes them into the sweep's MLflow parent run (the run tagged with the
``sweep_id`` and no ``run_key``), so a reader of the MLflow UI opens the parent run and finds:

- the name ``<experiment> · <sweep id>``;
- params: ``experiment``, ``swept_axes`` (the table axes whose values vary over the sweep's runs),
  ``launcher`` (the parent's tag), ``git_commit`` (of the runs), ``git_dirty`` and ``version.<package>``
  (of the checkout that summarizes: ``vice-sweep`` at the sweep's end). MLflow params are write-once, so
  a param already logged keeps its first value;
- metrics: ``summary/runs_finished``, ``summary/runs_pending``, ``summary/cells``,
  ``summary/best_linear_miou`` (the best cell's seed mean, a fraction like every ``eval/*``) and the
  claims' verdict counts (``claims/supported``, ...);
- artifacts under ``summary/``: the table (``.md``, ``.tex``, ``.csv``), the figure (``.png``, ``.pdf``,
  ``_plot.csv``) and the claims report (``_claims.md``, ``_claims.csv``).

It runs at the end of ``vice-sweep`` and whenever ``vice-tables --sweep-id`` regenerates a sweep, which
then prints the parent run's page in the MLflow UI (:func:`parent_run_page`).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.ablation import swept_axes as ablation_axes
from analysis.cells import METRIC, axis_values, metric
from analysis.claims import summary_metrics, write_claims
from analysis.compare import AXES
from analysis.runs import load_runs, pending_runs, select_latest_finished
from analysis.tables import is_paper_experiment, resolve_experiment, write_experiment
from vice.launch.tracking.client import mlflow_client
from vice.redact import split_credentials

ARTIFACT_DIR = "summary"
#: The URL query that opens the MLflow UI (3.17) on an experiment's training runs. That UI picks its
#: pages from the sidebar's GenAI / Model training switch (the browser's saved choice, GenAI until a
#: reader changes it) or from this query, not from the experiment's ``mlflow.experimentKind`` tag.
TRAINING_VIEW_QUERY = "workflowType=machine_learning"
#: Where ``mlflow ui --backend-store-uri sqlite:///...`` serves a store by default.
LOCAL_UI = "http://127.0.0.1:5000"
PACKAGES = ("vice", "torch", "mlflow", "numpy", "pandas", "scipy", "hydra-core")


def run_name(experiment: str, sweep_id: str) -> str:
    """The parent run's display name: ``table3_decomposition_smoke · 20250101-120000-ab12``."""
    return f"{experiment} · {sweep_id}"


def ui_address(tracking_uri: str) -> str:
    """The MLflow UI of a store: a server's own address (without credentials), else ``mlflow ui``'s."""
    if tracking_uri.startswith(("http://", "https://")):
        return split_credentials(tracking_uri)[0].rstrip("/")
    return LOCAL_UI


def experiment_page(ui: str, experiment_id: str) -> str:
    """The UI page listing an experiment's runs: ``<ui>/#/experiments/<id>?workflowType=machine_learning``."""
    return f"{ui}/#/experiments/{experiment_id}?{TRAINING_VIEW_QUERY}"


def run_page(ui: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """The UI page of a run, or of one of its artifacts (``summary/<experiment>.md``), opened and previewed."""
    page = f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"
    return page if artifact is None else f"{page}/artifacts/{artifact}"


def parent_run_page(tracking_uri: str, experiment: str, parent_run_id: str) -> str:
    """The UI page of a sweep's parent run, opened on its table (``summary/<experiment>.md``)."""
    run = mlflow_client(tracking_uri).get_run(parent_run_id)
    table = f"{ARTIFACT_DIR}/{experiment}.md"
    return run_page(ui_address(tracking_uri), run.info.experiment_id, parent_run_id, table)


def find_parent_run(tracking_uri: str, experiment: str, sweep_id: str) -> str | None:
    """The id of a sweep's parent run (tagged ``sweep_id``, without ``run_key``), or ``None``."""
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.sweep_id = '{sweep_id}'")
    parents = [r for r in runs if "run_key" not in r.data.tags]
    return str(parents[0].info.run_id) if parents else None


def table_axes(runs: pd.DataFrame, experiment: str) -> list[str]:
    """The config keys that name a cell: a paper table's axes, or the settings a sweep of our own varies."""
    if is_paper_experiment(experiment):
        return list(AXES.get(resolve_experiment(experiment), ()))
    return ablation_axes(select_latest_finished(runs))


def swept_axes(runs: pd.DataFrame, experiment: str) -> list[str]:
    """The table axes (config keys) whose values vary over the runs, in table order."""
    return [a for a in table_axes(runs, experiment) if len({str(v) for v in axis_values(runs, a)}) > 1]


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """``{"torch": "2.14.1", ...}`` for the installed packages (``not installed`` otherwise)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_dirty(repo_dir: Path | None = None) -> str:
    """``true`` when tracked files of the checkout differ from its commit, ``false``, or ``unknown``."""
    where = repo_dir or Path(__file__).resolve().parent.parent
    try:
        output = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "true" if output.strip() else "false"


def sweep_params(runs: pd.DataFrame, experiment: str, tags: Mapping[str, str]) -> dict[str, str]:
    """The params that describe a sweep (see the module docstring)."""
    commits = sorted({str(v) for v in runs.get("tags.git_commit", pd.Series(dtype=object)).dropna()})
    params = {
        "experiment": experiment,
        "swept_axes": ", ".join(swept_axes(runs, experiment)) or "none",
        "launcher": tags.get("launcher", "unknown"),
        "git_commit": ", ".join(commits) or tags.get("git_commit", "unknown"),
        "git_dirty": git_dirty(),
    }
    params.update({f"version.{name}": version for name, version in package_versions().items()})
    return params


def sweep_metrics(runs: pd.DataFrame, experiment: str) -> dict[str, float]:
    """Run counts, cells and the best cell's seed-mean linear mIoU (a fraction), of one sweep's runs."""
    finished = select_latest_finished(runs)
    axes = table_axes(runs, experiment)
    metrics = {
        "summary/runs_finished": float(len(finished)),
        "summary/runs_pending": float(len(pending_runs(runs))) if not runs.empty else 0.0,
    }
    if axes and not finished.empty:
        keys = pd.DataFrame({a: axis_values(finished, a).map(str) for a in axes})
        metrics["summary/cells"] = float(len(keys.drop_duplicates()))
        means = metric(finished, METRIC).groupby([keys[a] for a in axes]).mean().dropna()
        if not means.empty:
            metrics["summary/best_linear_miou"] = float(means.max())
    return metrics


def summarize_sweep(tracking_uri: str, experiment: str, sweep_id: str, out_dir: Path) -> str | None:
    """Regenerate a sweep's reports into ``out_dir`` and write the summary into its parent run.

    Args:
        tracking_uri: the MLflow tracking URI the sweep logged to.
        experiment: the MLflow experiment (``table3_decomposition_smoke``).
        sweep_id: the sweep.
        out_dir: where the table, figure and claims files are written (then logged as artifacts).

    Returns:
        The parent run id, or ``None`` when the sweep has no parent run (nothing is written to MLflow).

    Raises:
        LookupError: the experiment is not in the store.
        MixedCellError: a cell would pool runs of different protocols or configs.
    """
    from mlflow.entities import Metric, Param

    parent = find_parent_run(tracking_uri, experiment, sweep_id)
    if parent is None:
        return None
    client = mlflow_client(tracking_uri)
    runs = load_runs(tracking_uri, [experiment], sweep_id=sweep_id)
    tables = write_experiment(tracking_uri, experiment, out_dir, sweep_id=sweep_id)
    claims = write_claims(tracking_uri, experiment, out_dir, sweep_id=sweep_id)
    run = client.get_run(parent)
    logged: dict[str, Any] = dict(run.data.params)
    params = [
        Param(k, v) for k, v in sweep_params(runs, experiment, run.data.tags).items() if k not in logged
    ]
    metrics = {**sweep_metrics(runs, experiment), **summary_metrics(claims.results)}
    timestamp = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    client.log_batch(parent, metrics=[Metric(k, v, timestamp, 0) for k, v in metrics.items()], params=params)
    client.update_run(parent, name=run_name(experiment, sweep_id))
    for path in (*tables.files, *claims.files):
        client.log_artifact(parent, str(path), ARTIFACT_DIR)
    return parent
