"""``vice-tables`` on bad input: a store that is not there is never created, an unreachable server fails
at its first refused connection, and with ``--format latex|csv`` stdout holds only the table."""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow_fixtures import log_table3

from analysis.cli import main
from analysis.runs import FAST_FAIL_HTTP_ENV


def refuse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run vice-tables expecting a refusal; return its one stderr line."""
    assert main(argv) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    (line,) = printed.err.splitlines()
    assert line.startswith("vice-tables: ")
    return line


def test_a_missing_sqlite_store_is_refused_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    line = refuse(["--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "t")], capsys)
    assert line.startswith(f"vice-tables: no MLflow store at {db}: nothing is created when reading")
    assert sorted(tmp_path.iterdir()) == []


def test_a_relative_sqlite_path_is_refused_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    line = refuse(["--tracking-uri", "sqlite:///outputs/mlflow.db"], capsys)
    assert "sqlite:///outputs/mlflow.db is a path relative to the working dir: use sqlite:////abs" in line
    assert sorted(tmp_path.iterdir()) == []


def test_a_plain_path_is_refused_naming_the_uri_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    line = refuse(["--tracking-uri", str(db)], capsys)
    assert line.startswith(
        f"vice-tables: {db} is a path, not a tracking URI: use sqlite:////abs/path/mlflow.db"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


@pytest.fixture
def closing_server() -> Iterator[tuple[int, list[int]]]:
    """A TCP port that accepts and at once closes every connection; yields it and the connection count."""
    accepted = [0]
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            accepted[0] += 1
            connection.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        server.close()


def test_an_unreachable_server_fails_at_the_first_attempt_with_one_line(
    closing_server: tuple[int, list[int]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in FAST_FAIL_HTTP_ENV:  # unset here, restored after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    port, accepted = closing_server
    line = refuse(["--tracking-uri", f"http://vuser:s3cretPW@127.0.0.1:{port}"], capsys)
    assert line.startswith(f"vice-tables: cannot read the MLflow server http://***@127.0.0.1:{port}: ")
    assert accepted[0] == 1  # no retry (MLflow's default is 7, with minutes of backoff)
    assert {name: os.environ[name] for name in FAST_FAIL_HTTP_ENV} == FAST_FAIL_HTTP_ENV


@pytest.fixture(scope="module")
def table3_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    log_table3(MlflowClient(tracking_uri=tracking_uri))
    return tracking_uri


@pytest.mark.parametrize(("fmt", "suffix"), [("latex", "tex"), ("csv", "csv")])
def test_latex_and_csv_print_only_the_table_on_stdout(
    table3_uri: str, fmt: str, suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--tracking-uri", table3_uri, "--experiment", "table3_decomposition", "--out", str(tmp_path)]
    assert main([*argv, "--format", fmt]) == 0
    printed = capsys.readouterr()
    written = (tmp_path / f"table3_decomposition.{suffix}").read_text(encoding="utf-8")
    assert printed.out == f"{written}\n\n"
    assert [line.split(" ", 1)[0] for line in printed.err.splitlines()] == ["files:", "figure:"]
    if fmt == "csv":
        pd.testing.assert_frame_equal(
            pd.read_csv(io.StringIO(printed.out)), pd.read_csv(io.StringIO(written))
        )
