"""A plain 3-D convolution TMM: two (conv, BN, ReLU) layers over the token volume.

The simplest temporal module that mixes time and space at once: every output token sees a
(2 kt - 1) x (2 kh - 1) x (2 kw - 1) neighbourhood of input tokens (kernel (kt, kh, kw)).
"Same" padding keeps T, h, w unchanged for any input size, so the head's global pooling sees
every position. Initialised like the bottleneck TMM (`init_resnet3d`: Kaiming-normal
convolutions, BN weight 1 and bias 0).
"""

from __future__ import annotations

from torch import Tensor, nn

from advise.config import Conv3dConfig
from advise.models.tmm import conv_norm, init_resnet3d


class Conv3dTMM(nn.Module):
    """(kernel conv in_dim -> hidden, BN, ReLU) -> (kernel conv hidden -> out, BN, ReLU).

    Input [B, in_dim, T, h, w] -> output [B, out, T, h, w]; `kernel` is (t, h, w) in tokens,
    each size odd so "same" padding keeps every size.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 256,
        out: int = 1024,
        kernel: tuple[int, ...] = (3, 3, 3),
    ) -> None:
        super().__init__()
        if len(kernel) != 3 or any(size < 1 or size % 2 == 0 for size in kernel):
            raise ValueError(
                f"Conv3dTMM kernel must be three odd positive sizes (t, h, w), got {kernel}"
            )
        self.in_dim = in_dim
        self.out_dim = out
        kernel_thw = (kernel[0], kernel[1], kernel[2])
        self.first = conv_norm(in_dim, hidden, kernel_thw)
        self.second = conv_norm(hidden, out, kernel_thw)
        init_resnet3d(self)

    @classmethod
    def from_config(cls, in_dim: int, config: Conv3dConfig) -> Conv3dTMM:
        return cls(in_dim, config.hidden, config.out, config.kernel)

    def forward(self, tokens: Tensor) -> Tensor:  # [B, in_dim, T, h, w] -> [B, out, T, h, w]
        return self.second(self.first(tokens))  # via [B, hidden, T, h, w]
