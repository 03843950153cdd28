"""The evaluation harness: datasets, checkpoints and settings taken from a :class:`~vice.config.Config`.

``vice-eval`` (:mod:`vice.launch.cli`) calls :func:`run_eval`: ``vice-eval experiment=demo`` (or any
``run_dir=...``) evaluates the newest checkpoint in
``run_dir/checkpoints`` on ``eval.dataset`` (default: ``data.name``) and writes ``metrics.json`` and the
pictures to ``run_dir/eval``. ``eval.checkpoint`` picks another checkpoint (a ``.pt`` file or a run dir),
or ``random`` for the network of ``model.*`` at random init; a run dir without a checkpoint is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate
from torch import nn

from vice.config import RANDOM_CHECKPOINT, Config
from vice.data.labelled import LabelledDataset, build_labelled_dataset
from vice.evaluate.embed import Decomposer
from vice.evaluate.run import MODEL_PREFIX, RANDOM_PREFIX, RGB_PREFIX, eval_tags, evaluate, gains_over_random

log = logging.getLogger(__name__)

#: Sub-folder of ``run_dir`` that receives ``metrics.json`` and the pictures.
EVAL_DIR = "eval"
PIPELINE_NAMES = {MODEL_PREFIX: "model", RANDOM_PREFIX: "random init", RGB_PREFIX: "raw colours"}


def eval_datasets(cfg: Config) -> tuple[LabelledDataset, LabelledDataset]:
    """The (train, val) labelled datasets named by ``eval.dataset``/``eval.root`` (default: ``data.*``)."""
    name = cfg.eval.dataset or cfg.data.name
    root = cfg.eval.root or cfg.data.root
    train_set, eval_set = (
        build_labelled_dataset(
            name,
            root,
            split,
            cfg.data.split_set,
            num_images=cfg.data.num_images,
            image_size=cfg.data.image_size,
        )
        for split in ("train", "val")
    )
    return train_set, eval_set


def eval_decomposer(cfg: Config) -> Decomposer | None:
    """The superpixel decomposition of ``regions.*`` when ``eval.superpixel_pool`` is on, else None."""
    if not cfg.eval.superpixel_pool:
        return None
    from vice.data.regions import decompose

    return functools.partial(decompose, cfg=cfg.regions)


def evaluate_model(
    cfg: Config,
    model: nn.Module | Path,
    train_set: LabelledDataset,
    eval_set: LabelledDataset,
    out_dir: Path | None,
) -> dict[str, float]:
    """Run :func:`vice.evaluate.run.evaluate` with every setting taken from ``cfg``."""
    from vice.dist import resolve_device

    return evaluate(
        model,
        cfg.eval,
        train_set,
        eval_set,
        model_cfg=cfg.model,
        decompose=eval_decomposer(cfg),
        device=resolve_device(cfg.train.device),
        out_dir=out_dir,
        seed=cfg.seed,
        split_set=cfg.data.split_set,
        mapping_fit_set=cfg.eval.mapping_fit_set,
        pad=cfg.eval.reflect_pad,
        probe_batch_pixels=cfg.eval.probe_batch_pixels,
        amp=cfg.train.amp,
        num_workers=cfg.data.num_workers,
    )


def build_evaluator(
    cfg: Config, out_dir: str | Path | None = None
) -> Callable[[nn.Module, int], dict[str, float]]:
    """An ``(embedder, step) -> metrics`` hook for the trainer's intermediate and final evaluations.

    The datasets are built once; the embedder's train/eval mode is restored after each call. The floors
    (``eval.baselines``: random init, raw colours) do not change during training: the first call
    computes them, and every call reports them with the model's gain over random init
    (``eval/gain_*``), so an intermediate evaluation already shows whether the run learns.
    """
    train_set, eval_set = eval_datasets(cfg)
    without_floors = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, baselines=False))
    floors: dict[str, float] = {}

    def evaluator(embedder: nn.Module, step: int) -> dict[str, float]:
        was_training = embedder.training
        step_dir = None if out_dir is None else Path(out_dir) / f"step_{step:08d}"
        step_cfg = without_floors if floors or not cfg.eval.baselines else cfg
        metrics = evaluate_model(step_cfg, embedder, train_set, eval_set, step_dir)
        embedder.train(was_training)
        if cfg.eval.baselines and not floors:
            floors.update({k: v for k, v in metrics.items() if k.startswith("eval/baseline_")})
        metrics.update(floors)
        metrics.update(gains_over_random(metrics))
        return metrics

    return evaluator


def format_table(metrics: dict[str, float]) -> str:
    """The metrics as a table: one row per pipeline (model, random init, raw colours), percent values."""
    rows: dict[str, dict[str, str]] = {}
    for prefix in (RANDOM_PREFIX, RGB_PREFIX, MODEL_PREFIX):
        stems = {
            key[len(f"eval/{prefix}") :]: value
            for key, value in metrics.items()
            if key.startswith(f"eval/{prefix}")
            and key.endswith(("_miou", "_acc"))
            and (prefix or not key.startswith("eval/baseline_"))
        }
        if stems:
            rows[PIPELINE_NAMES[prefix]] = {stem: f"{100 * value:.2f}" for stem, value in stems.items()}
    columns = list(dict.fromkeys(stem for row in rows.values() for stem in row))
    table = [[name, *(row.get(column, "-") for column in columns)] for name, row in rows.items()]
    return tabulate(table, headers=["", *columns], disable_numparse=True)


def resolve_checkpoint(checkpoint: str | None, run_dir: str | Path) -> Path | None:
    """The checkpoint file ``eval.checkpoint`` names: None for random init.

    Args:
        checkpoint: None (the newest checkpoint of ``run_dir``), a ``.pt`` file, a run dir (its newest
            checkpoint), or ``random``.
        run_dir: the run dir searched when ``checkpoint`` is None.

    Raises:
        FileNotFoundError: the run dir searched holds no checkpoint.
    """
    from vice.checkpoint import CHECKPOINT_DIR, list_checkpoints

    if checkpoint == RANDOM_CHECKPOINT:
        return None
    source = Path(run_dir if checkpoint is None else checkpoint)
    if source.is_file():
        return source
    found = list_checkpoints(source)
    if not found:
        raise FileNotFoundError(
            f"no checkpoint in {source / CHECKPOINT_DIR}: train first, set run_dir to a trained run, "
            f"point eval.checkpoint at a .pt file or run dir, or set eval.checkpoint={RANDOM_CHECKPOINT} to "
            "evaluate the network at random init"
        )
    return found[-1]


def run_eval(cfg: Config) -> dict[str, float]:
    """Evaluate the checkpoint ``eval.checkpoint`` names (default: the newest of ``cfg.run_dir``)."""
    import faiss
    import torch

    from vice.evaluate.run import build_random_init

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
        faiss.omp_set_num_threads(cfg.train.threads)
    checkpoint = resolve_checkpoint(cfg.eval.checkpoint, cfg.run_dir)
    train_set, eval_set = eval_datasets(cfg)
    model: nn.Module | Path
    if checkpoint is None:
        log.warning(
            "eval.checkpoint=%s: the 'model' row is the network of model.* at random init (seed %d)",
            RANDOM_CHECKPOINT,
            cfg.seed,
        )
        model = build_random_init(cfg.model, cfg.seed)
    else:
        log.info("evaluating %s", checkpoint)
        model = checkpoint
    out_dir = Path(cfg.run_dir) / EVAL_DIR
    metrics = evaluate_model(cfg, model, train_set, eval_set, out_dir)
    tags = eval_tags(cfg.eval, eval_set.name, cfg.data.split_set, cfg.eval.mapping_fit_set)
    print(", ".join(f"{key}={value}" for key, value in tags.items()))
    print(f"model: {checkpoint or f'random init (eval.checkpoint={RANDOM_CHECKPOINT})'}")
    print(format_table(metrics))
    print(f"metrics and pictures in {out_dir}")
    return metrics
