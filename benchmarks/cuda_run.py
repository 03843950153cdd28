"""The CUDA path end to end: a few training steps (AMP + channels_last) and the evaluation.

Run on a GPU machine: ``python -m benchmarks.cuda_run --out DIR``. Writes ``cuda_run.json`` with
steps/s, peak memory, the losses and the evaluation metrics and timings. Regions use the grid
decomposition when OpenCV's contrib module (SLIC) is not installed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    """Train a few steps per configuration, evaluate the last one, write the JSON."""
    import cv2

    from vice.config import Config
    from vice.data.labelled import build_labelled_dataset
    from vice.evaluate.run import evaluate
    from vice.train import train

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    slic = hasattr(cv2, "ximgproc")
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "slic": slic,
    }
    setups = {
        "r18_fpn_lowres": ("resnet18", "fpn", 128, 256, [320, 400]),
        "r50_dlv3plus_highres": ("resnet50", "deeplabv3plus", 256, 512, [640, 800]),
    }
    for name, (backbone, decoder, channels, view_size, image_size) in setups.items():
        cfg = Config(run_dir=str(args.out / "runs" / name), seed=0)
        cfg.data.image_size, cfg.data.num_images, cfg.data.batch_size, cfg.data.num_workers = (
            image_size,
            256,
            4,
            8,
        )
        cfg.regions.method = "slic" if slic else "grid"
        cfg.views.view_size = view_size
        cfg.model.backbone, cfg.model.decoder, cfg.model.decoder_channels = backbone, decoder, channels
        cfg.swav.queue_length, cfg.swav.queue_start_step = 5000, 10
        cfg.train.max_steps, cfg.train.log_every, cfg.train.checkpoint_every = args.steps, 10, args.steps
        cfg.train.device, cfg.train.amp, cfg.train.channels_last = "cuda", "bf16", True
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = train(cfg)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        report[name] = {
            "steps": result.steps,
            "seconds": round(seconds, 2),
            "steps_per_s_incl_startup": round(result.steps / seconds, 3),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "first_loss": result.losses[0],
            "last_loss": result.losses[-1],
            "finite": all(map(lambda x: x == x, result.losses)),
        }
        print(name, report[name], flush=True)
    cfg.eval.protocol, cfg.eval.short_side, cfg.eval.num_clusters = "picie", 320, [7, 64, 256]
    cfg.eval.probe_steps, cfg.eval.max_images, cfg.eval.kmeans_sample = 500, 64, 1_000_000
    train_set = build_labelled_dataset("synthetic", None, "train", num_images=64, image_size=[320, 400])
    eval_set = build_labelled_dataset("synthetic", None, "val", num_images=64, image_size=[320, 400])
    start = time.perf_counter()
    metrics = evaluate(
        result.embedder,
        cfg.eval,
        train_set,
        eval_set,
        model_cfg=cfg.model,
        device="cuda",
        amp="bf16",
        out_dir=args.out / "eval",
    )
    report["evaluation"] = {"seconds": round(time.perf_counter() - start, 2), "metrics": metrics}
    (args.out / "cuda_run.json").write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
