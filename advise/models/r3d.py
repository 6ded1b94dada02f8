"""R3D-50: the end-to-end video baseline of the paper's cost table (PAPER.md, Table 6).

A 3-D ResNet-50 in the style of the Slow pathway of SlowFast (Feichtenhofer et al. 2019) and
the R3D-50 of Feichtenhofer et al. 2021: ResNet-50's layout with no temporal down-sampling.

    stem   1x7x7 conv, 64, stride (1, 2, 2) -> BN -> ReLU -> 1x3x3 max-pool, stride (1, 2, 2)
    res2   3 bottlenecks, width  64 -> out  256
    res3   4 bottlenecks, width 128 -> out  512, spatial stride 2 in the first block
    res4   6 bottlenecks, width 256 -> out 1024, spatial stride 2 in the first block
    res5   3 bottlenecks, width 512 -> out 2048, spatial stride 2 in the first block
    global average pool over (T, h, w) -> linear classifier (PRP: 4 speeds)

A bottleneck is (t x 1 x 1 conv, BN, ReLU) -> (1 x 3 x 3 conv with the block's spatial stride,
BN, ReLU) -> (1 x 1 x 1 conv, BN) plus a shortcut (1 x 1 x 1 projection + BN in each stage's
first block, identity otherwise), then ReLU. The temporal kernel t of each stage is the
`temporal_kernels` argument; the default (1, 1, 3, 3) is the Slow pathway's (temporal
convolutions only in res4 and res5). Temporal padding t // 2 keeps T unchanged throughout.

Cost (count_params / count_macs on the meta device, 4 classes; tests/test_models_r3d.py):

    temporal kernels    params       GMACs 8 x 224 x 224   GMACs 16 x 224 x 224
    (1, 1, 3, 3)        31,642,692       41.74                 83.48
    (3, 3, 3, 3)        32,175,172       47.70                 95.40
    (1, 1, 1, 1)        23,516,228       32.70                 65.39   (inflated 2-D ResNet-50)

The default reproduces the published Slow-only 8x8 R-50 (PyTorchVideo model zoo: 32.45 M
parameters with 400 classes, 54.52 GFLOPs for an 8 x 256 x 256 clip; here 32,454,096 and
54.52 G). Table 6 reports 31.8 M parameters and 125.3 GMACs: the default is 0.5 % under on
parameters (the all-3 variant 1.2 % over), but no 8- or 16-frame 224 x 224 clip reaches the
MACs. MACs are linear in T (T is never down-sampled): 125.3 G is 3.00 x the 8-frame clip, i.e.
the default at 24 x 224 x 224 (125.22 G) or three 8-frame clips counted together; the all-3
variant at 16 x 256 x 256 gives 124.60 G. The paper does not state its R3D-50 input, so the
default stays the standard Slow-pathway layout rather than a variant tuned to one number.

Initialisation, as in `advise.models.tmm`: Kaiming-normal (fan-out, ReLU) convolutions,
batch-norm weight 1 / bias 0 everywhere (the last norm of each block included, so a randomly
initialised network mixes frames from the first step), and PyTorch's default for the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from advise.models.tmm import BottleneckBlock, conv_norm, init_resnet3d

STAGE_BLOCKS = (3, 4, 6, 3)  # res2 .. res5, as in ResNet-50
STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck (inner) widths; outputs are 4x
EXPANSION = 4
STEM_WIDTH = 64


class R3D50(nn.Module):
    """3-D ResNet-50 (Slow-pathway layout) trained end to end, e.g. on PRP speed labels.

    forward(frames [B, T, 3, H, W] float) -> logits [B, num_classes]
    forward_features(frames [B, T, 3, H, W]) -> pooled features [B, 2048]
    forward_head(features [B, 2048]) -> logits [B, num_classes]
    The frame layout is AdViSe's; T is never down-sampled, H and W by 32 (any H, W >= 32).
    `temporal_kernels` gives the temporal kernel of the first bottleneck convolution in
    res2, res3, res4, res5 (odd, positive).
    """

    def __init__(
        self,
        num_classes: int,
        temporal_kernels: Sequence[int] = (1, 1, 3, 3),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        temporal_kernels = tuple(temporal_kernels)
        if len(temporal_kernels) != len(STAGE_BLOCKS):
            raise ValueError(
                f"temporal_kernels needs one kernel per stage (res2..res5), got {temporal_kernels}"
            )
        if any(kernel < 1 or kernel % 2 == 0 for kernel in temporal_kernels):
            raise ValueError(
                f"temporal kernels must be odd and positive (keeps T unchanged), "
                f"got {temporal_kernels}"
            )
        self.num_classes = num_classes
        self.temporal_kernels = temporal_kernels
        self.num_features = STAGE_WIDTHS[-1] * EXPANSION  # 2048

        self.stem = nn.Sequential(
            conv_norm(in_channels, STEM_WIDTH, (1, 7, 7), stride=(1, 2, 2)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        stages: list[nn.Module] = []
        in_dim = STEM_WIDTH
        for index, (blocks, width, kernel) in enumerate(
            zip(STAGE_BLOCKS, STAGE_WIDTHS, temporal_kernels, strict=True)
        ):
            first_stride = 1 if index == 0 else 2  # res2 follows the max-pool: no stride
            stage = []
            for block in range(blocks):
                stride = first_stride if block == 0 else 1
                out = width * EXPANSION
                stage.append(BottleneckBlock(in_dim, width, out, kernel, spatial_stride=stride))
                in_dim = out
            stages.append(nn.Sequential(*stage))
        self.res2, self.res3, self.res4, self.res5 = stages
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head = nn.Linear(self.num_features, num_classes)
        init_resnet3d(self)

    def forward_features(self, frames: Tensor) -> Tensor:  # [B, T, 3, H, W] -> [B, 2048]
        x = frames.permute(0, 2, 1, 3, 4)  # [B, T, 3, H, W] -> [B, 3, T, H, W]
        x = self.stem(x)  # [B, 64, T, H/4, W/4]
        x = self.res2(x)  # [B, 256, T, H/4, W/4]
        x = self.res3(x)  # [B, 512, T, H/8, W/8]
        x = self.res4(x)  # [B, 1024, T, H/16, W/16]
        x = self.res5(x)  # [B, 2048, T, H/32, W/32]
        return self.pool(x).flatten(1)  # [B, 2048, 1, 1, 1] -> [B, 2048]

    def forward_head(self, features: Tensor) -> Tensor:  # [B, 2048] -> [B, num_classes]
        return self.head(features)

    def forward(self, frames: Tensor) -> Tensor:  # [B, T, 3, H, W] -> [B, num_classes]
        return self.forward_head(self.forward_features(frames))
