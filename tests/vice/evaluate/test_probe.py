import pytest
import torch
import torch.nn.functional as F

from vice.evaluate.probe import fit_probe, poly_lr, probe_predict


def test_poly_lr():
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100) == 0.0


def test_probe_learns_linearly_separable_embedding():
    generator = torch.Generator().manual_seed(0)
    num_classes, dim = 4, 8
    labels = torch.randint(0, num_classes, (4000,), generator=generator)
    # class k lives around axis k; noise in [-0.3, 0.3] per axis keeps a margin between classes
    noise = 0.6 * torch.rand(4000, dim, generator=generator) - 0.3
    features = F.normalize(torch.eye(dim)[labels] + noise, dim=1)
    labels[:500] = -1  # ignored pixels are never trained on
    probe = fit_probe(
        features,
        labels,
        num_classes,
        steps=300,
        lr=0.5,
        momentum=0.9,
        weight_decay=0.0,
        batch_pixels=256,
        seed=0,
    )
    maps = features[500:].T.reshape(1, dim, 50, 70)  # (1, D, h, w)
    predicted = probe_predict(probe, maps).flatten()
    assert torch.equal(predicted, labels[500:])
    assert probe.weight.shape == (num_classes, dim, 1, 1)


def test_probe_needs_labelled_pixels():
    with pytest.raises(ValueError, match="labelled"):
        fit_probe(torch.randn(10, 3), torch.full((10,), -1), 2, 5, 0.1, 0.9, 0.0, 4, 0)
