"""Load MLflow runs into pandas: one row per run, params cast back to Python values.

The frame has the columns ``run_id``, ``experiment``, ``status``, ``start_time`` and ``end_time``
(milliseconds since the epoch), then ``params.<key>`` (cast with :func:`cast_param`),
``metrics.<key>`` (the latest value of each metric, a fraction for ``eval/*``) and ``tags.<key>``.
Only job runs are loaded: runs without a ``run_key`` tag (a sweep's parent run) are left out.

The default selection (:func:`select_latest_finished`) keeps the latest FINISHED run per ``run_key``,
so a job re-run after a failure or re-evaluated later counts once.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from vice.launch.tracking.client import mlflow_client
from vice.launch.tracking.identity import sweep_ids_of
from vice.launch.tracking.names import RUN_KEY_TAG, SWEEP_IDS_TAG
from vice.launch.tracking.read import all_runs
from vice.redact import redact_uri

#: The frame column of the run key tag.
RUN_KEY_COLUMN = f"tags.{RUN_KEY_TAG}"
#: MLflow retries an unreachable server 7 times with backoff (minutes) by default; a read fails fast.
FAST_FAIL_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
#: The frame column of the sweep that last ran a job (every sweep it belonged to: :func:`in_sweep`).
SWEEP_ID_COLUMN = "tags.sweep_id"
FINISHED = "FINISHED"
FAILED_STATUS = "FAILED"
_NULL_TEXTS = frozenset({"None", "null", "~", ""})
_SEARCH_PAGE = 1000


def cast_param(text: str | None) -> Any:
    """Cast an MLflow param (always a string) back to the value the config held.

    Args:
        text: the logged string, e.g. ``"256"``, ``"0.25"``, ``"true"``, ``"None"``, ``"[0.5, 1.5]"``.

    Returns:
        ``None``, a bool, an int, a float, a tuple (for lists, so values stay hashable) or the string.
    """
    if text is None or text in _NULL_TEXTS:
        return None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.startswith("[") and text.endswith("]"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        return tuple(value) if isinstance(value, list) else text
    return text


class StoreError(LookupError):
    """The tracking URI names no store that can be read; reading never creates one."""


def _check_local_store(tracking_uri: str) -> None:
    """Refuse a URI that MLflow would answer by creating a store, or by a FileStore traceback."""
    how = (
        "use sqlite:////abs/path/mlflow.db (four slashes: the store vice-sweep writes) or http(s)://host:port"
    )
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri.removeprefix("sqlite:///")
        if not os.path.isabs(path):
            raise StoreError(f"{tracking_uri} is a path relative to the working dir: {how}")
        if not os.path.isfile(path):
            raise StoreError(f"no MLflow store at {path}: nothing is created when reading; {how}")
    elif "://" not in tracking_uri or tracking_uri.startswith("file:"):
        raise StoreError(f"{redact_uri(tracking_uri)} is a path, not a tracking URI: {how}")


def check_store(tracking_uri: str) -> None:
    """Check that a store can be read, before reading: fast, with one line on failure.

    A local URI must name an existing SQLite file by its absolute path; a server gets one request,
    without MLflow's retries (:data:`FAST_FAIL_HTTP_ENV`, unless those variables are already set).

    Raises:
        StoreError: naming the URI (credentials redacted) and how to fix it.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        _check_local_store(tracking_uri)
        return
    for name, value in FAST_FAIL_HTTP_ENV.items():
        os.environ.setdefault(name, value)
    try:
        _client(tracking_uri).search_experiments(max_results=1)
    except Exception as error:
        reason = " ".join(str(error).split())
        raise StoreError(f"cannot read the MLflow server {redact_uri(tracking_uri)}: {reason}") from None


def _client(tracking_uri: str) -> Any:
    """The one MLflow client (:func:`vice.launch.tracking.client.mlflow_client`), after checking the store."""
    _check_local_store(tracking_uri)
    return mlflow_client(tracking_uri)


def list_experiments(tracking_uri: str) -> list[str]:
    """Return the names of every active experiment in the store, sorted."""
    return sorted(e.name for e in _client(tracking_uri).search_experiments())


def _record(run: Any, experiment: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "run_id": run.info.run_id,
        "experiment": experiment,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
    }
    record.update({f"params.{k}": cast_param(v) for k, v in run.data.params.items()})
    record.update({f"metrics.{k}": float(v) for k, v in run.data.metrics.items()})
    record.update({f"tags.{k}": v for k, v in run.data.tags.items() if not k.startswith("mlflow.")})
    return record


def runs_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Build the run frame from per-run records; columns sorted, rows sorted by start time then id.

    ``params.*`` and ``tags.*`` columns keep Python objects (an int param stays an int, a missing one is
    ``None``); ``metrics.*`` columns are float with NaN where a run did not log the metric.
    """
    base = ["run_id", "experiment", "status", "start_time", "end_time"]
    keys = sorted(({k for r in records for k in r} | {RUN_KEY_TAG}) - set(base))
    columns: dict[str, pd.Series] = {}
    for key in base + keys:
        values = [r.get(key) for r in records]
        if key.startswith("metrics."):
            columns[key] = pd.Series([float("nan") if v is None else v for v in values], dtype="float64")
        else:
            columns[key] = pd.Series(values, dtype=object)
    frame = pd.DataFrame(columns)
    return frame.sort_values(["start_time", "run_id"], kind="stable").reset_index(drop=True)


def load_runs(
    tracking_uri: str,
    experiments: Sequence[str],
    *,
    sweep_id: str | None = None,
    git_commit: str | None = None,
) -> pd.DataFrame:
    """Load every job run (all statuses) of the named experiments.

    Args:
        tracking_uri: an MLflow tracking URI (``sqlite:////abs/path/mlflow.db`` or ``http://host:5000``).
        experiments: MLflow experiment names.
        sweep_id: keep only the runs of this sweep (:func:`in_sweep`): a run a later sweep resumed
            stays in the sweeps it belonged to.
        git_commit: keep only runs whose ``git_commit`` tag starts with this (a short hash works).

    Returns:
        The run frame described in the module docstring.

    Raises:
        LookupError: an experiment does not exist in the store (the message lists those that do).
    """
    client = _client(tracking_uri)
    records: list[dict[str, Any]] = []
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            known = ", ".join(list_experiments(tracking_uri)) or "none"
            raise LookupError(f"no MLflow experiment {name!r} at {tracking_uri}; experiments there: {known}")
        for run in all_runs(client, experiment.experiment_id):
            if RUN_KEY_TAG in run.data.tags:
                records.append(_record(run, name))
    frame = runs_frame(records)
    if sweep_id is not None:
        frame = frame[in_sweep(frame, sweep_id)]
    if git_commit is not None:
        frame = frame[_tag(frame, "git_commit").str.startswith(git_commit)]
    return frame.reset_index(drop=True)


def in_sweep(frame: pd.DataFrame, sweep_id: str) -> pd.Series:
    """True per run that belonged to ``sweep_id``: listed in its ``sweep_ids`` tag, or its ``sweep_id`` tag."""
    tags = pd.DataFrame({"sweep_id": _tag(frame, "sweep_id"), SWEEP_IDS_TAG: _tag(frame, SWEEP_IDS_TAG)})
    member = [sweep_id in sweep_ids_of(row) for row in tags.to_dict("records")]
    return pd.Series(member, index=frame.index, dtype=bool)


def _tag(frame: pd.DataFrame, name: str) -> pd.Series:
    column = f"tags.{name}"
    if column not in frame:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    return frame[column].fillna("").astype(str)


def select_latest_finished(runs: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest FINISHED run per ``run_key`` (by start time, then run id); keep row order."""
    finished = runs[runs["status"] == FINISHED]
    if finished.empty:
        return finished.reset_index(drop=True)
    ordered = finished.sort_values(["start_time", "run_id"], kind="stable")
    return ordered.drop_duplicates(RUN_KEY_COLUMN, keep="last").sort_index().reset_index(drop=True)


def pending_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs whose ``run_key`` has no FINISHED run: failed, killed or still running jobs (latest per key)."""
    done = set(runs.loc[runs["status"] == FINISHED, RUN_KEY_COLUMN])
    pending = runs[~runs[RUN_KEY_COLUMN].isin(done)]
    ordered = pending.sort_values(["start_time", "run_id"], kind="stable")
    return ordered.drop_duplicates(RUN_KEY_COLUMN, keep="last").sort_index().reset_index(drop=True)


def metric_history(tracking_uri: str, run_ids: Sequence[str], key: str) -> pd.DataFrame:
    """Every logged value of one metric for the given runs.

    Args:
        tracking_uri: an MLflow tracking URI.
        run_ids: the runs to read.
        key: the metric name, e.g. ``eval/linear_miou`` (intermediate evaluations log it per step).

    Returns:
        Columns ``run_id``, ``step``, ``value``; sorted by run id then step; the last value per step.
    """
    client = _client(tracking_uri)
    rows = [
        (run_id, int(m.step), float(m.value), int(m.timestamp))
        for run_id in run_ids
        for m in client.get_metric_history(run_id, key)
    ]
    frame = pd.DataFrame(rows, columns=["run_id", "step", "value", "timestamp"])
    frame = frame.sort_values(["run_id", "step", "timestamp"], kind="stable")
    frame = frame.drop_duplicates(["run_id", "step"], keep="last")
    return frame.drop(columns="timestamp").reset_index(drop=True)
