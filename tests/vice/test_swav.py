import math

import pytest
import torch
import torch.nn.functional as F

from vice.sinkhorn import sinkhorn
from vice.swav import (
    Prototypes,
    RegionQueue,
    representation_health,
    swapped_prediction_loss,
    swav_region_loss,
)


def with_target_view(predicting: torch.Tensor) -> torch.Tensor:
    """(M-1, N, K) scores of the predicting views -> (M, N, K), view 0's scores arbitrary (never used)."""
    return torch.cat([torch.full_like(predicting[:1], 7.0), predicting])


def test_loss_hand_computed():
    # Two regions, K = 2, one predicting view.
    scores = with_target_view(torch.tensor([[[0.1, 0.0], [0.0, 0.2]]]))  # (M=2, N=2, K=2)
    codes = torch.tensor([[[1.0, 0.0], [0.25, 0.75]]])  # (T=1, N, K)
    tau = 0.1
    # region 0: -log softmax([1, 0])[0]; region 1: -(0.25 log p0 + 0.75 log p1) with logits [0, 2]
    l0 = -math.log(math.exp(1) / (math.exp(1) + 1))
    p1 = [1 / (1 + math.exp(2)), math.exp(2) / (1 + math.exp(2))]
    l1 = -(0.25 * math.log(p1[0]) + 0.75 * math.log(p1[1]))
    got = swapped_prediction_loss(scores, codes, tau)
    assert abs(got.item() - (l0 + l1) / 2) < 1e-6


def test_loss_averages_within_each_image_then_over_images():
    """Equation 3's 1/I: image 0 has one region with loss ln 2, image 1 has three with loss 0."""
    codes = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])  # (1, 4, 2)
    scores = with_target_view(torch.tensor([[[0.0, 0.0], [100.0, 0.0], [100.0, 0.0], [100.0, 0.0]]]))
    per_image = swapped_prediction_loss(scores, codes, 1.0, torch.tensor([1, 3]))
    flat = swapped_prediction_loss(scores, codes, 1.0)
    assert abs(per_image.item() - math.log(2) / 2) < 1e-6  # (ln 2 + 0) / 2 images
    assert abs(flat.item() - math.log(2) / 4) < 1e-6  # what a mean over regions would give
    # an image without regions (all masked) does not count as an image
    with_empty = swapped_prediction_loss(scores, codes, 1.0, torch.tensor([1, 0, 3]))
    assert abs(with_empty.item() - per_image.item()) < 1e-7


def test_loss_averages_over_predicting_views():
    codes = torch.tensor([[[0.5, 0.5]]])
    a = torch.tensor([[[1.0, 0.0]]])
    b = torch.tensor([[[0.0, 0.0]]])
    both = swapped_prediction_loss(with_target_view(torch.cat([a, b])), codes, 1.0)
    single = (
        swapped_prediction_loss(with_target_view(a), codes, 1.0)
        + swapped_prediction_loss(with_target_view(b), codes, 1.0)
    ) / 2
    assert abs(both.item() - single.item()) < 1e-6


def test_every_target_view_is_predicted_by_every_other_view():
    """T = M = 2 on one region: view 1 predicts view 0's code and view 0 predicts view 1's."""
    scores = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])  # softmax: [.5, .5] and [.75, .25]
    codes = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    got = swapped_prediction_loss(scores, codes, 1.0)
    assert abs(got.item() - (-math.log(0.75) - math.log(0.5)) / 2) < 1e-6
    # T = 1 keeps only the first pair: the paper's equation 3.
    assert abs(swapped_prediction_loss(scores, codes[:1], 1.0).item() + math.log(0.75)) < 1e-6


def test_target_views_beyond_the_views_are_refused():
    with pytest.raises(ValueError, match="T <= M"):
        swapped_prediction_loss(torch.zeros(2, 1, 2), torch.zeros(3, 1, 2), 1.0)


def test_region_loss_with_every_view_as_target_solves_one_sinkhorn_per_view():
    torch.manual_seed(1)
    protos = Prototypes(8, 6)
    means = torch.randn(3, 40, 8)
    queue = F.normalize(torch.randn(10, 8), dim=1)
    _, view0_codes = swav_region_loss(means, protos, 0.1, 0.05, 3, torch.tensor([40]), queue, target_views=3)
    z = F.normalize(means, dim=-1)
    expected = sinkhorn(torch.cat([protos(z[0]), protos(queue)]), 0.05, 3)
    torch.testing.assert_close(view0_codes, expected)


def test_loss_is_log_k_when_scores_carry_no_preference():
    torch.manual_seed(0)
    k, d = 32, 16
    protos = Prototypes(d, k)
    with torch.no_grad():
        protos.weight[:, d // 2 :] = 0.0  # prototypes live in the first half of the dimensions
    protos.normalize_()
    means = torch.randn(4, 200, d)
    means[..., : d // 2] = 0.0  # regions live in the second half: every score is 0
    loss, codes = swav_region_loss(means, protos, 0.1, 0.05, 3, torch.tensor([50, 150]))
    torch.testing.assert_close(codes, torch.full((200, k), 1 / k))
    assert abs(loss.item() - math.log(k)) < 1e-5


def test_prototypes_stay_unit_norm_after_normalize():
    protos = Prototypes(8, 5)
    with torch.no_grad():
        protos.weight.mul_(3.0)
    protos.normalize_()
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(5))


def test_queue_is_fifo_and_counts_filled_rows():
    q = RegionQueue(length=5, embed_dim=1)
    assert q.contents().shape == (0, 1)
    q.push(torch.tensor([[1.0], [2.0]]))
    q.push(torch.tensor([[3.0], [4.0], [5.0]]))
    assert q.contents().flatten().tolist() == [3.0, 4.0, 5.0, 1.0, 2.0]
    q.push(torch.tensor([[6.0], [7.0]]))
    assert q.contents().flatten().tolist() == [6.0, 7.0, 3.0, 4.0, 5.0]
    assert int(q.filled) == 5


def test_queue_rows_enter_sinkhorn_but_not_the_loss():
    torch.manual_seed(1)
    protos = Prototypes(4, 3)
    means = torch.randn(2, 6, 4)
    queue = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    loss_q, codes_q = swav_region_loss(means, protos, 0.1, 0.05, 3, torch.tensor([6]), queue)
    _, codes_0 = swav_region_loss(means, protos, 0.1, 0.05, 3, torch.tensor([6]))
    assert codes_q.shape == (16, 3)  # the batch's 6 rows first, then the queue's 10
    assert not torch.allclose(codes_q[:6], codes_0)  # the queue changes the equipartition
    assert torch.isfinite(loss_q)


def test_health_of_uniform_and_collapsed_codes():
    k = 4
    # Every prototype is the argmax of 2 of 8 rows: perplexity K, usage 1.
    balanced = torch.eye(k).repeat(2, 1)
    health = representation_health(balanced, torch.eye(8)[:, :8])
    assert float(health["prototype_usage"]) == 1.0
    assert float(health["code_entropy"]) == 0.0  # one-hot rows
    # One prototype takes every row: perplexity 1, usage 1/K.
    collapsed = torch.zeros(8, k)
    collapsed[:, 2] = 1
    assert math.isclose(float(representation_health(collapsed, torch.eye(8))["prototype_usage"]), 1 / k)
    # Uniform rows: entropy ln K, normalized to 1.
    uniform = torch.full((8, k), 1 / k)
    assert math.isclose(
        float(representation_health(uniform, torch.eye(8))["code_entropy"]), 1.0, rel_tol=1e-6
    )
    # Argmax shares (3/4, 1/4): perplexity exp(H) = exp(0.5623) = 1.7548, usage 1.7548 / 4.
    skewed = torch.zeros(8, k)
    skewed[:6, 0] = 1
    skewed[6:, 1] = 1
    assert math.isclose(
        float(representation_health(skewed, torch.eye(8))["prototype_usage"]), 0.43869, rel_tol=1e-4
    )


def test_embedding_std_is_one_on_the_sphere_and_zero_when_collapsed():
    torch.manual_seed(0)
    spread = torch.nn.functional.normalize(torch.randn(20000, 16), dim=1)
    codes = torch.full((4, 3), 1 / 3)
    assert abs(float(representation_health(codes, spread)["embedding_std"]) - 1.0) < 0.02
    point = torch.nn.functional.normalize(torch.ones(50, 16), dim=1)
    assert float(representation_health(codes, point)["embedding_std"]) == 0.0
    # The signed basis vectors +-e_1..e_D: per-dimension variance 1/D, exactly 1 after scaling.
    basis = torch.cat([torch.eye(16), -torch.eye(16)])
    std = float(representation_health(codes, basis)["embedding_std"])
    assert math.isclose(std, math.sqrt(32 / 31), rel_tol=1e-5)  # sample std: n / (n - 1) correction
