import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vice.config import Config

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def tiny_config(run_dir, **train) -> Config:
    """A seconds-per-run CPU config on the synthetic scenes."""
    cfg = Config(run_dir=str(run_dir), seed=0)
    cfg.data.image_size = [64, 80]
    cfg.data.num_images = 16
    cfg.data.batch_size = 2
    cfg.data.num_workers = 0
    cfg.regions.method = "grid"
    cfg.regions.region_size = 8
    cfg.views.num_views = 3
    cfg.views.view_size = 32
    cfg.model.output_stride = 16
    cfg.model.decoder_channels = 16
    cfg.model.embed_dim = 8
    cfg.swav.num_prototypes = 6
    cfg.swav.freeze_prototypes_steps = 1
    cfg.optim.base_lr = 0.1
    cfg.train.device = "cpu"
    cfg.train.max_steps = 6
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 3
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


@pytest.fixture
def tiny(tmp_path) -> Config:
    return tiny_config(tmp_path / "run")


@pytest.fixture(autouse=True)
def _single_thread_torch():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def slurm_marks() -> list:
    """pytestmark of the tests that submit to the local SLURM cluster."""
    from vice.launch.sweep.slurm import slurm_available

    reason = "no local SLURM cluster answers: start it with `bash slurm/local-cluster.sh up`"
    if os.environ.get("VICE_REQUIRE_SLURM") == "1" and not slurm_available():
        pytest.fail(f"VICE_REQUIRE_SLURM=1 (as in .ci/run) but {reason}", pytrace=False)
    return [
        pytest.mark.slurm,
        pytest.mark.slow,
        pytest.mark.skipif(not slurm_available(), reason=reason),
    ]


def wait_for(predicate, what: str, timeout_s: float, poll_s: float):
    """Poll ``predicate`` until it returns something truthy; fail (never hang) after ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


#: Seconds an ``mlflow server`` may take to answer its health check (minutes on 2 busy cores).
SERVER_START_S = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def mlflow_server_command(store_uri: str, folder: Path, port: int, *options: str) -> list[str]:
    """argv of an ``mlflow server`` on 127.0.0.1:``port``, one worker, artifacts in ``folder/artifacts``."""
    return [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        *options,
        "--backend-store-uri",
        store_uri,
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An ``mlflow server`` on 127.0.0.1 with its SQLite store and artifacts in ``tmp_path/server``.

    Yields ``("127.0.0.1:<port>", <server folder>)``.
    """
    folder = tmp_path / "server"
    folder.mkdir()
    port = _free_port()
    command = mlflow_server_command(f"sqlite:///{folder / 'mlflow.db'}", folder, port)
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), "mlflow server", SERVER_START_S, 1)
        yield f"127.0.0.1:{port}", folder
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        server.wait()


#: Names of a Chromium binary: Debian's package (``apt-get install chromium``), then others'.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The path of a Chromium binary on ``PATH``, or None."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def chromium_marks() -> list:
    """pytestmark of the tests that drive a real headless Chromium: skipped without one, except in CI
    (``VICE_REQUIRE_CHROMIUM=1``, set by ``.ci/run``, which installs Debian's ``chromium``)."""
    reason = "no Chromium on PATH: `apt-get install -y chromium` (as .ci/run does)"
    if os.environ.get("VICE_REQUIRE_CHROMIUM") == "1" and find_chromium() is None:
        pytest.fail(f"VICE_REQUIRE_CHROMIUM=1 (as in .ci/run) but {reason}", pytrace=False)
    return [pytest.mark.slow, pytest.mark.skipif(find_chromium() is None, reason=reason)]
