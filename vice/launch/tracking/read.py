"""The read side's one pager: every run of an experiment, page after page."""

from __future__ import annotations

from typing import Any

#: Runs per ``search_runs`` page (MLflow's maximum for a file store is 1000; SQL stores allow more).
SEARCH_PAGE = 1000


def all_runs(client: Any, experiment_id: str) -> list[Any]:
    """Every run (all statuses) of one MLflow experiment, following ``search_runs``'s page tokens.

    Args:
        client: from :func:`vice.launch.tracking.client.mlflow_client`.
        experiment_id: the experiment's id.

    Returns:
        ``mlflow.entities.Run`` objects, in MLflow's order.
    """
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=SEARCH_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_experiment_id(client: Any, experiment: str) -> str | None:
    """The id of the MLflow experiment named ``experiment``; None when the store has none."""
    found = client.get_experiment_by_name(experiment)
    return None if found is None else str(found.experiment_id)
