"""SwAV swapped prediction over region means: prototypes, queue and the loss of equation 3."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vice.pooling import region_means
from vice.sinkhorn import sinkhorn

#: Guards the L2 normalization of region means and prototypes against a zero vector.
NORMALIZE_EPS = 1e-12


def swapped_prediction_loss(
    scores: torch.Tensor,
    codes: torch.Tensor,
    temperature: float,
    num_regions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Equation 3: cross-entropy of every view against the codes of each other (target) view.

    Target view t's codes are predicted by every view v != t; the loss averages over those
    T * (M - 1) pairs. With T = 1 this is the paper's equation 3 (views 1..M-1 predict view 0);
    with T = M it is SwAV's swap over all views. Equation 3 averages over the I regions of each image
    first, then over images and pairs, so an image with many small superpixels weighs as much as one
    with few large ones.

    Args:
        scores: (M, N, K) scores of all views.
        codes: (T, N, K) Sinkhorn codes of views 0..T-1 (rows sum to 1), T <= M.
        temperature: tau.
        num_regions: (B,) int64 regions per image, summing to N (regions ordered by image); None
            treats the N regions as one image (a plain mean).

    Returns:
        Scalar loss.
    """
    num_targets, num_views = codes.shape[0], scores.shape[0]
    if not 1 <= num_targets <= num_views or num_views < 2:
        raise ValueError(f"need 2 <= M and 1 <= T <= M views; got M={num_views}, T={num_targets}")
    log_p = F.log_softmax(scores.float() / temperature, dim=-1)  # (M, N, K)
    cross = -(codes.unsqueeze(1) * log_p.unsqueeze(0)).sum(dim=-1)  # (T, M, N)
    # Weights, not a boolean index: indexing by a mask would sync the host with a CUDA device.
    others = 1.0 - torch.eye(num_targets, num_views, dtype=cross.dtype, device=cross.device)  # (T, M)
    per_region = (cross * others.unsqueeze(-1)).sum(dim=(0, 1)) / (num_targets * (num_views - 1))  # (N,)
    if num_regions is None:
        return per_region.mean()
    # 1 / I of each region's image, without a host sync: output_size is known.
    image_size = torch.repeat_interleave(num_regions, num_regions, output_size=per_region.shape[0])  # (N,)
    num_images = (num_regions > 0).sum().clamp(min=1)
    return (per_region / image_size.to(per_region.dtype)).sum() / num_images


class Prototypes(nn.Module):
    """K unit-norm prototype vectors in D dimensions (a bias-free linear layer).

    Args:
        embed_dim: D.
        num_prototypes: K.
    """

    def __init__(self, embed_dim: int, num_prototypes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_prototypes, embed_dim))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(embed_dim))
        self.normalize_()

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project every prototype back to the unit sphere (call after each optimizer step)."""
        self.weight.copy_(F.normalize(self.weight, dim=1, eps=NORMALIZE_EPS))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Score L2-normalized embeddings: (..., D) -> (..., K)."""
        return z @ self.weight.t()


class RegionQueue(nn.Module):
    """FIFO of view-0 region embeddings, re-scored with the current prototypes each step.

    The buffer starts empty; :meth:`push` is the only state change. ``filled`` counts valid rows.

    Args:
        length: rows kept (per rank).
        embed_dim: D.
    """

    embeddings: torch.Tensor
    filled: torch.Tensor

    def __init__(self, length: int, embed_dim: int) -> None:
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(length, embed_dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def length(self) -> int:
        """Capacity of the queue."""
        return int(self.embeddings.shape[0])

    def contents(self) -> torch.Tensor:
        """The valid rows, newest first: (F, D) with F = filled."""
        return self.embeddings[: int(self.filled)]

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> None:
        """Insert (N, D) embeddings at the front, dropping the oldest rows beyond the capacity."""
        z = z.detach().to(self.embeddings.dtype)[: self.length]
        n = z.shape[0]
        self.embeddings.copy_(torch.cat([z, self.embeddings[: self.length - n]]))
        self.filled.fill_(min(self.length, int(self.filled) + n))


def swav_region_loss(
    means: torch.Tensor,
    prototypes: Prototypes,
    temperature: float,
    sinkhorn_epsilon: float,
    sinkhorn_iterations: int,
    num_regions: torch.Tensor,
    queue: torch.Tensor | None = None,
    target_views: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of one training step from the region means of all views.

    Args:
        means: (M, N, D) region means (not yet normalized), ordered by image.
        prototypes: the K prototypes.
        temperature: tau of the softmax.
        sinkhorn_epsilon: entropic regularization of Sinkhorn-Knopp.
        sinkhorn_iterations: Sinkhorn rounds.
        num_regions: (B,) int64 regions per image (summing to N), for equation 3's per-image mean.
        queue: (F, D) earlier view-0 embeddings, concatenated before each Sinkhorn and dropped after.
        target_views: T, the views 0..T-1 whose codes are targets (1: the paper, view 0 only).

    Returns:
        The scalar loss and the (N + F, K) codes of view 0 and of the queue, in that order (the loss
        uses the first N; all of them feed :func:`representation_health`).
    """
    # Scores, codes and loss in float32 even under autocast: bf16 logits / tau lose ~1e-2.
    with torch.autocast(means.device.type, enabled=False):
        z = F.normalize(means.float(), dim=-1, eps=NORMALIZE_EPS)  # (M, N, D)
        scores = prototypes(z)  # (M, N, K)
        with torch.no_grad():
            target_scores = scores[:target_views]  # (T, N, K)
            if queue is not None and queue.shape[0] > 0:
                queued = prototypes(queue.float()).expand(target_views, -1, -1)  # (T, F, K)
                target_scores = torch.cat([target_scores, queued], dim=1)  # (T, N+F, K)
            codes = sinkhorn(target_scores, sinkhorn_epsilon, sinkhorn_iterations)  # (T, N+F, K)
        loss = swapped_prediction_loss(scores, codes[:, : scores.shape[1]], temperature, num_regions)
        return loss, codes[0]


#: Floor inside the logarithms of the health metrics (0 log 0 = 0).
LOG_EPS = 1e-12


@torch.no_grad()
def representation_health(codes: torch.Tensor, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collapse indicators of one step, as 0-dim tensors (no host sync; read them at log time).

    Args:
        codes: (N, K) Sinkhorn codes (rows sum to 1), of the batch and the queue.
        embeddings: (N', D) L2-normalized region embeddings of view 0.

    Returns:
        ``prototype_usage``: perplexity of the codes' argmax histogram / K (1 = every prototype
        equally used, 1/K = one prototype takes everything);
        ``code_entropy``: mean entropy of a code row / ln K (0 = one-hot codes, 1 = uniform codes);
        ``embedding_std``: per-dimension std of the embeddings over regions, averaged over D and
        times sqrt(D) (about 1 for embeddings spread over the sphere, 0 when they collapse to a point).
    """
    num_prototypes = codes.shape[1]
    counts = torch.bincount(codes.argmax(dim=1), minlength=num_prototypes).float()  # (K,)
    share = counts / counts.sum().clamp_min(1)
    usage = torch.exp(-(share * share.clamp_min(LOG_EPS).log()).sum()) / num_prototypes
    row_entropy = -(codes * codes.clamp_min(LOG_EPS).log()).sum(dim=1)  # (N,)
    spread = (
        embeddings.float().std(dim=0).mean() * math.sqrt(embeddings.shape[1])
        if embeddings.shape[0] > 1
        else codes.new_zeros(())
    )
    return {
        "prototype_usage": usage,
        "code_entropy": row_entropy.mean() / math.log(num_prototypes),
        "embedding_std": spread,
    }


class RegionalSwav(nn.Module):
    """Embedder + prototypes; ``forward`` is one whole training loss, so DDP sees every parameter.

    Args:
        embedder: (B*M, 3, S, S) views -> (B*M, D, S, S) L2-normalized embedding maps.
        prototypes: the K prototypes.
        temperature: tau.
        sinkhorn_epsilon: Sinkhorn regularization.
        sinkhorn_iterations: Sinkhorn rounds.
        target_views: T, the views whose codes are targets (see :func:`swav_region_loss`).
    """

    def __init__(
        self,
        embedder: nn.Module,
        prototypes: Prototypes,
        temperature: float,
        sinkhorn_epsilon: float,
        sinkhorn_iterations: int,
        target_views: int = 1,
    ) -> None:
        super().__init__()
        self.target_views = target_views
        self.embedder = embedder
        self.prototypes = prototypes
        self.temperature = temperature
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iterations = sinkhorn_iterations

    def forward(
        self,
        views: torch.Tensor,
        regions: torch.Tensor,
        num_regions: torch.Tensor,
        num_views: int,
        queue: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss of one batch.

        Args:
            views: (B*M, 3, S, S) normalized views, flat index b*M + m.
            regions: (B*M, S, S) int64 mutual region ids, -1 = ignore.
            num_regions: (B,) int64 mutual regions per image.
            num_views: M.
            queue: (F, D) queued view-0 embeddings or None.

        Returns:
            See :meth:`loss_from_embeddings`.
        """
        embeddings = self.embedder(views)  # (B*M, D, S, S)
        return self.loss_from_embeddings(embeddings, regions, num_regions, num_views, queue)

    def loss_from_embeddings(
        self,
        embeddings: torch.Tensor,
        regions: torch.Tensor,
        num_regions: torch.Tensor,
        num_views: int,
        queue: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything after the embedder: region means, scores, Sinkhorn codes and the loss.

        Args:
            embeddings: (B*M, D, S, S) the embedder's output.
            regions: (B*M, S, S) int64 mutual region ids, -1 = ignore.
            num_regions: (B,) int64 mutual regions per image.
            num_views: M.
            queue: (F, D) queued view-0 embeddings or None.

        Returns:
            loss (scalar), codes (N + F, K) of view 0 and the queue, and the (N, D) normalized
            view-0 region means (what the queue stores).
        """
        means = region_means(embeddings, regions, num_regions, num_views)  # (M, N, D)
        loss, codes = swav_region_loss(
            means,
            self.prototypes,
            self.temperature,
            self.sinkhorn_epsilon,
            self.sinkhorn_iterations,
            num_regions,
            queue,
            self.target_views,
        )
        z0 = F.normalize(means[0].detach().float(), dim=-1, eps=NORMALIZE_EPS)  # (N, D)
        return loss, codes, z0
