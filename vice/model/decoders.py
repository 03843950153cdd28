"""Decoders from the ResNet pyramid ``[c2, c3, c4, c5]`` to one stride-4 feature map.

Both keep a stride-4 input (c2): a decoder fed only by stride-8/16 features learned a per-image
shortcut in our CPU prototype (one cluster per image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: ASPP atrous rates at output stride 16 (DeepLabV3+); they scale with 16 / output_stride.
ASPP_RATES_OS16 = (6, 12, 18)
#: Channels of DeepLabV3+'s low-level (c2) projection.
LOW_LEVEL_CHANNELS = 48
#: ``model.decoder_channels: null`` means these: PiCIE's FPN width and DeepLabV3+'s ASPP width.
DECODER_CHANNELS = {"fpn": 128, "deeplabv3plus": 256}


def _resize_to(x: Tensor, ref: Tensor, mode: str) -> Tensor:
    """Resize ``x`` (B, C, h, w) to the spatial size of ``ref`` (B, C', h', w'); no-op when equal."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    align = False if mode == "bilinear" else None
    return F.interpolate(x, size=ref.shape[-2:], mode=mode, align_corners=align)


class Decoder(nn.Module):
    """Base of the decoders: maps ``[c2, c3, c4, c5]`` to (B, out_channels, h_2, w_2) at stride 4."""

    out_channels: int


class FPNDecoder(Decoder):
    """PiCIE-style FPN: 1x1 laterals on c2..c5, top-down upsample-and-add, output at stride 4.

    Attributes:
        out_channels: channels of the output map.
    """

    def __init__(
        self, in_channels: Sequence[int], channels: int = 128, upsample_mode: str = "bilinear"
    ) -> None:
        """Build the laterals.

        Args:
            in_channels: channels of c2..c5.
            channels: channels of every lateral and of the output.
            upsample_mode: ``bilinear`` or ``nearest`` for the top-down path.
        """
        super().__init__()
        if upsample_mode not in ("bilinear", "nearest"):
            raise ValueError(f"upsample_mode={upsample_mode!r} is unknown: use 'bilinear' or 'nearest'")
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, kernel_size=1) for c in in_channels)
        self.upsample_mode = upsample_mode
        self.out_channels = channels

    def forward(self, features: list[Tensor]) -> Tensor:
        """Fuse the pyramid top-down.

        Args:
            features: ``[c2, c3, c4, c5]``, each (B, in_channels[i], h_i, w_i), c2 at stride 4.

        Returns:
            (B, channels, h_2, w_2): the fused map at c2's resolution.
        """
        laterals = [conv(f) for conv, f in zip(self.laterals, features, strict=True)]
        out = laterals[-1]
        for lateral in reversed(laterals[:-1]):
            out = lateral + _resize_to(out, lateral, self.upsample_mode)
        return out


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 (dilated) conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        """Build the two convs.

        Args:
            in_channels: input channels (also the depthwise groups).
            out_channels: output channels of the pointwise conv.
            dilation: dilation (and padding) of the depthwise 3x3 conv.
        """
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size=3,
                padding=dilation,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def _conv1x1_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def aspp_rates(output_stride: int) -> tuple[int, ...]:
    """Return DeepLabV3+'s atrous rates for an output stride: (12, 24, 36) at 8, (6, 12, 18) at 16."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"model.output_stride={output_stride} has no ASPP rates: use 8, 16 or 32")
    return tuple(r * 16 // output_stride for r in ASPP_RATES_OS16)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with depthwise-separable atrous branches and image pooling.

    The image-pooling branch has BatchNorm over a 1x1 map, so training needs a batch of 2 or more.
    """

    def __init__(self, in_channels: int, channels: int, rates: Sequence[int]) -> None:
        """Build the branches.

        Args:
            in_channels: channels of c5.
            channels: channels of every branch and of the projected output.
            rates: atrous rates of the separable 3x3 branches.
        """
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv1x1_bn_relu(in_channels, channels)]
            + [SeparableConvBNReLU(in_channels, channels, dilation=r) for r in rates]
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv1x1_bn_relu(in_channels, channels))
        self.project = _conv1x1_bn_relu(channels * (len(rates) + 2), channels)

    def forward(self, x: Tensor) -> Tensor:
        """Apply every branch and project their concatenation.

        Args:
            x: c5 (B, in_channels, h, w).

        Returns:
            (B, channels, h, w).
        """
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])  # (B, channels, h, w)
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3PlusDecoder(Decoder):
    """DeepLabV3+ decoder: ASPP on c5, fused with a 48-ch projection of c2, output at stride 4.

    Attributes:
        out_channels: channels of the output map.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 256, output_stride: int = 8) -> None:
        """Build ASPP and the low-level fusion.

        Args:
            in_channels: channels of c2..c5.
            channels: channels of ASPP and of the two fusing separable convs (256 in the paper).
            output_stride: the backbone's output stride; sets the ASPP rates (:func:`aspp_rates`).
        """
        super().__init__()
        self.aspp = ASPP(in_channels[-1], channels, aspp_rates(output_stride))
        self.low_level = _conv1x1_bn_relu(in_channels[0], LOW_LEVEL_CHANNELS)
        self.fuse = nn.Sequential(
            SeparableConvBNReLU(channels + LOW_LEVEL_CHANNELS, channels),
            SeparableConvBNReLU(channels, channels),
        )
        self.out_channels = channels

    def forward(self, features: list[Tensor]) -> Tensor:
        """Decode the pyramid.

        Args:
            features: ``[c2, c3, c4, c5]``, each (B, in_channels[i], h_i, w_i), c2 at stride 4.

        Returns:
            (B, channels, h_2, w_2): the decoded map at c2's resolution.
        """
        low = self.low_level(features[0])
        high = _resize_to(self.aspp(features[-1]), low, "bilinear")
        return self.fuse(torch.cat([high, low], dim=1))


def build_decoder(name: str, in_channels: Sequence[int], channels: int, output_stride: int) -> Decoder:
    """Build a decoder by its config name.

    Args:
        name: ``fpn`` | ``deeplabv3plus``.
        in_channels: channels of c2..c5.
        channels: ``model.decoder_channels`` (128 for PiCIE's FPN, 256 for the paper's DeepLabV3+).
        output_stride: the backbone's output stride.

    Returns:
        A module mapping ``[c2, c3, c4, c5]`` to (B, channels, h_2, w_2), with ``out_channels``.
    """
    if name == "fpn":
        return FPNDecoder(in_channels, channels)
    if name == "deeplabv3plus":
        return DeepLabV3PlusDecoder(in_channels, channels, output_stride)
    raise ValueError(f"model.decoder={name!r} is unknown: use 'fpn' or 'deeplabv3plus'")
