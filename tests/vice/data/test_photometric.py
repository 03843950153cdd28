import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from vice.data.photometric import (
    BLUR_KERNEL_SIZE,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    photometric,
)


def test_photometric_ops_match_torchvision_per_view():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    factors = torch.tensor([0.2, 0.9, 1.4, 1.8])
    shifts = torch.tensor([-0.5, -0.13, 0.07, 0.4])
    sigmas = torch.tensor([0.1, 0.7, 1.3, 2.0])
    pairs = [
        (adjust_brightness, TF.adjust_brightness, factors),
        (adjust_contrast, TF.adjust_contrast, factors),
        (adjust_saturation, TF.adjust_saturation, factors),
        (adjust_hue, TF.adjust_hue, shifts),
    ]
    for ours, theirs, values in pairs:
        expected = torch.stack([theirs(x[i], float(values[i])) for i in range(4)])
        torch.testing.assert_close(ours(x, values), expected, atol=1e-5, rtol=0)
    expected = torch.stack(
        [TF.gaussian_blur(x[i], [BLUR_KERNEL_SIZE] * 2, [float(sigmas[i])]) for i in range(4)]
    )
    torch.testing.assert_close(gaussian_blur(x, sigmas), expected, atol=1e-5, rtol=0)


def test_photometric_stays_in_range_and_changes_views():
    x = torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    out = photometric(x, 1.0, 0.2, 0.5, np.random.default_rng(0))
    assert out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().amax(dim=(1, 2, 3)).min() > 0.01
    torch.testing.assert_close(out, photometric(x, 1.0, 0.2, 0.5, np.random.default_rng(0)))
    # with every probability at 0 and strength 0 the views are unchanged
    torch.testing.assert_close(photometric(x, 0.0, 0.0, 0.0, np.random.default_rng(0)), x)
