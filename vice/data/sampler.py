"""Deterministic, resumable batches of (epoch, index) keys for the training loader."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def steps_per_epoch(num_items: int, batch_size: int, world_size: int) -> int:
    """Full batches per rank in one pass over the data (the remainder is dropped)."""
    steps = num_items // (batch_size * world_size)
    if steps == 0:
        raise ValueError(
            f"the dataset has {num_items} images, fewer than one global batch "
            f"(data.batch_size={batch_size} x world size {world_size}): lower data.batch_size"
        )
    return steps


def epoch_batches(
    num_items: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int
) -> list[list[int]]:
    """This rank's batches of dataset indices for one epoch.

    The order is a permutation seeded by (seed, epoch), sharded by rank, so it depends on nothing
    else (not on the worker count, not on whether the run was resumed).

    Returns:
        steps_per_epoch lists of ``batch_size`` indices each.
    """
    steps = steps_per_epoch(num_items, batch_size, world_size)
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_items, generator=gen)[: steps * batch_size * world_size]
    mine = order[rank::world_size].view(steps, batch_size)  # (steps, batch)
    return mine.tolist()


class ResumableBatchSampler:
    """Yields the batches of steps ``start_step .. max_steps - 1`` as lists of (epoch, index) keys.

    Args:
        num_items: dataset length.
        batch_size: images per rank.
        seed: data-order seed.
        rank: this process's rank.
        world_size: number of ranks.
        start_step: first step to yield (resume point).
        max_steps: total steps of the run.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        start_step: int,
        max_steps: int,
    ) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_step, self.max_steps = start_step, max_steps
        self.steps_per_epoch = steps_per_epoch(num_items, batch_size, world_size)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while step < self.max_steps:
            epoch, offset = divmod(step, self.steps_per_epoch)
            batches = epoch_batches(
                self.num_items, self.batch_size, self.seed, epoch, self.rank, self.world_size
            )
            for batch in batches[offset : offset + self.max_steps - step]:
                yield [(epoch, i) for i in batch]
                step += 1
