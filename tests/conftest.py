import os

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
