from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet

from vice.config import ModelConfig
from vice.model import build_model
from vice.model.backbone import build_backbone, dilate_layer_, load_pretrained
from vice.model.decoders import DeepLabV3PlusDecoder, FPNDecoder, aspp_rates
from vice.model.embedder import DenseEmbedder


def _gradient_extent(backbone: nn.Module, level: int, size: int) -> int:
    """Rows of the input that reach the centre unit of pyramid level ``level`` (its receptive field)."""
    backbone.eval()
    x = torch.randn(1, 3, size, size, requires_grad=True)
    feature = backbone(x)[level]
    h, w = feature.shape[-2:]
    feature[0, :, h // 2, w // 2].sum().backward()
    rows = (x.grad[0].abs().sum(dim=(0, 2)) > 0).nonzero().flatten()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize(
    ("output_stride", "sizes"),
    [(8, [16, 8, 8, 8]), (16, [16, 8, 4, 4]), (32, [16, 8, 4, 2])],
)
def test_backbone_pyramid_sizes(output_stride: int, sizes: list[int]) -> None:
    backbone = build_backbone("resnet18", output_stride)
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    assert [f.shape[-1] for f in features] == sizes
    assert [f.shape[1] for f in features] == [64, 128, 256, 512]
    assert backbone.channels == (64, 128, 256, 512)


def test_basicblock_dilation_keeps_receptive_field() -> None:
    # c4 of ResNet-18: receptive field 211 px (7 + 4 + 4*2*4 + 2*4 + 3*2*8 + 2*8 + 3*2*16).
    torch.manual_seed(0)
    assert _gradient_extent(build_backbone("resnet18", 32), level=2, size=256) == 211
    assert _gradient_extent(build_backbone("resnet18", 8), level=2, size=256) == 211
    # Dropping the stride without dilating shrinks it to 115 + 3*2*8 = 163 px.
    stride_only = build_backbone("resnet18", 32)
    for conv in stride_only.layer3.modules():
        if isinstance(conv, nn.Conv2d):
            conv.stride = (1, 1)
    assert _gradient_extent(stride_only, level=2, size=256) == 163


def test_dilate_layer_matches_torchvision_bottleneck_dilation() -> None:
    torch.manual_seed(0)
    native = resnet.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    converted = resnet.resnet50(weights=None)
    assert dilate_layer_(converted.layer3, 1) == 2
    assert dilate_layer_(converted.layer4, 2) == 4
    native_convs = {
        n: (m.stride, m.dilation, m.padding) for n, m in native.named_modules() if isinstance(m, nn.Conv2d)
    }
    converted_convs = {
        n: (m.stride, m.dilation, m.padding) for n, m in converted.named_modules() if isinstance(m, nn.Conv2d)
    }
    assert converted_convs == native_convs
    assert native_convs["layer3.0.conv2"] == ((1, 1), (1, 1), (1, 1))
    assert native_convs["layer4.0.conv2"] == ((1, 1), (2, 2), (2, 2))
    assert native_convs["layer4.2.conv2"] == ((1, 1), (4, 4), (4, 4))


def test_basicblock_dilation_rule() -> None:
    backbone = build_backbone("resnet18", 8)
    convs = {n: (m.stride, m.dilation) for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs["layer3.0.conv1"] == ((1, 1), (1, 1))
    assert convs["layer3.0.conv2"] == ((1, 1), (2, 2))
    assert convs["layer3.0.downsample.0"] == ((1, 1), (1, 1))
    assert convs["layer4.0.conv1"] == ((1, 1), (2, 2))
    assert convs["layer4.1.conv2"] == ((1, 1), (4, 4))


def test_load_pretrained_equals_saved_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = resnet.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(1)
    backbone = build_backbone("resnet18", 8)
    assert not torch.equal(backbone.conv1.weight, reference.conv1.weight)
    load_pretrained(backbone, path)
    loaded = backbone.state_dict()
    expected = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_load_pretrained_errors_name_the_file(tmp_path: Path) -> None:
    backbone = build_backbone("resnet18", 16)
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_pretrained(backbone, missing)
    prefixed = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in resnet.resnet18(weights=None).state_dict().items()}, prefixed)
    with pytest.raises(ValueError, match=r"ddp\.pth.*missing \['bn1\.bias'"):
        load_pretrained(backbone, prefixed)
    deeper = tmp_path / "r34.pth"
    torch.save(resnet.resnet34(weights=None).state_dict(), deeper)
    with pytest.raises(ValueError, match=r"r34\.pth.*unexpected \['layer1\.2\.bn1\.bias'"):
        load_pretrained(backbone, deeper)


def test_fpn_is_top_down_sum_of_laterals() -> None:
    fpn = FPNDecoder([1, 1, 1, 1], channels=1, upsample_mode="nearest")
    with torch.no_grad():
        for i, conv in enumerate(fpn.laterals):
            conv.weight.fill_(i + 1.0)
            conv.bias.zero_()
    c2, c3, c4, c5 = (torch.randn(1, 1, s, s) for s in (8, 4, 2, 1))
    up = lambda t, f: t.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)  # noqa: E731
    expected = 1 * c2 + up(2 * c3, 2) + up(3 * c4, 4) + up(4 * c5, 8)
    torch.testing.assert_close(fpn([c2, c3, c4, c5]), expected)


def test_aspp_rates_follow_output_stride() -> None:
    assert aspp_rates(8) == (12, 24, 36)
    assert aspp_rates(16) == (6, 12, 18)
    decoder = DeepLabV3PlusDecoder([8, 8, 8, 16], channels=8, output_stride=8)
    depthwise = [m for m in decoder.aspp.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.dilation[0] for m in depthwise] == [12, 24, 36]
    assert [m.groups for m in depthwise] == [16, 16, 16]
    assert decoder.low_level[0].out_channels == 48


def _tiny_model(backbone: str, decoder: str, output_stride: int, embed_dim: int = 8) -> DenseEmbedder:
    return build_model(
        ModelConfig(
            backbone=backbone,
            decoder=decoder,
            output_stride=output_stride,
            decoder_channels=16,
            embed_dim=embed_dim,
        )
    )


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
@pytest.mark.parametrize("decoder", ["fpn", "deeplabv3plus"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_embeddings_are_unit_norm_at_input_size(backbone: str, decoder: str, output_stride: int) -> None:
    torch.manual_seed(0)
    model = _tiny_model(backbone, decoder, output_stride)
    with torch.no_grad():
        z = model(torch.randn(2, 3, 64, 64))
        low = model.embed_lowres(torch.randn(2, 3, 64, 64))
    assert z.shape == (2, 8, 64, 64)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2, 64, 64))
    assert low.shape == (2, 8, 16, 16)
    torch.testing.assert_close(low.norm(dim=1), torch.ones(2, 16, 16))


@pytest.mark.parametrize("decoder", ["fpn", "deeplabv3plus"])
def test_odd_input_size_is_preserved(decoder: str) -> None:
    torch.manual_seed(0)
    model = _tiny_model("resnet18", decoder, 8).eval()
    x = torch.randn(1, 3, 97, 130)
    with torch.no_grad():
        z, low = model(x), model.embed_lowres(x)
    assert z.shape == (1, 8, 97, 130)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(1, 97, 130))
    # stride 4 rounds up twice: 97 -> 49 -> 25, 130 -> 65 -> 33.
    assert low.shape == (1, 8, 25, 33)


def test_gradient_reaches_backbone_stem() -> None:
    torch.manual_seed(0)
    model = _tiny_model("resnet18", "fpn", 8)
    z = model(torch.randn(2, 3, 64, 64))
    (z * torch.randn_like(z)).sum().backward()
    grad = model.backbone.conv1.weight.grad
    assert grad is not None
    assert bool(torch.isfinite(grad).all())
    assert float(grad.abs().sum()) > 0


def test_same_seed_same_model_and_output() -> None:
    x = torch.randn(2, 3, 48, 48)
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = _tiny_model("resnet18", "deeplabv3plus", 16).eval()
        with torch.no_grad():
            outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1])


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = _tiny_model("resnet18", "fpn", 8).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        z = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(z, reference, atol=1e-5, rtol=1e-4)


def test_build_model_loads_pretrained(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = resnet.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(
        ModelConfig(backbone="resnet18", decoder_channels=8, embed_dim=4, pretrained=str(path))
    )
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.head.out_channels == 4


@pytest.mark.parametrize(("decoder", "width"), [("fpn", 128), ("deeplabv3plus", 256)])
def test_null_decoder_channels_means_the_papers_width_for_each_decoder(decoder, width):
    model = build_model(ModelConfig(backbone="resnet18", decoder=decoder, decoder_channels=None, embed_dim=4))
    assert model.head.weight.shape == (4, width, 1, 1)


def test_three_stages_stop_after_layer3_and_load_the_first_three_stages(tmp_path: Path) -> None:
    torch.manual_seed(0)
    full = build_backbone("resnet18", 8)
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)
    short = build_backbone("resnet18", 8, num_stages=3)
    load_pretrained(short, path)
    assert short.layer4 is None and short.channels == (64, 128, 256)
    x = torch.randn(1, 3, 64, 64)
    full.eval(), short.eval()
    with torch.no_grad():
        got, want = short(x), full(x)
    assert len(got) == 3
    for a, b in zip(got, want[:3], strict=True):
        torch.testing.assert_close(a, b)
    # layer4 of a dilated ResNet-18 holds 8.4M of its 11.2M parameters.
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in short.parameters()) == 8393728
