"""The dense embedder: backbone -> decoder -> 1x1 to D -> upsample to the input -> L2 normalize."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vice.model.backbone import ResNetBackbone
from vice.model.decoders import Decoder

#: Floor on the channel norm in the L2 normalization (``F.normalize``'s ``eps``).
NORM_EPS = 1e-12


class DenseEmbedder(nn.Module):
    """Per-pixel embeddings on the unit sphere, at the input's resolution (identity head, no MLP).

    Attributes:
        embed_dim: D.
    """

    def __init__(self, backbone: ResNetBackbone, decoder: Decoder, embed_dim: int) -> None:
        """Compose the parts.

        Args:
            backbone: maps (B, 3, H, W) to ``[c2, c3, c4, c5]``.
            decoder: maps the pyramid to (B, decoder.out_channels, h, w) at stride 4.
            embed_dim: D.
        """
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.head = nn.Conv2d(decoder.out_channels, embed_dim, kernel_size=1)
        self.embed_dim = embed_dim

    def _logits(self, x: Tensor) -> Tensor:
        """Return the unnormalized stride-4 embeddings (B, D, h, w) of images (B, 3, H, W)."""
        return self.head(self.decoder(self.backbone(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Embed every pixel.

        Args:
            x: normalized images (B, 3, H, W); any H, W.

        Returns:
            (B, D, H, W), L2-normalized over D (bilinear upsampling happens before the normalization).
        """
        z = F.interpolate(self._logits(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return F.normalize(z, dim=1, eps=NORM_EPS)

    def embed_lowres(self, x: Tensor) -> Tensor:
        """Embed at the decoder's stride-4 resolution, without upsampling.

        Args:
            x: normalized images (B, 3, H, W).

        Returns:
            (B, D, h, w) with h, w = c2's size (about H/4, W/4), L2-normalized over D.
        """
        return F.normalize(self._logits(x), dim=1, eps=NORM_EPS)
