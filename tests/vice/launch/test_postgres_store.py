"""A multi-user tracking and study store on a real PostgreSQL server (issue 12, item 5).

One sweep logs to an ``mlflow server --app-name basic-auth`` whose backend store (and user store) is
PostgreSQL, as user ``vuser`` created by the server's admin; one ``vice-tune`` study keeps its trials in
PostgreSQL. Every credential comes from the environment: the database password reaches the server as
``PGPASSWORD`` and the study as ``$VICE_OPTUNA_STORAGE``; the MLflow user's as
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``. Afterwards each password is searched for in
the printed output, every file written (outputs, artifacts, the server's log), every row of the three
databases and the PostgreSQL data directory: it must appear 0 times.

The server comes from ``.ci/postgres.sh up`` (``.ci/run`` starts it): the tests need
``VICE_TEST_POSTGRES=127.0.0.1:PORT`` and ``PGPASSWORD`` (role ``$PGUSER``, default ``vice``, with
CREATEDB), the ``postgres`` and ``server`` extras. Without them they skip, unless
``VICE_REQUIRE_POSTGRES=1`` (as in ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import mlflow_server_command, wait_for

from vice.launch.tracking.client import PASSWORD_ENV, USERNAME_ENV

ADDRESS_ENV = "VICE_TEST_POSTGRES"
REQUIRE_ENV = "VICE_REQUIRE_POSTGRES"
PG_DIR_ENV = "VICE_PG_DIR"  # .ci/postgres.sh's data dir, searched too when this process can read it
SERVER_START_S = 600  # a hang guard: about 15 s on idle cores, minutes on starved ones
ADMIN = "admin"
USER = "vuser"


def _unavailable() -> str | None:
    if not os.environ.get(ADDRESS_ENV) or not os.environ.get("PGPASSWORD"):
        return f"no PostgreSQL configured: set {ADDRESS_ENV}=127.0.0.1:PORT and PGPASSWORD (bash .ci/postgres.sh up)"
    for module, extra in (("psycopg", "postgres"), ("flask_wtf", "server")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is missing: pip install -e '.[{extra}]'"
    return None


_REASON = _unavailable()
if _REASON is not None and os.environ.get(REQUIRE_ENV) == "1":
    pytest.fail(f"{REQUIRE_ENV}=1 (as in .ci/run) but {_REASON}", pytrace=False)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


def _host_port() -> tuple[str, int]:
    host, _, port = os.environ[ADDRESS_ENV].rpartition(":")
    return host, int(port)


def _connect(dbname: str):  # -> psycopg.Connection
    import psycopg

    host, port = _host_port()
    return psycopg.connect(
        host=host, port=port, dbname=dbname, user=os.environ.get("PGUSER", "vice"), autocommit=True
    )  # the password: libpq reads PGPASSWORD


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    """Fresh databases ``mlflow`` (runs), ``auth`` (MLflow users) and ``optuna`` (the study), dropped after."""
    suffix = secrets.token_hex(4)
    names = {role: f"vice_test_{role}_{suffix}" for role in ("mlflow", "auth", "optuna")}
    with _connect("postgres") as admin:
        for name in names.values():
            admin.execute(f"CREATE DATABASE {name}")
    try:
        yield names
    finally:
        with _connect("postgres") as admin:
            for name in names.values():
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _request(url: str, user: str | None, password: str | None, body: dict | None = None) -> int:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=SERVER_START_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def auth_server(tmp_path: Path, databases: dict[str, str]) -> Iterator[dict[str, str]]:
    """``mlflow server --app-name basic-auth`` on 127.0.0.1, runs and users in PostgreSQL, with user ``vuser``."""
    folder = tmp_path / "server"
    folder.mkdir()
    host, pg_port = _host_port()
    pg_user = os.environ.get("PGUSER", "vice")
    # No password in the file: the server's PostgreSQL connections take it from PGPASSWORD. A cached
    # credential check (60 s) keeps PBKDF2 off every request of the jobs.
    (folder / "auth.ini").write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = postgresql://{pg_user}@{host}:{pg_port}/{databases['auth']}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    secret = {
        "admin": secrets.token_urlsafe(18),
        "user": secrets.token_urlsafe(18),
        "flask": secrets.token_urlsafe(18),
    }
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret["admin"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret["flask"],
    }
    port = _free_port()
    store = f"postgresql://{pg_user}@{host}:{pg_port}/{databases['mlflow']}"
    command = mlflow_server_command(store, folder, port, "--app-name", "basic-auth")
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for(lambda: _request(f"{url}/health", None, None) == 200, "mlflow server", SERVER_START_S, 1)
        except AssertionError as error:
            tail = (tmp_path / "server.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{error}; the end of its log:\n{tail}") from None
        created = _request(
            f"{url}/api/2.0/mlflow/users/create",
            ADMIN,
            secret["admin"],
            {"username": USER, "password": secret["user"]},
        )
        assert created == 200
        yield {"url": url, **secret}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the worker it started
        server.wait()


def _rows_holding(dbname: str, needles: list[str]) -> dict[str, int]:
    """Per table of ``dbname``: how many rows hold a needle anywhere in their text form."""
    found = {}
    with _connect(dbname) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        assert tables, f"{dbname} holds no table"
        for table in tables:
            texts = [row[0] for row in connection.execute(f'SELECT CAST(t AS text) FROM "{table}" t')]
            if count := sum(1 for text in texts for needle in needles if needle in text):
                found[table] = count
    return found


def _files_holding(root: Path, needles: list[str]) -> dict[str, int]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if count := sum(data.count(needle.encode()) for needle in needles):
                found[str(path)] = count
    return found


def test_a_sweep_and_a_study_on_postgresql_through_a_basic_auth_server_leak_no_password(
    auth_server: dict[str, str],
    databases: dict[str, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vice.launch.sweep.cli import main as vice_sweep
    from vice.launch.tune.cli import main as vice_tune
    from vice.launch.tune.study import STORAGE_ENV

    url = auth_server["url"]
    pg_password = os.environ["PGPASSWORD"]
    secrets_ = [pg_password, auth_server["admin"], auth_server["user"], auth_server["flask"]]
    # Basic auth is on: no credential or a wrong one is refused, the user's own is accepted.
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert _request(search, None, None) == 401
    assert _request(search, USER, auth_server["admin"]) == 401
    assert _request(search, USER, auth_server["user"]) == 200

    # The client side sees the database password only inside the study's storage URL.
    host, pg_port = _host_port()
    pg_user = os.environ.get("PGUSER", "vice")
    storage = f"postgresql://{pg_user}:{urllib.parse.quote(pg_password, safe='')}@{host}:{pg_port}/{databases['optuna']}"
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv(STORAGE_ENV, storage)
    monkeypatch.setenv(USERNAME_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, auth_server["user"])

    out = tmp_path / "out"
    tracking = f"tracking.tracking_uri={url}"
    one_job = ["regions.method=grid", "seed=0", "train.max_steps=2", "eval.probe_steps=5", "eval.pictures=0"]
    sweep = ["table3_decomposition", "--smoke", "--launcher", "local", "--output-dir", str(out)]
    assert vice_sweep([*sweep, *one_job, tracking]) == 0
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
    assert vice_tune([*study, tracking]) == 0

    # The runs are in PostgreSQL, through the server: the sweep's parent and job, the study's parent and
    # trial, each finished, each job's tracking URI the bare server address.
    monkeypatch.setenv("PGPASSWORD", pg_password)
    with _connect(databases["mlflow"]) as connection:
        runs = connection.execute("SELECT status FROM runs").fetchall()
        uris = connection.execute("SELECT value FROM params WHERE key = 'tracking.tracking_uri'").fetchall()
        experiments = connection.execute(
            "SELECT name FROM experiments WHERE name <> 'Default' ORDER BY name"
        ).fetchall()
    assert runs == [("FINISHED",)] * 4
    assert uris == [(url,), (url,)]
    assert experiments == [("table3_decomposition_smoke",), ("tune_smoke",)]
    with _connect(databases["auth"]) as connection:
        users = connection.execute("SELECT username FROM users ORDER BY username").fetchall()
    assert users == sorted([(ADMIN,), (USER,)])  # the admin and the user it created, in PostgreSQL
    with _connect(databases["optuna"]) as connection:
        studies = connection.execute("SELECT study_name FROM studies").fetchall()
        trials = connection.execute("SELECT state FROM trials").fetchall()
    assert studies == [("tune_smoke",)]
    assert [str(state) for (state,) in trials] == ["COMPLETE"]

    printed = capfd.readouterr()
    assert [(printed.out + printed.err).count(s) for s in secrets_] == [0, 0, 0, 0]
    assert _files_holding(tmp_path, secrets_) == {}  # outputs, .hydra, .submitit, artifacts, server log
    for dbname in databases.values():
        assert _rows_holding(dbname, secrets_) == {}
    pg_dir = Path(os.environ.get(PG_DIR_ENV, "/var/tmp/vice-ci-postgres"))
    if os.access(pg_dir, os.R_OK | os.X_OK):
        assert _files_holding(pg_dir, secrets_) == {}  # its log and data files
