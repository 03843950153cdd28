"""Issue 10's learning check: the CPU recipe for photographs learns on real photographs.

A small slice of the real-photograph dev set (``benchmarks/devset.py``: texture mosaics cut from
photos shipped in scikit-image and scikit-learn, colour and brightness made uninformative) is
trained on with ``experiment=photos`` for a short budget, then evaluated in the same harness as the
floors: the same network at random init, and raw colours.

The margin is checked by one function, :func:`learns`, which is also shown to reject an untrained
network (the model at step 0: gain exactly 0) and a collapsed one (a constant embedding).
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.devset import MATERIALS, DevsetSpec, generate
from benchmarks.learning import OVER_CLUSTERS, recipe_config
from vice.evaluate.harness import eval_datasets, evaluate_model
from vice.evaluate.run import build_random_init
from vice.train import train

#: The slice: a third of the dev set's train images, a quarter of its val images.
SLICE = DevsetSpec(num_train=32, num_val=12)
STEPS = 400
#: Required gains over the same network at random init, in mIoU points (fractions here).
LINEAR_MARGIN = 0.03
OVER_CLUSTER_MARGIN = 0.02
LINEAR = "linear_miou"
OVER = f"cluster{OVER_CLUSTERS}_majority_miou"


def learns(metrics: dict[str, float], floors: dict[str, float]) -> bool:
    """Whether a model beats random init by the margins, and raw colours on the linear probe."""
    return (
        metrics[f"eval/{LINEAR}"] >= floors[f"eval/baseline_random_{LINEAR}"] + LINEAR_MARGIN
        and metrics[f"eval/{OVER}"] >= floors[f"eval/baseline_random_{OVER}"] + OVER_CLUSTER_MARGIN
        and metrics[f"eval/{LINEAR}"] > floors[f"eval/baseline_rgb_{LINEAR}"]
    )


class Collapsed(nn.Module):
    """Every pixel embedded as the same unit vector: a collapsed network."""

    direction: torch.Tensor

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.register_buffer("direction", nn.functional.normalize(torch.ones(embed_dim), dim=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.direction.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:])


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    devset = generate(root / "devset", SLICE)
    cfg = recipe_config(devset, root / "run", seed=0, overrides=[f"train.max_steps={STEPS}"])
    result = train(cfg)
    train_set, eval_set = eval_datasets(cfg)
    metrics = evaluate_model(cfg, result.embedder, train_set, eval_set, None)
    without_floors = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, baselines=False))

    def model_only(network: nn.Module) -> dict[str, float]:
        return evaluate_model(without_floors, network, train_set, eval_set, None)

    for name, value in sorted(metrics.items()):
        print(f"{name} {value:.3f}")
    return cfg, result, metrics, model_only


@pytest.mark.slow
def test_the_slice_has_every_class_and_colour_cannot_separate_them(learned):
    cfg, _, metrics, _ = learned
    train_set, eval_set = eval_datasets(cfg)
    assert train_set.num_classes == eval_set.num_classes == len(MATERIALS) == 5
    assert (len(train_set), len(eval_set)) == (SLICE.num_train, SLICE.num_val)
    # Raw colours sit near chance on the probe: colour and brightness carry no class.
    assert metrics["eval/baseline_rgb_linear_miou"] < 0.15


@pytest.mark.slow
def test_loss_falls_below_uniform(learned):
    cfg, result, _, _ = learned
    start, end = result.losses[0], sum(result.losses[-50:]) / 50
    print(f"loss {start:.3f} -> {end:.3f}, ln K = {math.log(cfg.swav.num_prototypes):.3f}")
    assert end < math.log(cfg.swav.num_prototypes) - 0.3


@pytest.mark.slow
def test_trained_model_beats_both_floors(learned):
    _, _, metrics, _ = learned
    assert metrics[f"eval/gain_{LINEAR}"] >= LINEAR_MARGIN
    assert metrics[f"eval/gain_{OVER}"] >= OVER_CLUSTER_MARGIN
    assert learns(metrics, metrics)


@pytest.mark.slow
def test_the_margin_rejects_an_untrained_and_a_collapsed_network(learned):
    cfg, _, metrics, model_only = learned
    untrained = model_only(build_random_init(cfg.model, cfg.seed))
    assert untrained[f"eval/{LINEAR}"] == pytest.approx(metrics[f"eval/baseline_random_{LINEAR}"], abs=1e-9)
    assert not learns(untrained, metrics)
    collapsed = model_only(Collapsed(cfg.model.embed_dim))
    assert collapsed[f"eval/{LINEAR}"] < 1 / len(MATERIALS)  # one class everywhere
    assert not learns(collapsed, metrics)


def test_devset_is_rebuilt_only_when_its_spec_changes(tmp_path):
    spec = DevsetSpec(num_train=2, num_val=1, image_size=64)
    root = generate(tmp_path / "set", spec)
    first = sorted(p.read_bytes() for p in root.rglob("*.png"))
    stamp = (root / "images" / "train" / "0000.png").stat().st_mtime_ns
    assert generate(tmp_path / "set", spec) == root
    assert (root / "images" / "train" / "0000.png").stat().st_mtime_ns == stamp  # reused, not rewritten
    again = generate(tmp_path / "other", spec)
    assert sorted(p.read_bytes() for p in again.rglob("*.png")) == first  # deterministic
    bigger = generate(tmp_path / "set", dataclasses.replace(spec, num_train=3))
    assert len(list((bigger / "images" / "train").iterdir())) == 3
    assert not Path(str(root) + ".tmp").exists()
