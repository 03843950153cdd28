import math

import pytest
import torch
from torch import nn

from vice.optim import LARS, build_optimizer, cosine_lr, param_groups, scaled_lr, set_lr


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.032),  # 0.32 * 1 / 10
        (4, 0.16),  # 0.32 * 5 / 10
        (9, 0.32),  # end of warmup
        (10, 0.32),  # cosine starts at the peak
        (35, 0.00032 + 0.5 * 0.31968 * (1 + math.sqrt(0.5))),  # a quarter of the cosine
        (60, (0.32 + 0.00032) / 2),  # midpoint
        (110, 0.00032),  # end
        (500, 0.00032),  # stays at the end value
    ],
)
def test_cosine_lr_hand_values(step: int, expected: float) -> None:
    lr = cosine_lr(step, peak_lr=0.32, warmup_steps=10, total_steps=110, final_lr_ratio=0.001)
    assert lr == pytest.approx(expected, rel=1e-12)


def test_cosine_lr_without_warmup_starts_at_peak() -> None:
    assert cosine_lr(0, 0.1, 0, 100, 0.0) == pytest.approx(0.1)
    assert cosine_lr(50, 0.1, 0, 100, 0.0) == pytest.approx(0.05)
    assert cosine_lr(100, 0.1, 0, 100, 0.0) == pytest.approx(0.0)


def test_scaled_lr_linear_rule() -> None:
    assert scaled_lr(0.04, 32, 4) == pytest.approx(0.32)
    assert scaled_lr(0.04, 1, 4) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="world_size=0"):
        scaled_lr(0.04, 0, 4)


def test_lars_two_steps_by_hand() -> None:
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([w], lr=1.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01, eps=0.0)
    g = torch.tensor([0.6, 0.8], dtype=torch.float64)  # ||g|| = 1
    w.grad = g.clone()
    opt.step()
    # ratio = 0.01 * 5 / (1 + 0.1 * 5) = 1/30; d = (g + 0.1 w) / 30 = [0.03, 0.04]
    torch.testing.assert_close(w.detach(), torch.tensor([2.97, 3.96], dtype=torch.float64))
    w.grad = g.clone()
    opt.step()
    # ||w|| = 4.95; ratio = 0.0495 / 1.495; g + 0.1 w = [0.897, 1.196] = 1.495 * [0.6, 0.8]
    # d = [0.0297, 0.0396]; buf = 0.9 * [0.03, 0.04] + d = [0.0567, 0.0756]
    torch.testing.assert_close(w.detach(), torch.tensor([2.9133, 3.8844], dtype=torch.float64))
    torch.testing.assert_close(w.grad, g)  # gradients are not modified in place


def test_param_groups_exempt_biases_and_norms_from_decay_only() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[1].weight.requires_grad_(False)
    groups = param_groups(model, weight_decay=0.5)
    assert [[id(p) for p in g["params"]] for g in groups] == [
        [id(model[0].weight)],
        [id(model[0].bias), id(model[1].bias)],
    ]
    opt = build_optimizer(groups, lr=0.1, momentum=0.9, weight_decay=0.5, lars_trust=0.001)
    assert [(g["weight_decay"], g["trust_coefficient"]) for g in opt.param_groups] == [
        (0.5, 0.001),
        (0.0, 0.001),
    ]
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 2.0)
    opt.step()
    # no decay, still LARS-adapted: b - 0.1 * (0.001 * ||b|| / ||g||) * g
    for b_now, b in ((model[0].bias, before[1]), (model[1].bias, before[3])):
        g = torch.full_like(b, 2.0)
        ratio_b = 0.001 * b.norm() / (g.norm() + 1e-8) if b.norm() > 0 else torch.tensor(1.0)
        torch.testing.assert_close(b_now.detach(), b - 0.1 * ratio_b * g)
    # adapted: w - 0.1 * ratio * (g + 0.5 w)
    w = before[0]
    ratio = 0.001 * w.norm() / (torch.full_like(w, 2.0).norm() + 0.5 * w.norm() + 1e-8)
    torch.testing.assert_close(model[0].weight.detach(), w - 0.1 * ratio * (2.0 + 0.5 * w))


def _random_params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(2, 2, 3))]


def test_trust_zero_equals_torch_sgd_exactly() -> None:
    torch.manual_seed(0)
    ours, theirs = _random_params(), _random_params()
    for a, b in zip(ours, theirs, strict=True):
        b.data.copy_(a.data)
    lars = LARS(ours, lr=0.1, momentum=0.9, weight_decay=1e-4, trust_coefficient=0.0)
    sgd = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(3):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        lars.step()
        sgd.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def _apex_larc_sgd_step(
    params: list[torch.Tensor], bufs: list[torch.Tensor | None], lr: float, wd: float, trust: float
) -> None:
    """Transcription of apex LARC.step (clip=False) followed by SGD(momentum=0.9, weight_decay=0)."""
    for i, p in enumerate(params):
        grad = p.grad.clone()
        param_norm, grad_norm = torch.norm(p), torch.norm(grad)
        if param_norm != 0 and grad_norm != 0:
            adaptive_lr = trust * param_norm / (grad_norm + param_norm * wd + 1e-8)
            grad += wd * p
            grad *= adaptive_lr
        bufs[i] = grad if bufs[i] is None else bufs[i].mul(0.9).add(grad)
        p.sub_(lr * bufs[i])


def test_lars_matches_apex_larc_transcription() -> None:
    torch.manual_seed(0)
    ours, theirs = _random_params(), _random_params()
    for a, b in zip(ours, theirs, strict=True):
        b.data.copy_(a.data)
    lars = LARS(ours, lr=0.5, momentum=0.9, weight_decay=0.01, trust_coefficient=0.02)
    bufs: list[torch.Tensor | None] = [None] * len(theirs)
    for step in range(4):
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        if step == 2:  # a zero gradient gets neither decay nor scaling
            ours[1].grad.zero_()
            theirs[1].grad.zero_()
        lars.step()
        with torch.no_grad():
            _apex_larc_sgd_step(theirs, bufs, lr=0.5, wd=0.01, trust=0.02)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_parameters_without_grad_are_untouched() -> None:
    frozen, moving = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 2))
    opt = LARS([frozen, moving], lr=1.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.001)
    moving.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(frozen.detach(), torch.ones(2, 2))
    assert "momentum_buffer" not in opt.state[frozen]
    # ratio = 0.001 * 2 / (2 + 0.1 * 2 + 1e-8); d = ratio * 1.1
    expected = 1.0 - 0.001 * 2 / (2.2 + 1e-8) * 1.1
    torch.testing.assert_close(moving.detach(), torch.full((2, 2), expected))


def test_set_lr_sets_every_group() -> None:
    model = nn.Linear(2, 2)
    opt = build_optimizer(
        param_groups(model, 1e-6), lr=0.3, momentum=0.9, weight_decay=1e-6, lars_trust=0.001
    )
    set_lr(opt, 0.05)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]


def test_invalid_hyperparameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"momentum=1\.5"):
        LARS([nn.Parameter(torch.ones(1))], lr=0.1, momentum=1.5)
