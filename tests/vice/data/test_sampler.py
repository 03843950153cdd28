import pytest

from vice.data.sampler import ResumableBatchSampler, epoch_batches, steps_per_epoch


def test_steps_per_epoch_drops_the_remainder():
    assert steps_per_epoch(10, 2, 2) == 2
    with pytest.raises(ValueError, match=r"lower data\.batch_size"):
        steps_per_epoch(3, 2, 2)


def test_epoch_batches_partition_the_epoch_across_ranks():
    per_rank = [epoch_batches(12, 3, seed=5, epoch=1, rank=r, world_size=2) for r in (0, 1)]
    flat = sorted(i for batches in per_rank for b in batches for i in b)
    assert flat == list(range(12))
    assert epoch_batches(12, 3, 5, 1, 0, 2) == per_rank[0]
    assert epoch_batches(12, 3, 5, 2, 0, 2) != per_rank[0]


def test_resumed_sampler_yields_the_tail_of_the_uninterrupted_one():
    full = list(ResumableBatchSampler(10, 3, seed=0, rank=0, world_size=1, start_step=0, max_steps=8))
    assert len(full) == 8
    assert [b[0][0] for b in full] == [0, 0, 0, 1, 1, 1, 2, 2]  # 3 steps per epoch
    for start in (1, 3, 7):
        tail = list(ResumableBatchSampler(10, 3, seed=0, rank=0, world_size=1, start_step=start, max_steps=8))
        assert tail == full[start:]
