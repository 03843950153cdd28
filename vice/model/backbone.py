"""ResNet backbones that return the stride-4..32 feature pyramid (c2..c5), with optional dilation.

Output stride 8 dilates layer3 and layer4, output stride 16 dilates layer4 only, 32 dilates nothing.
Bottleneck ResNets (50/101) use torchvision's ``replace_stride_with_dilation``; torchvision refuses
dilation for BasicBlock ResNets (18/34), so :func:`dilate_layer_` converts their strides once at build
time with the same rule torchvision uses for Bottlenecks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet

#: Output strides a backbone can be built at -> which of (layer2, layer3, layer4) trade stride for dilation.
OUTPUT_STRIDES = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}

#: ``model.num_stages``: 4 uses c2..c5 (the paper), 3 stops after layer3.
NUM_STAGES = (3, 4)
#: name -> (torchvision builder, channels of c2..c5, uses Bottleneck blocks (torchvision can dilate them)).
_ARCHS = {
    "resnet18": (resnet.resnet18, (64, 128, 256, 512), False),
    "resnet34": (resnet.resnet34, (64, 128, 256, 512), False),
    "resnet50": (resnet.resnet50, (256, 512, 1024, 2048), True),
    "resnet101": (resnet.resnet101, (256, 512, 1024, 2048), True),
}


def dilate_layer_(layer: nn.Sequential, dilation: int) -> int:
    """Replace the stride-2 convs of a ResNet layer by dilation, in place, keeping the receptive field.

    Every 3x3 conv gets the dilation of the stride its input had in the original network relative
    to the new one: ``dilation`` up to and including the stride conv, twice that after it. For a
    Bottleneck layer this is exactly torchvision's ``replace_stride_with_dilation``.

    Args:
        layer: a torchvision ResNet layer (``layer1``..``layer4``) with one stride-2 block at most.
        dilation: the dilation the layer's input already has (1 for an undilated input).

    Returns:
        The dilation of the layer's output, to pass to the next layer.
    """
    for block in layer:
        for name, conv in block.named_modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            if conv.kernel_size == (3, 3):
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation, dilation)
            if conv.stride == (2, 2):
                conv.stride = (1, 1)
                if not name.startswith("downsample"):
                    dilation *= 2
    return dilation


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier, returning ``[c2, c3, c4, c5]``.

    Submodule names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``), so a torchvision
    ``state_dict`` without ``fc.*`` loads as is (see :func:`load_pretrained`).

    With ``num_stages=3`` the network stops after layer3 (no ``layer4`` module, no c5): a smaller
    receptive field and about half the compute of a dilated ResNet-18.

    Attributes:
        channels: channels of c2..c5 (c2..c4 with 3 stages).
        output_stride: stride of the last feature map with respect to the input.
    """

    def __init__(
        self, net: resnet.ResNet, channels: tuple[int, ...], output_stride: int, num_stages: int = 4
    ) -> None:
        super().__init__()
        if num_stages not in NUM_STAGES:
            raise ValueError(f"model.num_stages={num_stages} is invalid: one of {NUM_STAGES}")
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4 if num_stages == 4 else None
        self.channels = channels[:num_stages]
        self.output_stride = output_stride

    def forward(self, x: Tensor) -> list[Tensor]:
        """Compute the feature pyramid.

        Args:
            x: images (B, 3, H, W).

        Returns:
            ``[c2, c3, c4, c5]`` (``[c2, c3, c4]`` with 3 stages): c2 at stride 4, c3 at stride 8,
            c4 and c5 at stride ``min(16, output_stride)`` and ``output_stride``; each
            (B, channels[i], h_i, w_i).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        if self.layer4 is None:
            return [c2, c3, c4]
        return [c2, c3, c4, self.layer4(c4)]


def build_backbone(name: str, output_stride: int, num_stages: int = 4) -> ResNetBackbone:
    """Build a randomly initialized ResNet backbone (never downloads weights).

    Args:
        name: ``resnet18`` | ``resnet34`` | ``resnet50`` | ``resnet101``.
        output_stride: 8, 16 or 32.
        num_stages: 4 (c2..c5, the paper) or 3 (stop after layer3).

    Returns:
        The backbone; load weights with :func:`load_pretrained`.
    """
    if name not in _ARCHS:
        raise ValueError(f"model.backbone={name!r} is unknown: use one of {tuple(_ARCHS)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(
            f"model.output_stride={output_stride} is unsupported: use one of {tuple(OUTPUT_STRIDES)}"
        )
    factory, channels, bottleneck = _ARCHS[name]
    dilate = OUTPUT_STRIDES[output_stride]
    if bottleneck:
        net = factory(weights=None, replace_stride_with_dilation=list(dilate))
    else:
        net = factory(weights=None)
        dilation = 1
        for layer, use_dilation in zip((net.layer2, net.layer3, net.layer4), dilate, strict=True):
            if use_dilation:
                dilation = dilate_layer_(layer, dilation)
    return ResNetBackbone(net, channels, output_stride, num_stages)


def load_pretrained(backbone: ResNetBackbone, path: str | Path) -> None:
    """Load a torchvision ResNet ``state_dict`` from a local file into ``backbone``, ignoring ``fc.*``.

    Args:
        backbone: the backbone to fill in place.
        path: a file written by ``torch.save(torchvision_resnet.state_dict(), path)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a state dict, or its backbone keys or shapes do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.pretrained={str(path)!r} does not exist: point it to a local torchvision ResNet "
            "state dict (torch.save(resnet50(weights=...).state_dict(), path)) or set it to null"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict: save model.state_dict()")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if backbone.layer4 is None:  # a 3-stage backbone takes the first three stages of the file
        state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    expected = set(backbone.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the {type(backbone).__name__} keys: missing {missing[:5]} "
            f"({len(missing)} in all), unexpected {unexpected[:5]} ({len(unexpected)} in all); "
            "save a plain torchvision ResNet state dict of the same depth (no 'module.' prefix)"
        )
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the backbone (wrong depth?): {err}") from err
