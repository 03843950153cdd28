"""A run's identity: the run key, a hash of its *semantic* config, and the run dir it names.

A job is identified by its ``run_key``, a hash of everything that changes what it computes, the seed
included; paths, worker counts and tracking settings are excluded (:data:`NON_SEMANTIC_KEYS`, the one
definition: ``analysis.cells`` builds the keys that must agree inside a table cell from it).
``vice-sweep`` gives every job the deterministic ``run_dir`` ``<output dir>/<experiment>/runs/<run_key>``,
so a requeued, preempted or re-submitted job finds its checkpoints and its MLflow run id there and
continues both instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vice.config import Config
from vice.launch.tracking.params import flatten_config

#: Experiments named ``<paper experiment>_smoke`` run on the synthetic scenes and are tagged ``smoke``.
SMOKE_SUFFIX = "_smoke"
#: Hex digits of the sha256 kept as the run key.
RUN_KEY_LENGTH = 16
#: Flattened config keys that do not change what a job computes: bookkeeping, paths, hardware,
#: logging and checkpoint cadence. Everything else, the seed included, goes into the run key.
NON_SEMANTIC_KEYS = frozenset(
    {
        "experiment",
        "run_dir",
        "data.root",
        "data.num_workers",
        "eval.root",
        "eval.batch_size",
        "eval.pictures",
        "eval.checkpoint",  # the job evaluates its own checkpoint; vice-eval alone reads it
        "regions.cache_dir",
        "train.device",
        "train.threads",
        "train.log_every",
        "train.checkpoint_every",
    }
)
#: Sections left out of the run key entirely: where a run is recorded is not what it computes.
NON_SEMANTIC_PREFIXES = ("tracking.",)
#: Default output dir (MLflow store, run dirs) relative to the working dir.
DEFAULT_OUTPUT_DIR = "outputs"
RUNS_DIR = "runs"


def is_semantic(key: str) -> bool:
    """True for a flattened config key that changes what a job computes (it enters the run key)."""
    return key not in NON_SEMANTIC_KEYS and not key.startswith(NON_SEMANTIC_PREFIXES)


def semantic_config(cfg: Config) -> dict[str, str]:
    """The flattened config that defines what a job computes (the input of :func:`compute_run_key`).

    ``model.pretrained`` enters by file name only, so moving the weights keeps the key.

    Returns:
        Dotted key -> MLflow param text, without :data:`NON_SEMANTIC_KEYS` and ``tracking.*``.
    """
    flat = {key: value for key, value in flatten_config(cfg).items() if is_semantic(key)}
    if cfg.model.pretrained is not None:
        flat["model.pretrained"] = Path(cfg.model.pretrained).name
    return flat


def compute_run_key(cfg: Config) -> str:
    """The job's identity: the first :data:`RUN_KEY_LENGTH` hex digits of sha256(semantic config)."""
    text = json.dumps(semantic_config(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_KEY_LENGTH]


def job_dir(output_dir: str | Path, experiment: str, run_key: str) -> Path:
    """The deterministic run dir of a job: ``<output_dir>/<experiment>/runs/<run_key>``."""
    return Path(output_dir) / experiment / RUNS_DIR / run_key


def is_smoke(experiment: str) -> bool:
    """True for a smoke experiment (``table3_decomposition_smoke``)."""
    return experiment.endswith(SMOKE_SUFFIX)
