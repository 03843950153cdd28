import inspect
import math
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_config

import vice.preemption as preemption_module
import vice.swav as swav_module
import vice.train as train_module
from vice.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from vice.model import build_model
from vice.train import train


class SignalAt:
    """A logger that sends this process a signal once `step` is logged (a preemption mid-run)."""

    def __init__(self, step: int, signum: int = signal.SIGUSR2) -> None:
        self.step, self.signum, self.metrics = step, signum, []

    def log_metrics(self, metrics, step):
        self.metrics.append((step, metrics))
        if step == self.step:
            os.kill(os.getpid(), self.signum)

    def log_params(self, params):
        pass

    def set_tags(self, tags):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def close(self, status):
        pass


def with_queue(cfg, queue_length: int = 0):
    """``cfg`` with a region queue that enters Sinkhorn from step 2 (0 keeps the queue off)."""
    cfg.swav.queue_length, cfg.swav.queue_start_step = queue_length, 2
    return cfg


@pytest.mark.parametrize("queue_length", [0, 64])
def test_checkpoint_resume_reproduces_the_uninterrupted_losses(tmp_path, queue_length):
    full = train(with_queue(tiny_config(tmp_path / "full"), queue_length))
    assert full.steps == 6 and len(full.losses) == 6

    cfg = with_queue(tiny_config(tmp_path / "cut", checkpoint_every=100), queue_length)
    with pytest.raises(SystemExit) as stopped:
        train(cfg, logger=SignalAt(step=4))
    assert stopped.value.code == 128 + signal.SIGUSR2
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["step_00000004.pt"]

    if queue_length:
        assert int(load_checkpoint(list_checkpoints(cfg.run_dir)[0])["queue"]["filled"]) > 0
    resumed = train(cfg)
    assert resumed.resumed_from == 4
    torch.testing.assert_close(
        torch.tensor(resumed.losses), torch.tensor(full.losses[4:]), rtol=1e-5, atol=1e-6
    )
    for a, b in zip(resumed.embedder.state_dict().values(), full.embedder.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_prototypes_stay_frozen_and_the_queue_stays_out_until_their_steps(tiny, monkeypatch):
    real, seen = swav_module.swav_region_loss, []

    def spy(means, prototypes, *args, **kwargs):
        queue = inspect.signature(real).bind(means, prototypes, *args, **kwargs).arguments.get("queue")
        seen.append((None if queue is None else queue.shape[0], prototypes.weight.detach().clone()))
        return real(means, prototypes, *args, **kwargs)

    monkeypatch.setattr(swav_module, "swav_region_loss", spy)
    tiny.swav.queue_length, tiny.swav.queue_start_step, tiny.swav.freeze_prototypes_steps = 64, 2, 3
    tiny.optim.lars_trust, tiny.optim.base_lr = 0.0, 0.5  # plain SGD: an unfrozen step moves them visibly
    train(tiny)
    queued = [q for q, _ in seen]
    assert queued[:2] == [None, None] and all(q is not None and q > 0 for q in queued[2:])
    assert queued[2] < queued[3]  # the queue fills with each step's view-0 regions
    weights = [w for _, w in seen]  # the prototypes each step starts from
    for step in (1, 2, 3):  # steps 0..2 are frozen: only the unit-norm projection touches them
        torch.testing.assert_close(weights[step], weights[0], rtol=0, atol=1e-6)
    assert (weights[4] - weights[3]).abs().max() > 1e-3  # step 3 trains them


def test_finished_run_is_not_retrained(tiny):
    first = train(tiny)
    again = train(tiny)
    assert again.resumed_from == first.steps == 6
    assert again.losses == []
    from vice.launch.cli import train_summary

    assert train_summary(again).startswith("already finished at step 6: nothing to train")
    assert train_summary(first).startswith(f"trained steps 1..6; loss {first.losses[0]:.3f} -> ")


def test_non_finite_weights_are_never_checkpointed(tiny):
    from vice.train import build_regional_swav, check_finite_weights

    model, _ = build_regional_swav(tiny)
    check_finite_weights(model, 3)  # finite: no error
    with torch.no_grad():
        model.prototypes.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"parameter prototypes\.weight is not finite after step 3"):
        check_finite_weights(model, 3)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tiny, monkeypatch):
    real = swav_module.swav_region_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, codes = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), codes) if calls["n"] == 5 else (loss, codes)

    monkeypatch.setattr(swav_module, "swav_region_loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 4.*step_00000003\.pt"):
        train(tiny)
    assert load_checkpoint(list_checkpoints(tiny.run_dir)[-1])["step"] == 3


def test_atomic_save_leaves_the_previous_checkpoint_when_writing_fails(tmp_path):
    save_checkpoint(tmp_path, 1, {"step": 1, "w": torch.ones(2)})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path, 2, {"step": 2, "bad": Unpicklable()})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001.pt"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.suffix == ".tmp"]
    assert load_checkpoint(list_checkpoints(tmp_path)[0])["step"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_rank_of_two(rank: int, port: int) -> None:
    """Set the torchrun variables of ``rank`` in a 2-process job on this host; one torch thread each."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE="2",
    )
    torch.set_num_threads(1)


def _ddp_worker(rank: int, port: int, run_dir: str, out: str) -> None:
    _as_rank_of_two(rank, port)
    cfg = tiny_config(run_dir, max_steps=2, checkpoint_every=2)
    result = train(cfg)
    params = {k: v.detach().clone() for k, v in result.embedder.named_parameters()}
    torch.save(params, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_keeps_ranks_in_sync(tmp_path):
    mp.start_processes(
        _ddp_worker, args=(_free_port(), str(tmp_path / "run"), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    start = tiny_config(tmp_path / "unused")
    torch.manual_seed(start.seed)
    initial = dict(build_model(start.model).named_parameters())
    assert not torch.equal(a["head.weight"], initial["head.weight"])  # the ranks did train
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # Only rank 0 writes checkpoints.
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000002.pt"]


def _rank1_trouble_worker(rank: int, port: int, run_dir: str, out: str, trouble: str) -> None:
    """Rank 1 alone gets a NaN loss (``nan``) or SIGUSR2 (``signal``) during its second step."""
    _as_rank_of_two(rank, port)
    preemption_module.SIGNAL_WAIT_S = 0.2
    real, calls = swav_module.swav_region_loss, {"n": 0}

    def troubled(*args, **kwargs):
        loss, codes = real(*args, **kwargs)
        calls["n"] += 1
        if rank == 1 and calls["n"] == 2:
            if trouble == "nan":
                return loss * float("nan"), codes
            os.kill(os.getpid(), signal.SIGUSR2)
        return loss, codes

    swav_module.swav_region_loss = troubled
    try:
        train(tiny_config(run_dir, max_steps=6, checkpoint_every=1))
        outcome = "finished"
    except FloatingPointError as err:
        outcome = f"FloatingPointError: {err}"
    except SystemExit as err:
        outcome = f"SystemExit {err.code}"
    (Path(out) / f"rank{rank}.txt").write_text(outcome)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("trouble", ["nan", "signal"])
def test_trouble_on_one_rank_stops_both_ranks_at_the_same_step(tmp_path, trouble):
    """Without agreeing, rank 0 would wait forever in the gradient all-reduce of the next step."""
    mp.start_processes(
        _rank1_trouble_worker,
        args=(_free_port(), str(tmp_path / "run"), str(tmp_path), trouble),
        nprocs=2,
        start_method="spawn",
    )
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    if trouble == "nan":
        assert all(o.startswith("FloatingPointError: loss is nan at step 1") for o in outcomes), outcomes
        assert outcomes[0].endswith("Lower optim.base_lr or swav.sinkhorn_epsilon.")
        assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["step"] == 1
    else:
        # rank 1 got the signal; rank 0 stops with it, waits for its own, then exits as on SIGTERM
        assert outcomes == [f"SystemExit {128 + signal.SIGTERM}", f"SystemExit {128 + signal.SIGUSR2}"]
        assert [p.name for p in list_checkpoints(tmp_path / "run")][-1] == "step_00000002.pt"


def _sinkhorn_worker(rank: int, port: int, out: str) -> None:
    from vice.sinkhorn import sinkhorn

    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    scores = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    torch.save(sinkhorn(scores[rank * 5 : (rank + 1) * 5], 0.1, 3), f"{out}/q{rank}.pt")
    torch.distributed.destroy_process_group()


def test_sinkhorn_under_ddp_equals_sinkhorn_on_the_global_batch(tmp_path):
    from vice.sinkhorn import sinkhorn

    mp.start_processes(_sinkhorn_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    together = torch.cat([torch.load(tmp_path / "q0.pt"), torch.load(tmp_path / "q1.pt")])
    scores = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(together, sinkhorn(scores, 0.1, 3))
    assert not torch.allclose(together[:5], sinkhorn(scores[:5], 0.1, 3))


def test_load_for_eval_returns_the_trained_embedder(tiny):
    from vice.checkpoint import load_for_eval

    result = train(tiny)
    model, cfg = load_for_eval(tiny.run_dir)
    assert cfg.model == tiny.model and not model.training
    for (name, a), b in zip(model.state_dict().items(), result.embedder.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.slow
def test_200_cpu_steps_lower_the_loss_clearly_below_log_k(tmp_path):
    import math

    cfg = tiny_config(tmp_path / "run", max_steps=200, log_every=50, checkpoint_every=1000, threads=2)
    cfg.data.image_size, cfg.data.num_images, cfg.data.batch_size = [128, 160], 256, 4
    cfg.regions.method, cfg.regions.region_size = "slic", 24
    cfg.views.view_size = 64
    cfg.model.decoder_channels, cfg.model.embed_dim = 32, 32
    cfg.swav.num_prototypes, cfg.swav.freeze_prototypes_steps = 24, 20
    cfg.optim.base_lr, cfg.optim.warmup_steps = 0.4, 20
    losses = train(cfg).losses
    log_k = math.log(cfg.swav.num_prototypes)
    start, end = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    print(f"loss {start:.3f} -> {end:.3f}, ln K = {log_k:.3f}")
    assert end < 0.95 * log_k  # below the uniform-prediction (collapse) level
    assert end < start - 0.5


def test_health_metrics_are_logged_every_log_step(tmp_path):
    logger = SignalAt(step=-1)  # records metrics, never signals
    cfg = tiny_config(tmp_path / "run")
    cfg.train.log_every = 2
    result = train(cfg, logger=logger)
    logged = {step: m for step, m in logger.metrics if "train/loss" in m}
    assert sorted(logged) == [2, 4, 6]
    k = cfg.swav.num_prototypes
    for step, m in logged.items():
        assert m["train/loss"] == result.losses[step - 1]
        assert m["train/loss_ratio"] == pytest.approx(result.losses[step - 1] / math.log(k), rel=1e-12)
        assert 1 / k - 1e-6 <= m["train/prototype_usage"] <= 1 + 1e-6
        assert 0 <= m["train/code_entropy"] <= 1 + 1e-6
        assert 0 < m["train/embedding_std"] < 2


def test_usage_collapse_is_warned_once(caplog):
    metrics = {"train/prototype_usage": 0.2}
    with caplog.at_level("WARNING", logger="vice.train"):
        assert train_module.warn_collapse(metrics, 10, warned=False) is True
        assert train_module.warn_collapse(metrics, 20, warned=True) is True
        assert train_module.warn_collapse({"train/prototype_usage": 0.9}, 30, warned=False) is False
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "0.20 of K at step 10" in warnings[0]
