"""``python -m benchmarks``: measure every section, write JSON + Markdown, print the table.

Examples::

    python -m benchmarks                          # every section on CUDA if available, else CPU
    python -m benchmarks --device cpu --only pooling
    python -m benchmarks --quick                  # tiny shapes: checks that the benchmark runs
    python -m benchmarks --only learning          # does training learn? (python -m benchmarks.learning)
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import faiss
import torch

from benchmarks.evaluation import run_evaluation
from benchmarks.pipeline import run_pipeline
from benchmarks.pooling import run_pooling
from benchmarks.report import render_markdown
from benchmarks.scaling import run_scaling
from benchmarks.targets import evaluate_targets
from benchmarks.timing import load_average, machine, slug
from benchmarks.training import run_training
from vice.dist import resolve_device

log = logging.getLogger("benchmarks")

#: Section name -> runner(device, quick, workers); the order is the report's.
SECTIONS: dict[str, Callable[[torch.device, bool, int | None], dict[str, Any]]] = {
    "training": run_training,
    "pooling": lambda device, quick, workers: run_pooling(device, quick),
    "data": lambda device, quick, workers: run_pipeline(device, quick),
    "evaluation": lambda device, quick, workers: run_evaluation(device, quick),
    "scaling": lambda device, quick, workers: run_scaling(device, quick),
}
RESULTS_ROOT = Path(__file__).resolve().parent / "results"
#: The learning benchmark (:mod:`benchmarks.learning`): a section of its own, run only when asked for.
LEARNING = "learning"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny shapes (tests, CI); the numbers mean nothing"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=(*SECTIONS, LEARNING),
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}; or {LEARNING} alone "
        "(3 seeds of training on the real-photograph dev set, about 30 minutes on 2 cores)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default benchmarks/results/<device>)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="training loader workers (default 1 on CPU, <= 8 on CUDA)"
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="recompute the targets and the Markdown of an earlier run's JSON (next to it), run nothing",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch and FAISS CPU threads (0 = their defaults)"
    )
    return parser.parse_args(argv)


def run_benchmarks(
    device: torch.device,
    quick: bool,
    sections: list[str],
    workers: int | None = None,
    command: str = "",
    on_section: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``sections`` in report order; return the results with ``meta`` and ``targets``.

    ``on_section`` gets the results so far (with their targets) after every section, so that a run cut
    short (a lent GPU's time limit) keeps what it measured.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}: choose from {list(SECTIONS)}")
    torch.manual_seed(0)
    # The training section forks DataLoader workers whose init calls cv2.setNumThreads(1). If this
    # process had used OpenCV's thread pool before the fork (it renders and decomposes the benchmark's
    # images), that call deadlocks in the child. One OpenCV thread here keeps the pool empty.
    cv2.setNumThreads(1)
    meta = {
        **machine(device),
        "command": command,
        "quick": quick,
        "sections": [s for s in SECTIONS if s in sections],
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "opencv_threads_main_process": cv2.getNumThreads(),
        "load_average": {"start": load_average()},
        "section_seconds": {},
    }
    results: dict[str, Any] = {"meta": meta}
    for name in meta["sections"]:
        log.info("section %s on %s (load average %s)", name, device, load_average())
        start = time.perf_counter()
        results[name] = SECTIONS[name](device, quick, workers)
        meta["section_seconds"][name] = round(time.perf_counter() - start, 1)
        meta["load_average"][f"after_{name}"] = load_average()
        if on_section is not None:
            on_section({**results, "targets": [t.to_dict() for t in evaluate_targets(results)]})
    meta["load_average"]["end"] = load_average()
    results["targets"] = [t.to_dict() for t in evaluate_targets(results)]
    return results


def write_results(results: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(render_markdown(results))
    return json_path, md_path


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        results["targets"] = [t.to_dict() for t in evaluate_targets(results)]
        write_results(results, args.render.parent, args.render.stem)
        print(render_markdown(results))
        return
    if args.only and LEARNING in args.only:
        if len(args.only) > 1:
            raise SystemExit(f"--only {LEARNING} runs alone: it trains models, the other sections time code")
        from benchmarks.learning import main as learning_main

        learning_main(["--out", str(args.out or RESULTS_ROOT / LEARNING)])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except RuntimeError as err:
        raise SystemExit(str(err)) from err
    sections = args.only or list(SECTIONS)
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    out_dir = args.out or RESULTS_ROOT / slug(machine(device)["device_name"])
    stem = "benchmark" + ("-quick" if args.quick else "") + ("-" + "-".join(args.only) if args.only else "")
    results = run_benchmarks(
        device,
        args.quick,
        sections,
        args.workers,
        command.strip(),
        on_section=lambda partial: write_results(partial, out_dir, stem),  # kept if the run is cut short
    )
    json_path, md_path = write_results(results, out_dir, stem)
    print(render_markdown(results))
    log.info("wrote %s and %s", json_path, md_path)


if __name__ == "__main__":
    main()
