"""Credentials in a tracking URI or a storage URL are never written or printed: unit checks of the
redaction, then a sweep, an evaluation and a study against a real ``mlflow server`` with a password in
the URI, after which the password is searched for in every file, the server's store and the output."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vice.config import Config, redacted
from vice.launch.tracking.client import (
    PASSWORD_ENV,
    USERNAME_ENV,
    credentials_to_environment,
    resolve_tracking_uri,
)
from vice.launch.tracking.params import flatten_config
from vice.redact import RedactingFilter, redact_uri, split_credentials

SECRET = "s3cretPW"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://vuser:s3cretPW@127.0.0.1:5001", "http://***@127.0.0.1:5001"),
        ("postgresql://user:pw@host/db", "postgresql://***@host/db"),
        ("postgresql+psycopg2://user@host:5432/db?x=1", "postgresql+psycopg2://***@host:5432/db?x=1"),
        ("https://u:p%40ss@h/a@b", "https://***@h/a@b"),  # an @ in the path is not user info
        ("see 'http://a:b@h:1' and http://c@h/x", "see 'http://***@h:1' and http://***@h/x"),
        ("http://***@127.0.0.1:5001", "http://***@127.0.0.1:5001"),  # idempotent
        ("sqlite:////abs/path/mlflow.db", "sqlite:////abs/path/mlflow.db"),
        ("http://127.0.0.1:5000 by user@example.org", "http://127.0.0.1:5000 by user@example.org"),
    ],
)
def test_redact_uri_replaces_the_user_info_of_every_uri(text: str, expected: str) -> None:
    assert redact_uri(text) == expected


def test_split_credentials_decodes_user_and_password() -> None:
    assert split_credentials("http://vuser:s3cret%40PW@host:5001/x") == (
        "http://host:5001/x",
        "vuser",
        "s3cret@PW",
    )
    assert split_credentials("http://vuser@host") == ("http://host", "vuser", None)
    assert split_credentials("http://host:5000") == ("http://host:5000", None, None)


def test_credentials_move_into_mlflows_environment_and_a_conflict_names_no_secret() -> None:
    env: dict[str, str] = {}
    assert credentials_to_environment(f"http://vuser:{SECRET}@h:5001", env) == "http://h:5001"
    assert env == {USERNAME_ENV: "vuser", PASSWORD_ENV: SECRET}
    assert credentials_to_environment("sqlite:////x/mlflow.db", env) == "sqlite:////x/mlflow.db"
    with pytest.raises(ValueError, match=r"http://\*\*\*@h:5001 holds credentials that differ") as error:
        credentials_to_environment("http://vuser:other@h:5001", env)
    assert "other" not in str(error.value) and SECRET not in str(error.value)


def test_params_saved_config_and_rejected_uri_carry_no_secret() -> None:
    cfg = Config()
    cfg = dataclasses.replace(
        cfg, tracking=dataclasses.replace(cfg.tracking, tracking_uri=f"http://u:{SECRET}@h")
    )
    assert flatten_config(cfg)["tracking.tracking_uri"] == "http://***@h"
    assert redacted(cfg).tracking.tracking_uri == "http://***@h"
    assert redacted(cfg).model == cfg.model
    with pytest.raises(ValueError) as error:
        resolve_tracking_uri(f"postgresql://user:{SECRET}@h/db", "out")
    assert "'postgresql://***@h/db' is not supported" in str(error.value)


def test_log_lines_and_tracebacks_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_redact")
    logger.addHandler(handler)
    try:
        logger.warning("store %s", f"http://u:{SECRET}@h:1")
        try:
            raise RuntimeError(f"cannot reach http://u:{SECRET}@h:1")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().count(SECRET) == 0
    assert stream.getvalue().startswith("store http://***@h:1\nfailed\nTraceback")
    assert stream.getvalue().endswith("RuntimeError: cannot reach http://***@h:1\n")


def test_a_missing_rdb_driver_names_the_extra_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from vice.launch.tune.study import StudyError, build_storage

    url = f"postgresql://user:{SECRET}@127.0.0.1:1/db"  # nothing listens on port 1
    for driver in ("psycopg", "psycopg2"):  # as if the extra were not installed
        monkeypatch.setitem(sys.modules, driver, None)
    with pytest.raises(StudyError) as error:
        build_storage(url, tmp_path)
    assert str(error.value).startswith("--storage postgresql://***@127.0.0.1:1/db: no postgresql driver (")
    assert str(error.value).endswith("): pip install 'vice[postgres]'") and SECRET not in str(error.value)


def test_an_rdb_server_that_does_not_answer_is_one_line_without_the_password(tmp_path: Path) -> None:
    from vice.launch.tune.study import StudyError, build_storage

    pytest.importorskip("psycopg", reason="the postgres extra is not installed: pip install 'vice[postgres]'")
    with pytest.raises(StudyError) as error:
        build_storage(f"postgresql://user:{SECRET}@127.0.0.1:1/db", tmp_path)
    assert str(error.value).startswith("--storage postgresql://***@127.0.0.1:1/db: cannot connect: ")
    assert "Connection refused" in str(error.value) and SECRET not in str(error.value)


def test_the_optuna_storage_comes_from_the_environment_unless_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vice.launch.tune.cli import main
    from vice.launch.tune.study import STORAGE_ENV

    monkeypatch.setenv(STORAGE_ENV, f"sqlite:///{tmp_path}/o.db")  # refused: so nothing runs
    assert main(["smoke", "--launcher", "local", "--output-dir", str(tmp_path)]) == 2
    assert f"--storage sqlite:///{tmp_path}/o.db: SQLite breaks" in capsys.readouterr().err
    given = tmp_path / "given.db"
    assert (
        main(
            ["smoke", "--launcher", "local", "--output-dir", str(tmp_path), "--storage", f"sqlite:///{given}"]
        )
        == 2
    )
    assert f"--storage sqlite:///{given}: SQLite breaks" in capsys.readouterr().err


# End to end ---------------------------------------------------------------------------------------


def _count_in_files(root: Path, secret: bytes) -> dict[str, int]:
    return {str(p): n for p in root.rglob("*") if p.is_file() and (n := p.read_bytes().count(secret))}


@pytest.mark.slow
def test_a_password_in_the_tracking_uri_is_written_and_printed_nowhere(
    mlflow_server: tuple[str, Path],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.tracking import MlflowClient

    from vice.launch.sweep.cli import main as vice_sweep
    from vice.launch.tune.cli import main as vice_tune

    for name in (USERNAME_ENV, PASSWORD_ENV):  # restored after the test; the sweep sets them
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    host, server_dir = mlflow_server
    uri = f"tracking.tracking_uri=http://vuser:{SECRET}@{host}"
    out = tmp_path / "out"
    one_job = ["regions.method=grid", "seed=0", "train.max_steps=2", "eval.probe_steps=5", "eval.pictures=1"]
    sweep = [
        "table3_decomposition",
        "--smoke",
        "--launcher",
        "local",
        "--output-dir",
        str(out),
        *one_job,
        uri,
    ]
    assert vice_sweep(sweep) == 0
    assert os.environ[USERNAME_ENV] == "vuser" and os.environ[PASSWORD_ENV] == SECRET  # what the jobs inherit
    (run_dir,) = (out / "table3_decomposition_smoke" / "runs").iterdir()
    vice_eval = str(Path(sys.executable).with_name("vice-eval"))
    evaluation = [vice_eval, "experiment=table3_decomposition_smoke", *one_job]
    done = subprocess.run([*evaluation, f"run_dir={run_dir}", uri], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    study = [
        "smoke",
        "--launcher",
        "local",
        "--output-dir",
        str(out),
        "--n-trials",
        "1",
        "--max-parallel",
        "1",
    ]
    assert vice_tune([*study, uri]) == 0

    printed = capfd.readouterr()
    assert (printed.out + printed.err).count(SECRET) == 0
    assert (done.stdout + done.stderr).count(SECRET.encode()) == 0
    assert _count_in_files(out, SECRET.encode()) == {}  # run dirs, .hydra, .submitit logs and pickles
    assert _count_in_files(server_dir, SECRET.encode()) == {}  # the MLflow store's bytes, the artifacts
    client = MlflowClient(f"http://{host}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    params = {r.data.params.get("tracking.tracking_uri") for r in runs if "run_key" in r.data.tags}
    assert params == {f"http://{host}"}  # the jobs got the URI without its user info
    assert len(runs) == 4  # the sweep's parent and job, the study's parent and trial
