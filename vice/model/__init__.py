"""The dense embedding network: ResNet backbone, FPN or DeepLabV3+ decoder, L2-normalized head."""

from __future__ import annotations

from vice.config import ModelConfig
from vice.model.backbone import build_backbone, load_pretrained
from vice.model.decoders import DECODER_CHANNELS, build_decoder
from vice.model.embedder import DenseEmbedder

__all__ = ["DenseEmbedder", "build_model"]


def build_model(cfg: ModelConfig) -> DenseEmbedder:
    """Build the embedder from the model sub-config, loading ``cfg.pretrained`` if set.

    SyncBN (``cfg.sync_bn``) is not applied here: it needs the process group, so the distributed
    setup converts the built model.

    Args:
        cfg: the ``model`` section of the config.

    Returns:
        The embedder, mapping (B, 3, H, W) to (B, cfg.embed_dim, H, W).
    """
    backbone = build_backbone(cfg.backbone, cfg.output_stride, cfg.num_stages)
    if cfg.pretrained:
        load_pretrained(backbone, cfg.pretrained)
    channels = cfg.decoder_channels or DECODER_CHANNELS[cfg.decoder]
    decoder = build_decoder(cfg.decoder, backbone.channels, channels, cfg.output_stride)
    return DenseEmbedder(backbone, decoder, cfg.embed_dim)
