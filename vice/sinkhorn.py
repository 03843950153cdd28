"""Sinkhorn-Knopp equipartition of region scores into soft prototype codes (SwAV targets)."""

from __future__ import annotations

import math

import torch

from vice.dist import all_reduce_


def _logsumexp(log_q: torch.Tensor, dim: int | None, across_ranks: bool) -> torch.Tensor:
    """``log Σ exp`` over ``dim`` (None: the last two dims), summed over all ranks if ``across_ranks``.

    The max is subtracted before ``exp`` (all-reduced with MAX across ranks), so the largest term is
    exp(0) = 1 and the sum is >= 1: nothing underflows to a zero sum, whatever the score gap / epsilon.

    Args:
        log_q: (..., K, N) log weights.
        dim: -1 sums over samples (a prototype's mass), -2 over prototypes (a sample's), None both.
        across_ranks: all-reduce the max and the sum (the samples dimension is split across ranks).

    Returns:
        (..., K, 1), (..., 1, N) or (..., 1, 1).
    """
    dims = (-2, -1) if dim is None else (dim,)
    peak = log_q.amax(dim=dims, keepdim=True)
    if across_ranks:
        peak = all_reduce_(peak.clone(), "max")
    total = (log_q - peak).exp().sum(dim=dims, keepdim=True)
    if across_ranks:
        total = all_reduce_(total, "sum")
    return peak + total.log()


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Soft codes Q whose prototype marginal is uniform over the global batch.

    SwAV's normalizations, in the log domain and in float32 whatever the input dtype: every sum is a
    max-shifted log-sum-exp, so a prototype whose scores all lie far below the others' (a cosine gap
    of 1.4 at epsilon = 0.05 is a factor exp(-28)) is still normalized exactly, where a clamped
    division would leave it under-weighted. Under DDP the sums over samples are all-reduced, so the
    equipartition holds over the samples of all ranks.

    Invariants of the result (single process): each row sums to 1; after the last column step
    each prototype's total weight is N_global / K before the final row step rescales rows.

    Args:
        scores: (..., N, K) cosine scores of the local samples against the K prototypes; leading
            dims are independent problems (e.g. one per target view), solved in one batch.
        epsilon: entropic regularization; smaller is sharper.
        iterations: number of (column, row) normalization rounds.

    Returns:
        (..., N, K) float32 codes; rows sum to 1.
    """
    log_q = (scores.float() / epsilon).transpose(-1, -2)  # (..., K, N)
    num_prototypes = log_q.shape[-2]
    num_samples = all_reduce_(torch.tensor(float(log_q.shape[-1]), device=log_q.device), "sum")
    log_k, log_n = math.log(num_prototypes), num_samples.log()
    log_q = log_q - _logsumexp(log_q, None, across_ranks=True)
    for _ in range(iterations):
        # Each prototype's total weight must become 1/K.
        log_q = log_q - _logsumexp(log_q, -1, across_ranks=True) - log_k  # (..., K, N) - (..., K, 1)
        # Each sample's total weight must become 1/N.
        log_q = log_q - _logsumexp(log_q, -2, across_ranks=False) - log_n  # (..., K, N) - (..., 1, N)
    return (log_q + log_n).exp().transpose(-1, -2)  # (..., N, K), rows sum to 1
