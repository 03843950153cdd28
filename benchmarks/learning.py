"""Does training learn? N seeds on the real-photograph dev set, against random init and raw colours.

``python -m benchmarks.learning --seeds 3`` (or ``python -m benchmarks --only learning``) trains the
CPU recipe ``experiment=photos`` for its fixed step budget on the dev set of :mod:`benchmarks.devset`,
evaluates every seed's model and both floors in the same harness, and writes ``learning.md`` and
``learning.json``: mean ± std over seeds of the linear probe, C = classes (Hungarian) and
C = 4 x classes (majority), each with its gain over the same network at random init.

Extra arguments are Hydra overrides of the recipe, e.g. ``swav.queue_length=0 optim.base_lr=0.5``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from benchmarks.devset import MATERIALS, DevsetSpec, generate
from vice.config import Config, register_schema, to_config, validate
from vice.evaluate.harness import eval_datasets, evaluate_model
from vice.evaluate.run import MODEL_PREFIX, RANDOM_PREFIX, RGB_PREFIX
from vice.launch.app import SWEEPS_DIR
from vice.train import train

log = logging.getLogger("benchmarks.learning")

RECIPE = "photos"
NUM_MATERIALS = len(MATERIALS)
#: Over-clustering: C = 4 x classes, mapped many-to-one by majority.
OVER_CLUSTERS = 4 * NUM_MATERIALS
#: Reported metric -> the metric name's stem after ``eval/<prefix>``.
METRICS = {
    "linear probe": "linear_miou",
    f"C = {OVER_CLUSTERS} majority": f"cluster{OVER_CLUSTERS}_majority_miou",
    f"C = {NUM_MATERIALS} Hungarian": f"cluster{NUM_MATERIALS}_hungarian_miou",
}
PIPELINES = {"model": MODEL_PREFIX, "random init": RANDOM_PREFIX, "raw colours": RGB_PREFIX}
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "learning"


def recipe_config(devset: Path, run_dir: Path, seed: int, overrides: Sequence[str] = ()) -> Config:
    """``experiment=photos`` on the dev set at ``devset``, for one seed, plus ``overrides``."""
    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="learning"):
        raw = compose(
            "config",
            overrides=[
                f"experiment={RECIPE}",
                f"data.root={devset / 'images' / 'train'}",
                f"eval.root={devset}",
                f"run_dir={run_dir}",
                f"regions.cache_dir={run_dir.parent / 'regions'}",
                f"seed={seed}",
                "train.device=cpu",
                *overrides,
            ],
        )
    cfg = to_config(raw)
    validate(cfg)
    return replace(cfg, eval=replace(cfg.eval, num_clusters=[NUM_MATERIALS, OVER_CLUSTERS], baselines=True))


def run_seed(cfg: Config) -> dict[str, float]:
    """Train ``cfg`` from scratch (its run dir is reused only if it finished) and evaluate it with the floors."""
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    train_set, eval_set = eval_datasets(cfg)
    metrics = evaluate_model(cfg, result.embedder, train_set, eval_set, Path(cfg.run_dir) / "eval")
    tail = result.losses[-20:]
    metrics["train/seconds"] = seconds
    metrics["train/steps"] = float(result.steps)
    metrics["train/final_loss"] = sum(tail) / len(tail) if tail else float("nan")
    return metrics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(per_seed: Sequence[dict[str, float]]) -> dict[str, dict[str, list[float]]]:
    """Per pipeline and metric, the per-seed values in percent; plus the model's gain over random init."""
    table: dict[str, dict[str, list[float]]] = {}
    for pipeline, prefix in PIPELINES.items():
        table[pipeline] = {
            label: [100 * m[f"eval/{prefix}{stem}"] for m in per_seed] for label, stem in METRICS.items()
        }
    table["gain over random init"] = {
        label: [a - b for a, b in zip(table["model"][label], table["random init"][label], strict=True)]
        for label in METRICS
    }
    return table


def render(table: dict[str, dict[str, list[float]]], seeds: Sequence[int], note: str) -> str:
    """The Markdown table: mean ± std (percent mIoU) over ``seeds``."""
    lines = [
        f"| {note} | " + " | ".join(METRICS) + " |",
        "| --- | " + " | ".join("---:" for _ in METRICS) + " |",
    ]
    for pipeline, row in table.items():
        cells = []
        for label in METRICS:
            mean, std = mean_std(row[label])
            sign = "+" if pipeline.startswith("gain") and mean >= 0 else ""
            cells.append(f"{sign}{mean:.1f} ± {std:.1f}")
        lines.append(f"| {pipeline} | " + " | ".join(cells) + " |")
    lines.append(f"\nmIoU in %, mean ± std over seeds {list(seeds)}.")
    return "\n".join(lines) + "\n"


def run_learning(
    seeds: Sequence[int], overrides: Sequence[str], work_dir: Path, out_dir: Path, spec: DevsetSpec
) -> dict[str, Any]:
    """Generate the dev set, train and evaluate every seed, write ``learning.{json,md}`` into ``out_dir``."""
    devset = generate(work_dir / "devset", spec)
    per_seed, configs = [], []
    for seed in seeds:
        cfg = recipe_config(devset, work_dir / f"seed{seed}", seed, overrides)
        log.info(
            "seed %d: %d steps of experiment=%s %s", seed, cfg.train.max_steps, RECIPE, " ".join(overrides)
        )
        metrics = run_seed(cfg)
        per_seed.append(metrics)
        configs.append(cfg)
        log.info(
            "seed %d: %.0f s, linear %.3f (random init %.3f)",
            seed,
            metrics["train/seconds"],
            metrics["eval/linear_miou"],
            metrics[f"eval/{RANDOM_PREFIX}linear_miou"],
        )
    table = summarize(per_seed)
    seconds = [m["train/seconds"] for m in per_seed]
    note = f"{RECIPE}, {configs[0].train.max_steps} steps ({statistics.fmean(seconds) / 60:.1f} min)"
    markdown = render(table, seeds, note)
    results = {
        "recipe": RECIPE,
        "overrides": list(overrides),
        "seeds": list(seeds),
        "devset": {**vars(spec), "classes": list(MATERIALS)},
        "table": table,
        "per_seed": per_seed,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "learning.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "learning.md").write_text(markdown)
    return results


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.learning [--seeds N] [override ...]``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument(
        "--work-dir", type=Path, default=Path("outputs/learning"), help="dev set and run dirs"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where learning.{md,json} go")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of experiment=photos")
    args = parser.parse_args(argv)
    results = run_learning(range(args.seeds), args.overrides, args.work_dir, args.out, DevsetSpec())
    print((args.out / "learning.md").read_text(), end="")
    del results


if __name__ == "__main__":
    main()
