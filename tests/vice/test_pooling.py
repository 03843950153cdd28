import pytest
import torch

from vice.pooling import region_means


def loop_reference(emb, regions, num_regions, num_views):
    """The authors' way: a boolean mask and a mean per region, per view, per image."""
    rows = []
    for m in range(num_views):
        view_rows = []
        for b, r_b in enumerate(num_regions.tolist()):
            for r in range(r_b):
                mask = regions[b * num_views + m] == r
                view_rows.append(emb[b * num_views + m][:, mask].mean(dim=1))
        rows.append(torch.stack(view_rows))
    return torch.stack(rows)


def test_hand_computed_means():
    # One image, two views, 2x2 maps with ids [[0,0],[1,-1]] and [[1,0],[-1,1]].
    emb = torch.tensor(
        [
            [[[1.0, 3.0], [5.0, 100.0]]],  # view 0, D = 1
            [[[2.0, 4.0], [100.0, 8.0]]],  # view 1
        ]
    )
    regions = torch.tensor([[[0, 0], [1, -1]], [[1, 0], [-1, 1]]])
    out = region_means(emb, regions, torch.tensor([2]), 2)
    expected = torch.tensor([[[2.0], [5.0]], [[4.0], [5.0]]])  # (M=2, N=2, D=1)
    torch.testing.assert_close(out, expected)


def test_equals_loop_reference_on_random_maps():
    torch.manual_seed(0)
    b, m, d, h, w = 3, 4, 6, 9, 11
    num_regions = torch.tensor([5, 1, 7])
    regions = torch.stack([torch.randint(-1, int(num_regions[i // m]), (h, w)) for i in range(b * m)])
    # Every region must appear in every view (mutual regions); plant one pixel of each.
    for i in range(b * m):
        r_b = int(num_regions[i // m])
        regions[i].view(-1)[:r_b] = torch.arange(r_b)
    emb = torch.randn(b * m, d, h, w, dtype=torch.float64)
    torch.testing.assert_close(
        region_means(emb, regions, num_regions, m), loop_reference(emb, regions, num_regions, m)
    )


def test_gradient_is_one_over_count_and_ignore_gets_none():
    regions = torch.tensor([[[0, 0, 0], [1, -1, 1]]])  # region 0: 3 px, region 1: 2 px, one ignore
    emb = torch.randn(1, 2, 2, 3, requires_grad=True)
    region_means(emb, regions, torch.tensor([2]), 1).sum().backward()
    expected = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1 / 2, 0.0, 1 / 2]]).expand(2, 2, 3)
    torch.testing.assert_close(emb.grad[0], expected)


def test_ignore_pixels_do_not_change_means():
    torch.manual_seed(3)
    regions = torch.tensor([[[0, 1], [-1, -1]]])
    emb = torch.randn(1, 4, 2, 2)
    before = region_means(emb, regions, torch.tensor([2]), 1)
    emb[:, :, 1, :] = 1e6
    torch.testing.assert_close(region_means(emb, regions, torch.tensor([2]), 1), before)


def test_channels_last_input_gives_same_result():
    torch.manual_seed(4)
    regions = torch.randint(0, 5, (2, 8, 8))
    regions[:, 0, :5] = torch.arange(5)
    emb = torch.randn(2, 3, 8, 8)
    a = region_means(emb, regions, torch.tensor([5, 5]), 1)
    b = region_means(emb.contiguous(memory_format=torch.channels_last), regions, torch.tensor([5, 5]), 1)
    torch.testing.assert_close(a, b)


def test_size_mismatch_message_says_how_to_fix():
    with pytest.raises(ValueError, match="resize region maps with nearest"):
        region_means(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long), torch.tensor([1]), 1)
