"""The issue's targets as ratios (they hold on any machine), evaluated from a results dictionary."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Table 7, ms per high-res batch on 32 V100 (forward, loss, backward, optimizer).
PAPER_STEP_MS = {"forward": 429.0, "loss": 166.0, "backward": 4167.0, "optimizer": 43.0}
#: Table 7's stated total (the phases sum to 4,805; VISSL's total includes what the phases leave out).
PAPER_STEP_TOTAL_MS = 4824.0
#: Table 8, ms per high-res image (segmentation model, cluster model, linear model).
PAPER_INFERENCE_MS = {"embedding": 57.0, "cluster": 2395.0, "linear": 15.0}
#: A V100 node: 4 GPUs (the paper: 32 GPUs over 8 nodes) and ~40 CPU cores, so ~10 cores per GPU,
#: of which 8 can run DataLoader workers beside the training process.
V100_NODE_WORKERS_PER_GPU = 8
#: Step time grows linearly in pixels (slope 1); this allows for fit noise.
MAX_SCALING_SLOPE = 1.1


@dataclass(frozen=True)
class Target:
    """One target: a measured ratio against its threshold.

    Attributes:
        key: stable identifier (``backward_over_forward/r50_dlv3p_highres``).
        description: what is compared.
        threshold: the bound.
        higher_is_better: ``measured >= threshold`` is met, else ``measured <= threshold``.
        measured: the ratio measured here, None when its section was not run.
        paper: the paper's value of the same ratio, if it has one.
        note: how the measured value was obtained (shapes, extrapolation, assumptions).
    """

    key: str
    description: str
    threshold: float
    higher_is_better: bool
    measured: float | None
    paper: float | None
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the measured value satisfies the bound (None when not measured)."""
        if self.measured is None:
            return None
        return self.measured >= self.threshold if self.higher_is_better else self.measured <= self.threshold

    @property
    def goal(self) -> str:
        """The bound as text, e.g. ``<= 2.5``."""
        return f"{'>=' if self.higher_is_better else '<='} {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with ``met`` and ``goal``."""
        return {**asdict(self), "met": self.met, "goal": self.goal}


def _training_targets(training: dict[str, Any], device: str) -> list[Target]:
    targets = []
    for name, config in training["configs"].items():
        shape = f"{config['batch_size']}x{config['num_views']} views at {config['view_size']} px on {device}"
        targets.append(
            Target(
                f"backward_over_forward/{name}",
                f"backward / forward, {name}",
                2.5,
                False,
                config["backward_over_forward"],
                PAPER_STEP_MS["backward"] / PAPER_STEP_MS["forward"],
                shape,
            )
        )
        targets.append(
            Target(
                f"loss_share_of_forward/{name}",
                f"(pooling + Sinkhorn + loss) / forward, {name}",
                0.10,
                False,
                config["loss_share_of_forward"],
                PAPER_STEP_MS["loss"] / PAPER_STEP_MS["forward"],
                shape,
            )
        )
    return targets


def _pooling_target(pooling: dict[str, Any]) -> Target:
    s = pooling["shape"]
    note = (
        f"{s['batch_size']}x{s['num_views']} maps of {s['side']}^2, D={s['embed_dim']}, "
        f"{pooling['regions_per_image']:.0f} regions/image; loop extrapolated from "
        f"{', '.join(map(str, s['loop_regions']))} regions of one map"
    )
    return Target(
        "pooling_speedup",
        "per-region loop / ours, forward + backward",
        50.0,
        True,
        pooling["speedup"],
        None,
        note,
    )


def _cluster_targets(evaluation: dict[str, Any]) -> list[Target]:
    size = "x".join(str(x) for x in evaluation["image_size"])
    same_size = evaluation.get("cluster_over_conv_with_c_outputs", {})
    targets = []
    for c, ratio in evaluation["cluster_over_linear"].items():
        note = f"{size} image, probe with {evaluation['linear_probe_classes']} classes"
        if c in same_size:
            note += f"; against a 1x1 conv with {c} outputs (the same multiply-adds): {same_size[c]:.2f}x"
        targets.append(
            Target(
                f"cluster_over_linear/C{c}",
                f"cluster assignment (C={c}) / linear probe, per image",
                2.0,
                False,
                ratio,
                PAPER_INFERENCE_MS["cluster"] / PAPER_INFERENCE_MS["linear"],
                note,
            )
        )
    return targets


def workers_needed(step_ms: float, batch_size: int, num_views: int, views_per_s_per_worker: float) -> float:
    """DataLoader workers one GPU needs to produce its B*M views per step in ``step_ms``."""
    return batch_size * num_views / (step_ms / 1e3) / views_per_s_per_worker


def _data_target(training: dict[str, Any] | None, data: dict[str, Any]) -> Target | None:
    views = data["views"].get("r50_dlv3p_highres")
    if views is None:
        return None
    paper_step = PAPER_STEP_TOTAL_MS
    per_worker = views["views_per_s"]["cached"]
    paper_need = workers_needed(paper_step, views["batch_size"], views["num_views"], per_worker)
    note = (
        f"{per_worker:.1f} views/s per worker (cached {data.get('region_method', 'slic')}, {views['view_size']} px), "
        f"{views['views_per_s']['cold']:.1f} cold; at the paper's {paper_step:.0f} ms step: {paper_need:.2f} workers"
    )
    measured = None
    config = (training or {}).get("configs", {}).get("r50_dlv3p_highres")
    if config is not None:
        measured = workers_needed(config["compute_ms"], config["batch_size"], config["num_views"], per_worker)
        note += (
            f"; this device's step: {config['compute_ms']:.0f} ms for "
            f"{config['batch_size']}x{config['num_views']} views at {config['view_size']} px"
        )
    return Target(
        "data_workers_per_gpu",
        f"loader workers one GPU needs (a V100 node has ~{V100_NODE_WORKERS_PER_GPU} per GPU)",
        float(V100_NODE_WORKERS_PER_GPU),
        False,
        measured,
        None,
        note,
    )


def _scaling_target(scaling: dict[str, Any]) -> Target:
    fit = scaling["fit_all"]
    note = (
        f"batch sweep slope {scaling['fit_batch']['slope']:.2f}, view-size sweep "
        f"{scaling['fit_size']['slope']:.2f}, all points R^2 {fit['r2']:.3f}"
    )
    return Target(
        "scaling_slope",
        "log-log slope of step time vs pixels per step",
        MAX_SCALING_SLOPE,
        False,
        fit["slope"],
        None,
        note,
    )


def evaluate_targets(results: dict[str, Any]) -> list[Target]:
    """Every target whose sections are in ``results`` (keys ``training``, ``pooling``, ``data``, ...)."""
    device = results.get("meta", {}).get("device", "?")
    targets: list[Target] = []
    if "training" in results:
        targets += _training_targets(results["training"], device)
    if "pooling" in results:
        targets.append(_pooling_target(results["pooling"]))
    if "evaluation" in results:
        targets += _cluster_targets(results["evaluation"])
    if "data" in results:
        data_target = _data_target(results.get("training"), results["data"])
        if data_target is not None:
            targets.append(data_target)
    if "scaling" in results:
        targets.append(_scaling_target(results["scaling"]))
    return targets
