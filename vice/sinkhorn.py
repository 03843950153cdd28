"""Sinkhorn-Knopp equipartition of region scores into soft prototype codes (SwAV targets)."""

from __future__ import annotations

import torch
import torch.distributed as dist

#: Guards the divisions of the row/column normalizations against a zero sum.
SINKHORN_DIV_EPS = 1e-12


def _all_reduce_(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Soft codes Q whose prototype marginal is uniform over the global batch.

    Works in float32 whatever the input dtype, subtracts the (global) max before ``exp`` so that
    ``scores / epsilon`` beyond float32's exp range stays finite, and all-reduces every sum under
    DDP so that the equipartition holds over the samples of all ranks.

    Invariants of the result (single process): each row sums to 1; after the last column step
    each prototype's total weight is N_global / K before the final row step rescales rows.

    Args:
        scores: (N, K) cosine scores of the local samples against the K prototypes.
        epsilon: entropic regularization; smaller is sharper.
        iterations: number of (column, row) normalization rounds.

    Returns:
        (N, K) float32 codes; rows sum to 1.
    """
    logits = scores.float() / epsilon  # (N, K)
    global_max = _all_reduce_(logits.max().clone(), dist.ReduceOp.MAX)
    q = torch.exp(logits - global_max).t()  # (K, N)
    num_prototypes = q.shape[0]
    num_samples = _all_reduce_(torch.tensor(float(q.shape[1]), device=q.device), dist.ReduceOp.SUM)

    total = _all_reduce_(q.sum(), dist.ReduceOp.SUM)
    q /= total.clamp_min(SINKHORN_DIV_EPS)
    for _ in range(iterations):
        # Each prototype's total weight must become 1/K.
        col = _all_reduce_(q.sum(dim=1, keepdim=True), dist.ReduceOp.SUM)  # (K, 1)
        q /= col.clamp_min(SINKHORN_DIV_EPS)
        q /= num_prototypes
        # Each sample's total weight must become 1/N.
        q /= q.sum(dim=0, keepdim=True).clamp_min(SINKHORN_DIV_EPS)  # (K, N) / (1, N)
        q /= num_samples
    return (q * num_samples).t()  # (N, K), rows sum to 1
