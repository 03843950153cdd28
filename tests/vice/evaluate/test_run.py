import dataclasses
import json
import logging
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import vice.evaluate.run as run_module
from vice.checkpoint import save_checkpoint
from vice.config import Config, EvalConfig
from vice.data.labelled import CorruptImageError
from vice.evaluate.run import evaluate
from vice.model import build_model

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)


class Stripes:
    """Three vertical stripes, class k painted COLOURS[(k - label_shift) % 3]; the top row is unlabelled."""

    name = "stripes"
    num_classes = 3
    class_names = ("red", "green", "blue")
    palette = COLOURS

    def __init__(
        self,
        sizes: list[tuple[int, int]],
        seed: int,
        salt: float = 0.0,
        corrupt: int = -1,
        label_shift: int = 0,
    ) -> None:
        self.sizes, self.seed, self.salt, self.corrupt = sizes, seed, salt, corrupt
        self.label_shift = label_shift

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index == self.corrupt:
            raise CorruptImageError(f"/data/{index}.jpg: cannot be decoded")
        height, width = self.sizes[index]
        rng = np.random.default_rng((self.seed, index))
        order = rng.permutation(3)
        label = np.broadcast_to(order[stripe_ids(height, width)], (height, width)).astype(np.int64)
        painted = label.copy()
        salted = rng.random((height, width)) < self.salt
        painted[salted] = rng.integers(0, 3, size=int(salted.sum()))
        image = COLOURS[painted]
        label = (label + self.label_shift) % 3
        label[0] = -1
        return image, label


def stripe_ids(height: int, width: int) -> np.ndarray:
    return np.broadcast_to(np.arange(width) * 3 // width, (height, width))


def stripe_regions(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(stripe_ids(*image.shape[:2]), dtype=np.int32)


class PointwiseColour(nn.Module):
    """Stand-in embedder: a fixed 1x1 conv (identity on the 3 channels) + L2 normalization."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.conv(x), dim=1)


def _cfg(**overrides: object) -> EvalConfig:
    base = dict(
        protocol="full",
        short_side=24,
        num_clusters=[3, 6],
        kmeans_iterations=10,
        kmeans_sample=2000,
        probe_steps=100,
        probe_lr=0.5,
        batch_size=2,
        pictures=0,
    )
    base.update(overrides)
    return EvalConfig(**base)


def _splits(sizes: list[tuple[int, int]], **kwargs: object) -> tuple[Stripes, Stripes]:
    return Stripes(sizes, seed=0, **kwargs), Stripes(sizes, seed=1)


SQUARE = [(24, 36)] * 5


def test_perfect_features_score_one_everywhere():
    train, val = _splits(SQUARE)
    metrics = evaluate(PointwiseColour(), _cfg(), train, val)
    model = {k: v for k, v in metrics.items() if not k.startswith(("eval/baseline_", "eval/gain_"))}
    gains = {k: v for k, v in metrics.items() if k.startswith("eval/gain_")}
    # Every mIoU has its gain over the random-init network's; nothing beats the perfect features.
    assert gains.keys() == {f"eval/gain_{k.removeprefix('eval/')}" for k in model if k.endswith("_miou")}
    for key, gain in gains.items():
        stem = key.removeprefix("eval/gain_")
        assert gain == metrics[f"eval/{stem}"] - metrics[f"eval/baseline_random_{stem}"] >= 0
    assert model == {
        "eval/cluster3_hungarian_miou": 1.0,
        "eval/cluster3_hungarian_acc": 1.0,
        "eval/cluster3_majority_miou": 1.0,
        "eval/cluster3_majority_acc": 1.0,
        "eval/cluster6_majority_miou": 1.0,
        "eval/cluster6_majority_acc": 1.0,
        "eval/linear_miou": 1.0,
        "eval/linear_acc": 1.0,
        "eval/kmeans_sample_size": 2000.0,
        "eval/num_skipped_images": 0.0,
    }
    # raw colours separate these classes too; the random network has all the metric names
    assert metrics["eval/baseline_rgb_cluster3_hungarian_miou"] == 1.0
    assert metrics["eval/baseline_rgb_linear_miou"] > 0.0  # the raw colours get a probe too
    assert {k for k in metrics if k.startswith("eval/baseline_random_")} == {
        k.replace("eval/", "eval/baseline_random_") for k in model if "sample" not in k and "skipped" not in k
    }


def test_metrics_do_not_depend_on_batch_size():
    sizes = [(24, 36), (30, 24), (24, 24), (24, 36), (40, 30)]
    train, val = Stripes(sizes, seed=0, salt=0.3), Stripes(sizes, seed=1, salt=0.3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 5, 1))
    runs = [evaluate(model, _cfg(batch_size=b, short_side=20), train, val) for b in (1, 3, 5)]
    assert runs[0] == runs[1] == runs[2]
    assert 0.0 < runs[0]["eval/linear_acc"] < 1.0


def test_resized_predictions_are_scored_at_label_size():
    sizes = [(24, 36), (30, 24), (48, 48)]
    train, val = _splits(sizes)
    metrics = evaluate(PointwiseColour(), _cfg(short_side=12, baselines=False), train, val)
    assert metrics["eval/cluster3_hungarian_acc"] > 0.9  # only stripe borders may move by a pixel
    picie = evaluate(PointwiseColour(), _cfg(short_side=12, protocol="picie", baselines=False), train, val)
    assert picie["eval/cluster3_hungarian_acc"] > 0.9


def test_superpixel_pooling_removes_salt_noise():
    train, val = Stripes(SQUARE, seed=0, salt=0.2), Stripes(SQUARE, seed=1, salt=0.2)
    pixels = evaluate(PointwiseColour(), _cfg(baselines=False), train, val)
    pooled = evaluate(
        PointwiseColour(), _cfg(baselines=False, superpixel_pool=True), train, val, decompose=stripe_regions
    )
    assert pixels["eval/linear_acc"] < 0.9
    assert pooled["eval/linear_acc"] == 1.0
    assert pooled["eval/cluster3_hungarian_miou"] == 1.0
    with pytest.raises(ValueError, match="superpixel"):
        evaluate(PointwiseColour(), _cfg(superpixel_pool=True), train, val)


def test_mapping_fitted_on_train_sample():
    # the train split labels colour k as class k + 1: a mapping fitted there is wrong on every val pixel
    train, val = Stripes(SQUARE, seed=0, label_shift=1), Stripes(SQUARE, seed=1)
    on_train = evaluate(PointwiseColour(), _cfg(baselines=False), train, val, mapping_fit_set="train")
    on_eval = evaluate(PointwiseColour(), _cfg(baselines=False), train, val, mapping_fit_set="eval")
    for kind in ("cluster3_hungarian", "cluster3_majority", "cluster6_majority"):
        assert (on_train[f"eval/{kind}_miou"], on_train[f"eval/{kind}_acc"]) == (0.0, 0.0)
        assert (on_eval[f"eval/{kind}_miou"], on_eval[f"eval/{kind}_acc"]) == (1.0, 1.0)
    # the probe is always fitted on train, whatever the mapping's fit set
    assert on_train["eval/linear_acc"] == on_eval["eval/linear_acc"] == 0.0


def test_cluster_count_below_classes_warns_once_and_has_no_hungarian_score(caplog):
    train, val = _splits(SQUARE)
    with caplog.at_level(logging.WARNING, logger="vice.evaluate.run"):
        metrics = evaluate(PointwiseColour(), _cfg(num_clusters=[2, 3]), train, val)
    warnings = [r.getMessage() for r in caplog.records if "num_clusters" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per pipeline (model and both baselines)
    assert "C=2, fewer than the 3 classes of stripes" in warnings[0]
    assert "eval/cluster2_hungarian_miou" not in metrics
    # 2 clusters over 3 equal-sized colours: one cluster holds two colours and maps to one of them,
    # so the per-class IoUs are 1, 1/2 and 0 (never predicted); 2 of 3 pixels are right
    assert metrics["eval/cluster2_majority_miou"] == pytest.approx(0.5)
    assert metrics["eval/cluster2_majority_acc"] == pytest.approx(2 / 3)
    assert metrics["eval/cluster3_hungarian_miou"] == 1.0


def test_checkpoint_model_config_builds_the_random_init_baseline(tmp_path, monkeypatch):
    cfg = Config(run_dir=str(tmp_path))
    cfg.model.decoder_channels, cfg.model.embed_dim = 8, 6
    torch.manual_seed(0)
    trained = build_model(cfg.model)
    state = {
        "step": 1,
        "model": {f"embedder.{k}": v for k, v in trained.state_dict().items()},
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }
    path = save_checkpoint(tmp_path, 1, state)
    built: list[nn.Module] = []
    original = run_module.random_init_like

    def recording(*args: Any, **kwargs: Any) -> nn.Module:
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(run_module, "random_init_like", recording)
    other = dataclasses.replace(cfg.model, decoder_channels=4, embed_dim=3)  # the caller's model config
    train, val = _splits([(24, 24)] * 2)
    evaluate(path, _cfg(num_clusters=[3], probe_steps=2), train, val, model_cfg=other)
    (baseline,) = built
    shapes = {k: tuple(v.shape) for k, v in baseline.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in trained.state_dict().items()}
    assert baseline(torch.zeros(1, 3, 32, 32)).shape == (1, 6, 32, 32)  # D of the checkpoint, not 3


def test_corrupt_train_image_is_skipped_and_counted():
    train, val = Stripes(SQUARE, seed=0, corrupt=2), Stripes(SQUARE, seed=1)
    metrics = evaluate(PointwiseColour(), _cfg(baselines=False, kmeans_sample=10**6), train, val)
    assert metrics["eval/num_skipped_images"] == 1.0
    assert metrics["eval/kmeans_sample_size"] == 4 * 24 * 36
    with pytest.raises(CorruptImageError, match=r"/data/2\.jpg"):
        evaluate(PointwiseColour(), _cfg(baselines=False), Stripes(SQUARE, 0), Stripes(SQUARE, 1, corrupt=2))


def test_report_and_pictures_are_written(tmp_path):
    train, val = _splits(SQUARE)
    evaluate(PointwiseColour(), _cfg(pictures=2), train, val, out_dir=tmp_path, split_set="stego")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "pca_000.png",
        "pca_001.png",
        "segmentation_000.png",
        "segmentation_001.png",
    ]
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["tags"] == {
        "eval_protocol": "full",
        "eval_short_side": "24",
        "eval_dataset": "stripes",
        "eval_split_set": "stego",
        "eval_superpixel_pool": "false",
        "mapping_fit_set": "eval",
    }
    assert report["per_class_iou"]["eval/linear"] == [1.0, 1.0, 1.0]
    assert report["metrics"]["eval/linear_miou"] == 1.0
