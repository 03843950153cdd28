"""Render a results dictionary as the Markdown tables the README quotes."""

from __future__ import annotations

from typing import Any

from benchmarks.targets import (
    PAPER_INFERENCE_MS,
    PAPER_STEP_MS,
    PAPER_STEP_TOTAL_MS,
    Target,
    evaluate_targets,
)
from benchmarks.training import PHASES


def fmt(value: float | None) -> str:
    """Three significant figures, thousands separated; ``-`` for a missing value."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01 or value == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _met(target: Target) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[target.met]


def _targets(targets: list[Target]) -> list[str]:
    rows = [[t.description, t.goal, fmt(t.measured), fmt(t.paper), _met(t), t.note] for t in targets]
    return [
        "## Targets",
        "",
        *_table(["Target", "Goal", "Measured", "Paper", "Status", "How measured"], rows),
    ]


def _training(training: dict[str, Any]) -> list[str]:
    rows = []
    for name, c in training["configs"].items():
        memory = f"{fmt(c['peak_memory_mb'])} MiB ({c['memory_kind']})"
        views = f"{c['batch_size']}x{c['num_views']} @ {c['view_size']} px"
        rows.append(
            [
                name,
                views,
                fmt(c["regions_per_image"]),
                *(fmt(c["phases_ms"][p]) for p in PHASES),
                fmt(c["step_ms"]),
                memory,
            ]
        )
    paper = PAPER_STEP_MS
    rows.append(
        [
            "paper, Table 7 (V100)",
            "4x5 @ 512 px",
            "-",
            "-",
            *(fmt(paper[k]) for k in ("forward", "loss", "backward", "optimizer")),
            fmt(PAPER_STEP_TOTAL_MS),
            "-",
        ]
    )
    first = next(iter(training["configs"].values()))
    header = [
        "Config",
        "Views",
        "Regions/image",
        "Data wait",
        "Forward",
        "Pool+Sinkhorn+loss",
        "Backward",
        "Optimizer",
        "Step",
        "Peak memory",
    ]
    return [
        "## 1. Training step (Table 7)",
        "",
        f"Milliseconds, median of {first['steps_timed']} steps after {first['warmup_steps']} warm-up steps; "
        f"AMP {first['amp']}, channels_last {first['channels_last']}, {first['num_workers']} loader worker(s), "
        f"queue of {first['queue_length']} (pre-filled), LARS, {first.get('region_method', 'slic')} regions.",
        "",
        *_table(header, rows),
    ]


def _pooling(pooling: dict[str, Any]) -> list[str]:
    s, ours, loop = pooling["shape"], pooling["ours_ms"], pooling["loop_ms"]
    rows = [
        ["ours (`region_means`)", fmt(ours["forward"]), fmt(ours["backward"]), fmt(ours["total"])],
        ["per-region loop (extrapolated)", fmt(loop["forward"]), fmt(loop["backward"]), fmt(loop["total"])],
        [
            "speedup",
            fmt(pooling["speedup_forward"]),
            fmt(pooling["speedup_backward"]),
            fmt(pooling["speedup"]),
        ],
    ]
    fit = pooling["loop_fit"]
    return [
        "## 2. Region pooling against the per-region loop",
        "",
        f"{s['batch_size']} images x {s['num_views']} views, {s['side']}x{s['side']} maps, D = {s['embed_dim']}, "
        f"{fmt(pooling['regions_per_image'])} mutual regions per image ({pooling.get('region_method', 'slic')} + Algorithm 1 masking, "
        f"{100 * pooling['ignore_fraction']:.0f} % ignore pixels). Milliseconds; ours is the median of {s['repeats']}.",
        "",
        *_table(["", "Forward", "Backward", "Forward + backward"], rows),
        "",
        f"The loop was timed on {', '.join(map(str, s['loop_regions']))} regions of one map and extrapolated "
        f"to all {s['batch_size'] * s['num_views']} maps and all regions by a least-squares line: forward "
        f"{fmt(fit['forward']['per_region_ms'])} ms per region + {fmt(fit['forward']['per_map_ms'])} ms per map, "
        f"backward {fmt(fit['backward']['per_region_ms'])} ms per region + {fmt(fit['backward']['per_map_ms'])} ms "
        f"per map. Largest difference from ours on the timed rows: {pooling['max_abs_diff_vs_loop']:.1e}.",
        "",
        _extrapolation_check(pooling["extrapolation_check"]),
    ]


def _extrapolation_check(check: dict[str, Any]) -> str:
    s = check["shape"]
    return (
        f"Check of the extrapolation: at {s['batch_size']}x{s['num_views']} maps of {s['side']}^2, D = {s['embed_dim']}, "
        f"{fmt(check['regions_per_image'])} regions per image, the whole loop took {fmt(check['measured_ms']['total'])} ms "
        f"and the extrapolation from {', '.join(map(str, s['loop_regions']))} regions predicted "
        f"{fmt(check['extrapolated_ms']['total'])} ms ({fmt(check['extrapolated_over_measured'])}x)."
    )


def _data(data: dict[str, Any]) -> list[str]:
    slic_rows = [
        [
            f"{r['image_size'][1]}x{r['image_size'][0]}",
            fmt(r["regions_per_image"]),
            fmt(r["slic_ms"]),
            fmt(r["cold_ms"]),
            fmt(r["cached_ms"]),
        ]
        for r in data["slic"]
    ]
    view_rows = [
        [
            v["name"],
            f"{v['num_views']} @ {v['view_size']} px from {v['image_size'][1]}x{v['image_size'][0]} JPEG",
            fmt(v["ms_per_image"]["cold"]),
            fmt(v["ms_per_image"]["cached"]),
            fmt(v["views_per_s"]["cold"]),
            fmt(v["views_per_s"]["cached"]),
            fmt(v["steps_per_s_per_worker"]["cached"]),
        ]
        for v in data["views"].values()
    ]
    return [
        "## 3. Data pipeline (one worker: 1 OpenCV thread, 1 torch thread)",
        "",
        *(["Image sizes reduced 8x per side (quick run).", ""] if data.get("reduced_sizes") else []),
        *(
            _table(["Image (WxH)", "Regions", "SLIC ms", "Cold cache ms", "Cached ms"], slic_rows)
            if slic_rows
            else [
                "SLIC not timed: OpenCV's contrib module (cv2.ximgproc) is not installed; views use grid cells."
            ]
        ),
        "",
        *_table(
            [
                "Config",
                "Views per image",
                "ms/image cold",
                "ms/image cached",
                "views/s cold",
                "views/s cached",
                "steps/s per worker (B=4)",
            ],
            view_rows,
        ),
    ]


def _evaluation(evaluation: dict[str, Any]) -> list[str]:
    size = f"{evaluation['image_size'][1]}x{evaluation['image_size'][0]}"
    rows = [
        [f"embedding, {name}", fmt(e["ms"]), fmt(PAPER_INFERENCE_MS["embedding"])]
        for name, e in evaluation["embedding"].items()
    ]
    rows += [
        [f"cluster assignment, C = {c}", fmt(ms), fmt(PAPER_INFERENCE_MS["cluster"])]
        for c, ms in evaluation["cluster_assignment_ms"].items()
    ]
    rows += [
        [f"1x1 conv + argmax with {c} outputs (the work of C = {c})", fmt(ms), "-"]
        for c, ms in evaluation.get("conv_with_c_outputs_ms", {}).items()
    ]
    rows.append(
        [
            f"linear probe ({evaluation['linear_probe_classes']} classes)",
            fmt(evaluation["linear_probe_ms"]),
            fmt(PAPER_INFERENCE_MS["linear"]),
        ]
    )
    k = evaluation["kmeans"]
    fits = ", ".join(f"C = {c}: {fmt(s)} s" for c, s in k["fit_s"].items())
    reduced = " (**reduced**: not the issue's 1M points)" if k["reduced"] else ""
    return [
        "## 4. Evaluation inference per image (Table 8)",
        "",
        f"A {size} image, median of {evaluation['repeats']}. Paper: 3080Ti.",
        "",
        *_table(["Part", "ms per image", "Paper ms"], rows),
        "",
        f"k-means fit (FAISS, spherical, {k['iterations']} iterations) on {k['points']:,} x {k['dim']}{reduced}: {fits}.",
    ]


def _scaling(scaling: dict[str, Any]) -> list[str]:
    rows = []
    for sweep, points in (("batch", scaling["batch_sweep"]), ("view size", scaling["size_sweep"])):
        rows += [
            [
                sweep,
                str(p["batch_size"]),
                str(p["num_views"]),
                str(p["view_size"]),
                fmt(p["pixels"] / 1e6),
                fmt(p["step_ms"]),
                fmt(p["ms_per_mpixel"]),
            ]
            for p in points
        ]
    fits = "; ".join(
        f"{label}: slope {scaling[key]['slope']:.2f} (R^2 {scaling[key]['r2']:.3f})"
        for label, key in (
            ("batch sweep", "fit_batch"),
            ("view-size sweep", "fit_size"),
            ("all points", "fit_all"),
        )
    )
    model = scaling["model"]
    return [
        "## 5. Scaling",
        "",
        f"{model['backbone']} + {model['decoder']}, step time without data wait (median of {scaling['steps_timed']}), "
        f"grid regions of {scaling['region_cell']} px (regions grow with pixels).",
        "",
        *_table(["Sweep", "B", "M", "S", "Mpixels", "Step ms", "ms per Mpixel"], rows),
        "",
        f"Log-log fit of step time against pixels per step: {fits}. Slope 1 is linear in pixels.",
    ]


def render_markdown(results: dict[str, Any]) -> str:
    """The targets table, then one table per section present in ``results``."""
    meta = results["meta"]
    load = meta.get("load_average", {})
    lines = [
        f"# Benchmarks: {meta['device_name']}",
        "",
        f"`{meta['command']}` at {meta['started_at']} (commit {str(meta.get('git_commit'))[:10]}), torch {meta['torch']}, "
        f"{meta['torch_threads']} torch / {meta.get('faiss_threads', '?')} FAISS threads on {meta['cpu_count']} CPUs ({meta['cpu_name']}). "
        f"Load average (1/5/15 min) at start {load.get('start')}, at end {load.get('end')}.",
    ]
    if meta.get("quick"):
        lines += ["", "**Quick run: tiny shapes, for testing the benchmark only; the numbers mean nothing.**"]
    lines += ["", *_targets(evaluate_targets(results))]
    renderers = {
        "training": _training,
        "pooling": _pooling,
        "data": _data,
        "evaluation": _evaluation,
        "scaling": _scaling,
    }
    for section, render in renderers.items():
        if section in results:
            lines += ["", *render(results[section])]
    return "\n".join(lines) + "\n"
