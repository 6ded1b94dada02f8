"""Temporal modelling modules (TMM) over the IFM token volume [B, D, T, h, w].

`BottleneckTMM` is a stack of ResNet-3D bottleneck blocks with no down-sampling in time or
space. With `temporal_kernel=1` every convolution acts on one frame at a time: this is the
configuration the paper's cost tables (Tables 2 and 3) measure, and it is invariant to frame
order once the head pools globally. `temporal_kernel=3` (a 3x1x1 first convolution, as in the
R3D blocks of Feichtenhofer et al. 2021) mixes neighbouring frames.

Initialisation: Kaiming-normal (fan-out, ReLU) convolutions and the standard batch-norm
initialisation (weight 1, bias 0) everywhere, including the last norm of each block. Zero-
initialising that last norm would make a randomly initialised block the identity on its
residual branch; we keep gamma = 1 so a random TMM (the paper's "scratch" baseline) transforms
its input from the first step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advise.config import BottleneckConfig


def conv_norm(
    in_dim: int,
    out_dim: int,
    kernel: tuple[int, int, int],
    relu: bool = True,
    stride: tuple[int, int, int] = (1, 1, 1),
) -> nn.Sequential:
    """Bias-free 3-D convolution ("same" padding), BatchNorm3d and optional ReLU."""
    padding = tuple(size // 2 for size in kernel)
    layers: list[nn.Module] = [
        nn.Conv3d(in_dim, out_dim, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm3d(out_dim),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def init_resnet3d(model: nn.Module) -> None:
    """The initialisation described above, for every Conv3d and BatchNorm3d of `model`."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm3d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class BottleneckBlock(nn.Module):
    """(t x 1 x 1 conv, BN, ReLU) -> (1 x 3 x 3 conv, BN, ReLU) -> (1 x 1 x 1 conv, BN), plus a
    shortcut (1 x 1 x 1 conv + BN projection when the widths or sizes differ), then ReLU.

    Input [B, in_dim, T, h, w] -> output [B, out, T, h / s, w / s], s = `spatial_stride`
    (on the 3 x 3 convolution and the projection; 1 in a TMM, 2 where R3D-50 down-samples).
    """

    def __init__(
        self, in_dim: int, hidden: int, out: int, temporal_kernel: int, spatial_stride: int = 1
    ) -> None:
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.temporal = conv_norm(in_dim, hidden, (temporal_kernel, 1, 1))
        self.spatial = conv_norm(hidden, hidden, (1, 3, 3), stride=stride)
        self.expand = conv_norm(hidden, out, (1, 1, 1), relu=False)
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_dim == out and spatial_stride == 1
            else conv_norm(in_dim, out, (1, 1, 1), relu=False, stride=stride)
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:  # [B, in_dim, T, h, w] -> [B, out, T, h', w']
        residual = self.expand(self.spatial(self.temporal(x)))
        return self.activation(residual + self.shortcut(x))


class BottleneckTMM(nn.Module):
    """ResNet-3D bottleneck stack over IFM tokens; keeps T, h, w unchanged.

    The first block maps in_dim -> out (projection shortcut when they differ), later blocks
    out -> out (identity shortcut). Input [B, in_dim, T, h, w] -> output [B, out, T, h, w].
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 256,
        out: int = 1024,
        blocks: int = 1,
        temporal_kernel: int = 3,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"BottleneckTMM needs at least one block, got {blocks}")
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(
                f"temporal_kernel must be odd and positive (keeps T unchanged), "
                f"got {temporal_kernel}"
            )
        self.in_dim = in_dim
        self.out_dim = out
        self.blocks = nn.Sequential(
            *(
                BottleneckBlock(in_dim if index == 0 else out, hidden, out, temporal_kernel)
                for index in range(blocks)
            )
        )
        init_resnet3d(self)

    @classmethod
    def from_config(cls, in_dim: int, config: BottleneckConfig) -> BottleneckTMM:
        return cls(in_dim, config.hidden, config.out, config.blocks, config.temporal_kernel)

    def forward(self, tokens: Tensor) -> Tensor:  # [B, in_dim, T, h, w] -> [B, out, T, h, w]
        # On a CPU the 3-D convolutions and batch norms run channels last (~15% faster a step:
        # scripts/tmm_layout.py); elsewhere in the layout given (AdViSe gives the standard one
        # off a CPU), as does a traced TMM (`advise export`) on any device
        if tokens.device.type == "cpu" and not torch.jit.is_tracing():
            tokens = tokens.contiguous(memory_format=torch.channels_last_3d)
        return self.blocks(tokens)


class IdentityTMM(nn.Module):
    """The average-pooling baseline: no temporal module; the head pools the tokens directly.

    Input [B, D, T, h, w] -> the same tensor.
    """

    def __init__(self, in_dim: int, config: None = None) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, tokens: Tensor) -> Tensor:  # [B, D, T, h, w] -> [B, D, T, h, w]
        return tokens
