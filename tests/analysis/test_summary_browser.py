"""A sweep's parent run as a reader finds it: a real ``mlflow server``, a real headless Chromium.

``vice-tables --sweep-id`` summarizes a sweep into its parent run on the server and prints the run's page;
Chromium (Debian's ``chromium``) loads that page and the experiment's page, runs the MLflow UI's React
app, and dumps the DOM it rendered. The assertions read the text a person would see: the artifact
tree, the table's preview and the runs list, not the ajax API behind them.
"""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import chromium_marks, find_chromium
from mlflow_fixtures import SMOKE, linear, log_run

from analysis.cli import main
from analysis.summary import experiment_page, ui_address
from vice.launch.tracking.write import prepare_tracking, start_parent_run

pytestmark = chromium_marks()

EXPERIMENT = "table3_decomposition_smoke"
#: Virtual milliseconds Chromium lets the page's timers and requests run before it dumps the DOM: the
#: React app fetches the run, then its artifacts, then the previewed file.
VIRTUAL_TIME_MS = 30_000
#: Hang guard for one Chromium run (seconds; minutes on 2 starved cores): a hang fails instead of blocking.
CHROMIUM_WAIT_S = 900


class _VisibleText(HTMLParser):
    """The text nodes of a DOM outside ``<script>``, ``<style>`` and ``<noscript>``, one per entry."""

    HIDDEN = frozenset({"script", "style", "noscript"})

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in self.HIDDEN

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in self.HIDDEN

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.texts.append(data.strip())


def visible_text(dom: str) -> list[str]:
    """What a page shows, as its text nodes in document order."""
    parser = _VisibleText()
    parser.feed(dom)
    return parser.texts


def test_visible_text_leaves_scripts_and_styles_out() -> None:
    dom = "<html><head><style>p{}</style></head><body><p>a <b>b</b></p><script>x()</script>c</body></html>"
    assert visible_text(dom) == ["a", "b", "c"]


def rendered(url: str, profile: Path) -> list[str]:
    """Load ``url`` in headless Chromium with a fresh profile and return the text it rendered."""
    chromium = find_chromium()
    assert chromium is not None  # chromium_marks() skipped the test otherwise
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=CHROMIUM_WAIT_S,
    ).stdout
    return visible_text(dom)


def test_parent_run_page_shows_the_sweeps_table_in_a_real_browser(
    mlflow_server: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    host, _ = mlflow_server
    uri = f"http://{host}"
    experiment_id = prepare_tracking(uri, EXPERIMENT)
    parent = start_parent_run(uri, experiment_id, "s1", tags={"launcher": "local", "experiment": EXPERIMENT})
    client = MlflowClient(uri)
    for method, seeds in (("slic", (0.44, 0.45, 0.46)), ("grid", (0.40, 0.41, 0.42))):
        for seed, value in enumerate(seeds):
            config = {**SMOKE, "regions.method": method, "regions.region_size": 8, "seed": seed}
            log_run(client, EXPERIMENT, config, linear(value), tags={"sweep_id": "s1"})

    argv = [
        "--tracking-uri",
        uri,
        "--experiment",
        EXPERIMENT,
        "--sweep-id",
        "s1",
        "--out",
        str(tmp_path / "t"),
    ]
    assert main(argv) == 0
    table_page = f"{uri}/#/experiments/{experiment_id}/runs/{parent}/artifacts/summary/{EXPERIMENT}.md"
    assert f"parent run: {parent}, {table_page}" in capsys.readouterr().out.splitlines()

    shown = rendered(table_page, tmp_path / "profile-run")
    assert f"{EXPERIMENT} · s1" in shown  # the parent run's readable name heads its page
    files = {f"{EXPERIMENT}{suffix}" for suffix in (".md", ".tex", ".csv", ".png", "_claims.md")}
    assert files <= set(shown)  # the summary/ folder, opened in the artifact tree
    assert f"summary/{EXPERIMENT}.md" in shown  # the previewed file's header
    preview = shown[shown.index(f"summary/{EXPERIMENT}.md") :]
    assert "45.00 ± 1.00 (3)†" in preview and "41.00 ± 1.00 (3)†" in preview  # the table's cells, rendered

    runs = rendered(experiment_page(ui_address(uri), experiment_id), tmp_path / "profile-experiment")
    assert "Runs" in runs and f"{EXPERIMENT} · s1" in runs  # opens on the runs list, not GenAI traces
    assert "Token Usage" not in runs
