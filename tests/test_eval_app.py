import json

import pytest
import torch
from omegaconf import OmegaConf

from vice.checkpoint import save_checkpoint
from vice.config import Config
from vice.evaluate.app import format_table, run_eval
from vice.model import build_model


def test_format_table_rows_per_pipeline_in_percent():
    metrics = {
        "eval/cluster7_majority_miou": 0.25,
        "eval/linear_miou": 0.5,
        "eval/baseline_random_cluster7_majority_miou": 0.125,
        "eval/baseline_random_linear_miou": 0.375,
        "eval/baseline_rgb_cluster7_majority_miou": 0.0625,
        "eval/kmeans_sample_size": 100.0,
    }
    lines = format_table(metrics).splitlines()
    assert lines[0].split() == ["cluster7_majority_miou", "linear_miou"]
    assert lines[2].split() == ["random", "init", "12.50", "37.50"]
    assert lines[3].split() == ["raw", "colours", "6.25", "-"]
    assert lines[4].split() == ["model", "25.00", "50.00"]


def _tiny_config(run_dir: str) -> Config:
    cfg = Config(run_dir=run_dir)
    cfg.data.num_images, cfg.data.image_size, cfg.data.num_workers = 2, [32, 32], 0
    cfg.model.decoder_channels, cfg.model.embed_dim = 16, 8
    cfg.train.device = "cpu"
    cfg.eval.short_side, cfg.eval.num_clusters = 32, [7, 9]
    cfg.eval.kmeans_sample, cfg.eval.probe_steps, cfg.eval.pictures = 500, 5, 1
    return cfg


def test_run_eval_scores_the_newest_checkpoint(tmp_path, capsys):
    cfg = _tiny_config(str(tmp_path))
    torch.manual_seed(1)  # the random-init baseline is built with seed cfg.seed = 0
    embedder = build_model(cfg.model)
    state = {
        "step": 7,
        "model": {f"embedder.{k}": v for k, v in embedder.state_dict().items()},
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }
    save_checkpoint(tmp_path, 7, state)
    metrics = run_eval(cfg)
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["metrics"] == pytest.approx(metrics, nan_ok=True)
    assert report["tags"]["eval_dataset"] == "synthetic"
    assert metrics["eval/kmeans_sample_size"] == 500.0
    assert sorted(p.name for p in (tmp_path / "eval").glob("*.png")) == [
        "pca_000.png",
        "segmentation_000.png",
    ]
    assert "cluster7_hungarian_miou" in capsys.readouterr().out
    # the checkpoint's weights are the ones evaluated, not the random-init baseline's
    model = [v for k, v in sorted(metrics.items()) if k.startswith(("eval/cluster", "eval/linear"))]
    random = [v for k, v in sorted(metrics.items()) if k.startswith("eval/baseline_random_")]
    assert len(model) == len(random) == 8
    assert model != random
