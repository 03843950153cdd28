"""``vice-tables`` (and ``python -m analysis``): the command line over the tables, figures, claims and comparisons.

It sits on top of :mod:`analysis`: :mod:`analysis.tables`, :mod:`analysis.claims`, :mod:`analysis.compare`
and :mod:`analysis.summary` never import it, so the imports point one way.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.cells import MixedCellError
from analysis.claims import write_claims
from analysis.compare import write_comparison
from analysis.runs import StoreError, check_store, list_experiments
from analysis.summary import parent_run_page, summarize_sweep
from analysis.tables import KNOWN_EXPERIMENTS, write_experiment
from vice.redact import redact_uri


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vice-tables",
        description="Regenerate the paper's tables and figures from MLflow runs (ours beside the paper's).",
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI, e.g. sqlite:////abs/path/mlflow.db (default: $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--experiment",
        action="append",
        dest="experiments",
        help="MLflow experiment to regenerate (repeatable; default: every paper experiment in the store)",
    )
    parser.add_argument("--sweep-id", help="only runs of this sweep id")
    parser.add_argument("--git-commit", help="only runs at this git commit (a prefix works)")
    parser.add_argument("--compare", action="store_true", help="show paper | ours | Δ columns")
    parser.add_argument("--out", type=Path, default=Path("outputs/tables"), help="where files are written")
    parser.add_argument(
        "--format",
        choices=("markdown", "latex", "csv"),
        default="markdown",
        help="what is printed; with latex and csv stdout holds only the tables (the file paths go to stderr)",
    )
    parser.add_argument(
        "--claims",
        action="store_true",
        help="test the paper's claims over the seeds (verdict, Welch 95%% interval); print that report",
    )
    parser.add_argument(
        "--compare-sweeps",
        nargs=2,
        metavar=("A", "B"),
        help="put two sweeps of each experiment side by side: per-cell Δ = B - A, settings that differ",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``vice-tables``: print each experiment's table, write Markdown/LaTeX/CSV and figures, print paths."""
    args = _parser().parse_args(argv)
    if not args.tracking_uri:
        print("vice-tables: no tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI", file=sys.stderr)
        return 2
    try:
        check_store(args.tracking_uri)
    except StoreError as error:
        print(f"vice-tables: {error}", file=sys.stderr)
        return 2
    names = args.experiments or [
        n for n in list_experiments(args.tracking_uri) if any(k in n for k in KNOWN_EXPERIMENTS)
    ]
    if not names:
        print(f"vice-tables: no paper experiment in {redact_uri(args.tracking_uri)}", file=sys.stderr)
        return 1
    if args.compare_sweeps:
        return _compare_sweeps(args.tracking_uri, names, tuple(args.compare_sweeps), args.out)
    status = 0
    for name in names:
        try:
            outputs = write_experiment(
                args.tracking_uri,
                name,
                args.out,
                sweep_id=args.sweep_id,
                git_commit=args.git_commit,
                compare=args.compare,
            )
            extra = _reports(args.tracking_uri, name, args.out, args.sweep_id, args.git_commit, args.claims)
        except (LookupError, KeyError, MixedCellError) as error:
            print(f"vice-tables: {name}: {error}", file=sys.stderr)
            status = 1
            continue
        printed = {"markdown": 0, "latex": 1, "csv": 2}[args.format]
        notes = sys.stdout if args.format == "markdown" else sys.stderr  # LaTeX and CSV: only the table
        print(extra.text or outputs.files[printed].read_text(encoding="utf-8"))
        print(f"files: {' '.join(str(p) for p in (*outputs.files, *extra.files))}", file=notes)
        print(f"figure: {outputs.figure}", file=notes)
        for note in extra.notes:
            print(note, file=notes)
        print()
    return status


@dataclasses.dataclass(frozen=True)
class _Reports:
    text: str
    files: tuple[Path, ...]
    notes: tuple[str, ...]


def _reports(
    tracking_uri: str, name: str, out: Path, sweep_id: str | None, git_commit: str | None, claims: bool
) -> _Reports:
    """The claims report (``--claims``) and, for one sweep, its parent run's summary."""

    text, notes = "", []
    files: tuple[Path, ...] = ()
    if claims:
        report = write_claims(tracking_uri, name, out, sweep_id=sweep_id, git_commit=git_commit)
        text, files = report.markdown, report.files
    if sweep_id is not None:
        parent = summarize_sweep(tracking_uri, name, sweep_id, out)
        notes.append(
            f"parent run: {parent}, {parent_run_page(tracking_uri, name, parent)}"
            if parent
            else f"sweep {sweep_id} has no parent run to summarize"
        )
    return _Reports(text, files, tuple(notes))


def _compare_sweeps(tracking_uri: str, names: Sequence[str], sweeps: tuple[str, str], out: Path) -> int:

    status = 0
    for name in names:
        try:
            outputs = write_comparison(tracking_uri, name, sweeps, out)
        except (LookupError, KeyError, MixedCellError) as error:
            print(f"vice-tables: {name}: {error}", file=sys.stderr)
            status = 1
            continue
        print(outputs.markdown)
        print(f"files: {' '.join(str(p) for p in outputs.files)}")
        print()
    return status
