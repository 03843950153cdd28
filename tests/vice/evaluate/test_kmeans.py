import torch
import torch.nn.functional as F

from vice.evaluate.kmeans import PixelReservoir, assign_clusters, assign_map, fit_kmeans


def _blobs(
    num_per: int, centres: torch.Tensor, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(centres.shape[0]).repeat_interleave(num_per)
    points = centres[labels] + spread * torch.randn(labels.numel(), centres.shape[1], generator=generator)
    return points, labels


def _purity(assigned: torch.Tensor, labels: torch.Tensor, num: int) -> float:
    table = torch.zeros(num, num, dtype=torch.int64)
    table.index_put_((assigned, labels), torch.ones_like(labels), accumulate=True)
    return float(table.max(dim=1).values.sum()) / labels.numel()


def test_kmeans_recovers_separated_blobs_l2():
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    points, labels = _blobs(200, centres, 0.5, seed=0)
    centroids = fit_kmeans(points, 4, iterations=20, seed=1, spherical=False)
    assigned = assign_clusters(points, centroids, spherical=False)
    assert _purity(assigned, labels, 4) == 1.0
    # every true centre has a centroid within 0.2
    distances = torch.cdist(centres, centroids).min(dim=1).values
    assert distances.max() < 0.2


def test_spherical_kmeans_on_normalized_embeddings():
    centres = F.normalize(torch.eye(8)[:5] + 0.1, dim=1)
    points, labels = _blobs(100, centres, 0.05, seed=2)
    points = F.normalize(points, dim=1)
    centroids = fit_kmeans(points, 5, iterations=20, seed=0, spherical=True)
    assert torch.allclose(centroids.norm(dim=1), torch.ones(5), atol=1e-5)
    assert _purity(assign_clusters(points, centroids, spherical=True), labels, 5) == 1.0


def test_assignment_equals_brute_force_nearest():
    generator = torch.Generator().manual_seed(3)
    points = torch.randn(500, 6, generator=generator)
    centroids = torch.randn(7, 6, generator=generator)
    expected = torch.cdist(points, centroids).argmin(dim=1)
    assert torch.equal(assign_clusters(points, centroids, spherical=False), expected)
    unit = F.normalize(points, dim=1)
    unit_centroids = F.normalize(centroids, dim=1)
    assert torch.equal(
        assign_clusters(unit, unit_centroids, spherical=True), (unit @ unit_centroids.T).argmax(1)
    )


def test_assign_map_matches_flat_assignment():
    generator = torch.Generator().manual_seed(4)
    maps = torch.randn(2, 3, 4, 5, generator=generator)
    centroids = torch.randn(6, 3, generator=generator)
    flat = maps.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = assign_clusters(flat, centroids, spherical=False).view(2, 4, 5)
    assert torch.equal(assign_map(maps, centroids, spherical=False), expected)
    assert torch.equal(assign_map(maps[1:], centroids, spherical=False)[0, 2, 3], expected[1, 2, 3])


def test_reservoir_keeps_smallest_keys_whatever_the_batching():
    generator = torch.Generator().manual_seed(5)
    keys = torch.randperm(10_000, generator=generator)
    features = keys.float().unsqueeze(1).repeat(1, 2)
    labels = keys % 3
    expected_keys = torch.sort(keys).values[:300]
    for batch in (1_000, 77, 10_000):
        reservoir = PixelReservoir(300)
        for start in range(0, keys.numel(), batch):
            part = slice(start, start + batch)
            reservoir.add(features[part], labels[part], keys[part])
        sampled, sampled_labels = reservoir.sample()
        assert torch.equal(sampled[:, 0].long(), expected_keys)
        assert torch.equal(sampled_labels, expected_keys % 3)
        assert reservoir.num_seen == 10_000


def test_reservoir_smaller_than_capacity_keeps_everything():
    reservoir = PixelReservoir(100)
    reservoir.add(torch.ones(5, 2), torch.zeros(5, dtype=torch.int64), torch.tensor([4, 3, 2, 1, 0]))
    features, _ = reservoir.sample()
    assert features.shape == (5, 2)
