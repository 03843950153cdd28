import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vice.checkpoint import save_checkpoint
from vice.config import Config, ConfigError, validate
from vice.evaluate.harness import eval_datasets, evaluate_model, format_table, resolve_checkpoint, run_eval
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


def _save(cfg: Config, step: int, weight_seed: int) -> Path:
    """A training checkpoint of ``cfg.model`` with weights drawn from ``weight_seed``."""
    torch.manual_seed(weight_seed)
    embedder = build_model(cfg.model)
    state = {
        "step": step,
        "model": {f"embedder.{k}": v for k, v in embedder.state_dict().items()},
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }
    return save_checkpoint(cfg.run_dir, step, state)


def _model_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(("eval/cluster", "eval/linear"))}


def test_run_eval_scores_the_newest_checkpoint(tmp_path, capsys):
    cfg = _tiny_config(str(tmp_path))
    older, newer = _save(cfg, 3, weight_seed=1), _save(cfg, 7, weight_seed=2)
    metrics = run_eval(cfg)
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["metrics"] == pytest.approx(metrics, nan_ok=True)
    assert report["tags"]["eval_dataset"] == "synthetic"
    assert metrics["eval/kmeans_sample_size"] == 500.0
    assert sorted(p.name for p in (tmp_path / "eval").glob("*.png")) == [
        "pca_000.png",
        "segmentation_000.png",
    ]
    out = capsys.readouterr().out
    assert "cluster7_hungarian_miou" in out and f"model: {newer}" in out
    # the newest checkpoint's weights are the ones evaluated, not the older one's nor random init's
    random = {k.replace("baseline_random_", ""): v for k, v in metrics.items() if "baseline_random_" in k}
    assert len(_model_metrics(metrics)) == len(random) == 8
    assert _model_metrics(metrics) != random
    cfg.eval.baselines = False  # the model's metrics do not depend on the baselines
    train_set, eval_set = eval_datasets(cfg)
    expected = {path: evaluate_model(cfg, path, train_set, eval_set, None) for path in (older, newer)}
    assert _model_metrics(metrics) == _model_metrics(expected[newer])
    assert _model_metrics(metrics) != _model_metrics(expected[older])
    # eval.checkpoint picks another one; a run dir stands for its newest checkpoint
    cfg.eval.checkpoint = str(older)
    assert _model_metrics(run_eval(cfg)) == _model_metrics(expected[older])
    assert resolve_checkpoint(str(tmp_path), tmp_path / "elsewhere") == newer


def test_run_eval_without_checkpoint_fails_naming_the_run_dir(tmp_path):
    cfg = _tiny_config(str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match=f"no checkpoint in {tmp_path / 'run' / 'checkpoints'}: "):
        run_eval(cfg)
    assert not (tmp_path / "run" / "eval").exists()
    with pytest.raises(FileNotFoundError, match=f"no checkpoint in {tmp_path / 'checkpoints'}: "):
        resolve_checkpoint(str(tmp_path), cfg.run_dir)  # eval.checkpoint names a run dir without one


def test_run_eval_random_checkpoint_is_the_random_init_baseline(tmp_path, capsys):
    cfg = _tiny_config(str(tmp_path))
    cfg.eval.checkpoint = "random"
    metrics = run_eval(cfg)
    random = {k.replace("baseline_random_", ""): v for k, v in metrics.items() if "baseline_random_" in k}
    assert len(random) == 8
    assert _model_metrics(metrics) == random  # same architecture, same seed: identical weights
    assert "model: random init (eval.checkpoint=random)" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["", "Random", "no/such/step_00000001.pt"])
def test_eval_checkpoint_is_validated_naming_the_key(tmp_path, value):
    cfg = Config(run_dir=str(tmp_path))
    cfg.eval.checkpoint = value
    with pytest.raises(ConfigError, match=rf"^eval\.checkpoint='{re.escape(value)}' is invalid: null "):
        validate(cfg)


def test_eval_checkpoint_accepts_random_and_existing_paths(tmp_path):
    cfg = _tiny_config(str(tmp_path))
    path = _save(cfg, 1, weight_seed=0)
    for value in (None, "random", str(path), str(tmp_path)):
        cfg.eval.checkpoint = value
        validate(cfg)


def test_floors_are_computed_once_and_every_evaluation_reports_the_gain(tmp_path, monkeypatch):
    import vice.evaluate.harness as app

    cfg = _tiny_config(str(tmp_path))
    cfg.eval.baselines, cfg.train.max_steps = True, 4
    calls = []
    real = app.evaluate_model
    monkeypatch.setattr(app, "evaluate_model", lambda c, *a: calls.append(c.eval.baselines) or real(c, *a))
    evaluator = app.build_evaluator(cfg)
    embedder = build_model(cfg.model)
    intermediate, final = evaluator(embedder, 2), evaluator(embedder, 4)
    assert calls == [True, False]  # the floors are computed by the first evaluation only
    assert intermediate["eval/linear_miou"] == final["eval/linear_miou"]  # the same model, the same numbers
    for metrics in (intermediate, final):
        floor = metrics["eval/baseline_random_linear_miou"]
        assert metrics["eval/gain_linear_miou"] == metrics["eval/linear_miou"] - floor
        assert 0.0 <= metrics["eval/baseline_rgb_linear_miou"] <= 1.0
    assert final["eval/baseline_random_linear_miou"] == intermediate["eval/baseline_random_linear_miou"]


def test_gains_over_random_pair_each_miou_with_its_floor():
    from vice.evaluate.run import gains_over_random

    metrics = {
        "eval/linear_miou": 0.40,
        "eval/baseline_random_linear_miou": 0.25,
        "eval/baseline_rgb_linear_miou": 0.10,
        "eval/cluster5_hungarian_miou": 0.20,
        "eval/baseline_random_cluster5_hungarian_miou": 0.22,
        "eval/cluster5_hungarian_acc": 0.5,
        "eval/cluster20_majority_miou": 0.3,  # no random-init twin: no gain
    }
    gains = gains_over_random(metrics)
    assert gains.keys() == {"eval/gain_linear_miou", "eval/gain_cluster5_hungarian_miou"}
    assert gains["eval/gain_linear_miou"] == 0.40 - 0.25
    assert gains["eval/gain_cluster5_hungarian_miou"] == 0.20 - 0.22
