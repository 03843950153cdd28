import math

import torch

from vice.sinkhorn import sinkhorn


def swav_reference(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Transcription of SwAV's distributed_sinkhorn for one process (no max shift)."""
    q = torch.exp(scores / epsilon).t()
    b, k = q.shape[1], q.shape[0]
    q /= torch.sum(q)
    for _ in range(iterations):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def test_matches_swav_transcription():
    torch.manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    ours = sinkhorn(scores, 0.05, 3)
    ref = swav_reference(scores.double(), 0.05, 3).float()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_rows_sum_to_one_and_columns_reach_uniform_mass():
    torch.manual_seed(1)
    scores = torch.randn(64, 16)
    q = sinkhorn(scores, 0.5, 3)
    torch.testing.assert_close(q.sum(1), torch.ones(64))
    many = sinkhorn(scores, 0.5, 200)
    # Each prototype's share of the batch converges to 1/K.
    torch.testing.assert_close(many.sum(0) / 64, torch.full((16,), 1 / 16), rtol=0, atol=1e-4)


def test_finite_beyond_float32_exp_range():
    scores = torch.tensor([[1.0, -1.0, 0.5], [0.9, 0.2, -0.3], [-1.0, 1.0, 0.0]])
    epsilon = 0.01  # scores / epsilon = 100 > log(float32 max) = 88.7
    assert 1.0 / epsilon > math.log(torch.finfo(torch.float32).max)
    q = sinkhorn(scores, epsilon, 3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(1), torch.ones(3))
    # Converged sharp codes are the best balanced assignment: rows -> prototypes (2, 0, 1), score 2.4.
    assert sinkhorn(scores, epsilon, 50).argmax(1).tolist() == [2, 0, 1]


def test_half_precision_input_is_computed_in_float32():
    torch.manual_seed(2)
    scores = torch.randn(20, 5)
    q16 = sinkhorn(scores.half(), 0.05, 3)
    assert q16.dtype == torch.float32
    torch.testing.assert_close(q16, sinkhorn(scores.half().float(), 0.05, 3))


def exact_sinkhorn_float64(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """SwAV's normalizations in float64 without any shift or clamp: the exact answer for small inputs."""
    q = torch.exp(scores.double() / epsilon).t()
    q /= q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * k
        q /= q.sum(dim=0, keepdim=True) * n
    return (q * n).t()


def test_a_prototype_far_below_the_others_is_normalized_exactly():
    # Issue 10: prototype 1's column sum is ~3.5e-17 after the max shift; a 1e-12 clamp left it
    # under-normalized and returned [[0.937, 0.063], [0.214, 0.786]].
    scores = torch.tensor([[1.0, -1.0], [0.9, -0.9]])
    q = sinkhorn(scores, 0.05, 3)
    expected = exact_sinkhorn_float64(scores, 0.05, 3)
    torch.testing.assert_close(q.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q, torch.tensor([[0.881, 0.119], [0.119, 0.881]]), rtol=0, atol=1e-3)


def test_near_collapse_matches_float64_on_random_gaps():
    # Every sample prefers prototype 0 by a wide margin: the regime equipartition exists for.
    torch.manual_seed(3)
    scores = torch.rand(40, 6) * 0.2
    scores[:, 0] += 1.0
    scores[:, 1:] -= 0.8
    for epsilon in (0.05, 0.03):
        q = sinkhorn(scores, epsilon, 3)
        torch.testing.assert_close(
            q.double(), exact_sinkhorn_float64(scores, epsilon, 3), rtol=1e-4, atol=1e-6
        )
        # The far prototypes still receive mass: equipartition is approached, not abandoned.
        assert float(q.sum(0).min()) > 0.5 * 40 / 6


def test_leading_dims_are_independent_problems():
    """(T, N, K) scores give the T codes that T separate calls give: one batched solve per step."""
    torch.manual_seed(3)
    scores = torch.nn.functional.normalize(torch.randn(3, 30, 7), dim=-1)
    batched = sinkhorn(scores, 0.05, 3)
    assert batched.shape == (3, 30, 7)
    for t in range(3):
        torch.testing.assert_close(batched[t], sinkhorn(scores[t], 0.05, 3))
