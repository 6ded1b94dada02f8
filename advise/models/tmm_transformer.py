"""A space-time transformer TMM: full self-attention over all T x h x w tokens.

The tokens are projected to the attention width, given a fixed 3-D sine-cosine position
embedding, passed through `depth` pre-norm transformer blocks, normalised and projected to the
output width. Every token attends to every other token of the clip, so the cost grows with
(T h w)^2: fine for the demo's 8 x 8 x 8 grid, heavy for 8 x 14 x 14 ViT tokens (use
`SwinTMM` there).

Position embedding: fixed sine-cosine (as in MAE), computed for the actual T, h, w of each
input. Feature stores and SFU settings give different grids (T from 1 frame, grids pooled to
any side), and a fixed embedding is exactly defined at every size, needs no interpolation of a
table learned at one size to another, has no parameters and is the same on every device. The
width is split between the t, y and x axes (sin and cos pairs; t gets any leftover pair first).

Initialisation (MAE): Xavier-uniform linear weights, zero biases, LayerNorm weight 1 and bias
0, so a randomly initialised module (the "scratch" baseline) already mixes its tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advise.config import TransformerConfig

TEMPERATURE = 10_000.0  # the longest wavelength of the sine-cosine embedding, in tokens


def sincos_position_embedding(
    sizes: tuple[int, int, int],
    width: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:  # -> [T * h * w, width], tokens in (t, y, x) row-major order
    """Fixed 3-D sine-cosine position embedding of a T x h x w grid of token positions.

    The width // 2 sine-cosine pairs are shared out between the t, y and x axes (t first, then
    y, for the leftover pairs); each axis uses frequencies 1 / TEMPERATURE^(k / pairs), k < pairs.
    An odd width leaves the last channel zero.
    """
    pairs = width // 2
    axis_pairs = [pairs // 3 + (1 if axis < pairs % 3 else 0) for axis in range(3)]
    positions = torch.meshgrid(
        *(torch.arange(size, device=device, dtype=torch.float32) for size in sizes), indexing="ij"
    )  # 3 x [T, h, w]
    parts = []
    for axis_positions, count in zip(positions, axis_pairs, strict=True):
        exponents = torch.arange(count, device=device, dtype=torch.float32) / max(count, 1)
        frequencies = TEMPERATURE**-exponents  # [count]
        angles = axis_positions.reshape(-1, 1) * frequencies  # [T * h * w, count]
        parts += [angles.sin(), angles.cos()]
    if width % 2:
        parts.append(positions[0].new_zeros(positions[0].numel(), 1))
    return torch.cat(parts, dim=1).to(dtype)  # [T * h * w, width]


class Attention(nn.Module):
    """Multi-head self-attention (`scaled_dot_product_attention`) within groups of tokens.

    forward(x [B, *groups, N, width], mask [*groups, heads, N, N] or None) -> [B, *groups, N,
    width]. Tokens attend only within their group (a window, or the whole clip when there are
    no group dimensions). `mask` is added to the attention logits and shared over B: 0 to
    attend, -inf to ignore, plus any position bias.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.dropout_p = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, *group_sizes, tokens, width = x.shape
        groups = math.prod(group_sizes)
        qkv = self.qkv(x).reshape(batch, groups, tokens, 3, self.heads, self.head_dim)
        # groups fold into the heads dimension: 4-D inputs let SDPA pick a fused kernel
        query, key, value = (
            qkv.permute(3, 0, 1, 4, 2, 5)  # [3, B, groups, heads, N, head_dim]
            .reshape(3, batch, groups * self.heads, tokens, self.head_dim)
            .unbind(0)
        )  # 3 x [B, groups * heads, N, head_dim]
        if mask is not None:
            mask = mask.reshape(groups * self.heads, tokens, tokens).to(query.dtype)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )  # [B, groups * heads, N, head_dim]
        attended = (
            attended.reshape(batch, groups, self.heads, tokens, self.head_dim)
            .transpose(2, 3)  # [B, groups, N, heads, head_dim]
            .reshape(x.shape)  # [B, *groups, N, width]
        )
        return self.dropout(self.proj(attended))


class MLP(nn.Module):
    """Linear width -> hidden, GELU, dropout, linear hidden -> width, dropout; per token."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.activation = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # [..., width] -> [..., width]
        return self.dropout(self.fc2(self.dropout(self.activation(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)).

    forward(x [B, *groups, N, width], mask [*groups, heads, N, N] or None) -> the same shape
    (see `Attention`). Norm and MLP act per token, so a block over windows is this block.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, max(1, round(width * mlp_ratio)), dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


def init_transformer(model: nn.Module) -> None:
    """The initialisation described above, for every Linear and LayerNorm of `model`."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class TransformerTMM(nn.Module):
    """Linear in_dim -> width, + sine-cosine positions, `depth` transformer blocks over all
    T h w tokens, LayerNorm, linear width -> out.

    Input [B, in_dim, T, h, w] -> output [B, out, T, h, w], any T, h, w.
    """

    def __init__(
        self,
        in_dim: int,
        depth: int = 2,
        width: int = 256,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        out: int = 1024,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"TransformerTMM needs at least one block, got depth={depth}")
        self.in_dim = in_dim
        self.out_dim = out
        self.width = width
        self.project = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, out)
        init_transformer(self)

    @classmethod
    def from_config(cls, in_dim: int, config: TransformerConfig) -> TransformerTMM:
        return cls(
            in_dim,
            config.depth,
            config.width,
            config.heads,
            config.mlp_ratio,
            config.out,
            config.dropout,
        )

    def forward(self, tokens: Tensor) -> Tensor:  # [B, in_dim, T, h, w] -> [B, out, T, h, w]
        batch, _, frames, height, width = tokens.shape
        x = tokens.flatten(2).transpose(1, 2)  # [B, T * h * w, in_dim]
        positions = sincos_position_embedding(
            (frames, height, width), self.width, tokens.device, tokens.dtype
        )  # [T * h * w, width]
        x = self.project(x) + positions  # [B, T * h * w, width]
        for block in self.blocks:
            x = block(x)
        x = self.output(self.norm(x))  # [B, T * h * w, out]
        return x.transpose(1, 2).reshape(batch, self.out_dim, frames, height, width)
