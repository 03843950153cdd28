"""A run's identity: the run key, a hash of its *semantic* config, and the run dir it names.

A job is identified by its ``run_key``, a hash of everything that changes what it computes, the seed
and the world size (the LR scales with it) included; paths, worker counts and tracking settings are excluded (:data:`NON_SEMANTIC_KEYS`, the one
definition: ``analysis.cells`` builds the keys that must agree inside a table cell from it).
``vice-sweep`` gives every job the deterministic ``run_dir`` ``<output dir>/<experiment>/runs/<run_key>``,
so a requeued, preempted or re-submitted job finds its checkpoints and its MLflow run id there and
continues both instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from vice.config import Config
from vice.launch.tracking.names import SWEEP_IDS_TAG
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
#: The run key's entry for the number of ranks (it is no config key: the launcher sets it). A world size
#: of :data:`SINGLE_PROCESS` enters as nothing, so single-process keys stay those of earlier stores.
WORLD_SIZE_KEY = "world_size"
SINGLE_PROCESS = 1
#: Between the sweep ids of the ``sweep_ids`` tag.
SWEEP_ID_SEPARATOR = ","
#: Default output dir (MLflow store, run dirs) relative to the working dir.
DEFAULT_OUTPUT_DIR = "outputs"
RUNS_DIR = "runs"


def is_semantic(key: str) -> bool:
    """True for a flattened config key that changes what a job computes (it enters the run key)."""
    return key not in NON_SEMANTIC_KEYS and not key.startswith(NON_SEMANTIC_PREFIXES)


def semantic_config(cfg: Config, world_size: int = SINGLE_PROCESS) -> dict[str, str]:
    """Everything that defines what a job computes (the input of :func:`compute_run_key`).

    ``model.pretrained`` enters by file name only, so moving the weights keeps the key. The world size
    enters as :data:`WORLD_SIZE_KEY` unless it is :data:`SINGLE_PROCESS`: the LR scales with it
    (``vice.optim.scaled_lr``), and so does the global batch.

    Args:
        cfg: the job's config.
        world_size: the job's number of ranks (nodes x tasks per node of its launcher).

    Returns:
        Dotted key -> MLflow param text, without :data:`NON_SEMANTIC_KEYS` and ``tracking.*``.

    Raises:
        ValueError: ``world_size`` < 1.
    """
    if world_size < SINGLE_PROCESS:
        raise ValueError(f"world_size={world_size} must be >= 1 (nodes x tasks per node)")
    flat = {key: value for key, value in flatten_config(cfg).items() if is_semantic(key)}
    if cfg.model.pretrained is not None:
        flat["model.pretrained"] = Path(cfg.model.pretrained).name
    if world_size != SINGLE_PROCESS:
        flat[WORLD_SIZE_KEY] = str(world_size)
    return flat


def compute_run_key(cfg: Config, world_size: int = SINGLE_PROCESS) -> str:
    """The job's identity: the first :data:`RUN_KEY_LENGTH` hex digits of sha256(:func:`semantic_config`)."""
    text = json.dumps(semantic_config(cfg, world_size), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_KEY_LENGTH]


def sweep_ids_of(tags: Mapping[str, str]) -> list[str]:
    """Every sweep a run belonged to, oldest first: its ``sweep_ids`` tag, else its ``sweep_id`` tag.

    Runs logged before :data:`vice.launch.tracking.names.SWEEP_IDS_TAG` existed have only ``sweep_id``.
    """
    listed = [s for s in tags.get(SWEEP_IDS_TAG, "").split(SWEEP_ID_SEPARATOR) if s]
    last = tags.get("sweep_id")
    return listed if listed or not last else [last]


def join_sweep_ids(earlier: Sequence[str], sweep_id: str | None) -> str:
    """The ``sweep_ids`` tag of a run that belonged to ``earlier`` sweeps and now runs under ``sweep_id``."""
    ids = list(dict.fromkeys([*earlier, *([sweep_id] if sweep_id else [])]))
    return SWEEP_ID_SEPARATOR.join(ids)


def job_dir(output_dir: str | Path, experiment: str, run_key: str) -> Path:
    """The deterministic run dir of a job: ``<output_dir>/<experiment>/runs/<run_key>``."""
    return Path(output_dir) / experiment / RUNS_DIR / run_key


def is_smoke(experiment: str) -> bool:
    """True for a smoke experiment (``table3_decomposition_smoke``)."""
    return experiment.endswith(SMOKE_SUFFIX)
