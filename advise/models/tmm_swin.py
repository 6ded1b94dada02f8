"""A video-Swin TMM (Liu et al., 2022): self-attention within (shifted) 3-D windows.

The tokens are projected to the attention width and pass `depth` blocks; each block is a
pre-norm transformer block (`TransformerBlock`) whose attention stays inside non-overlapping
windows of `window` = (t, h, w) tokens. Every second block shifts its windows by half a window
along each axis, so information crosses window borders from one block to the next. A final
LayerNorm and a linear layer give the output width. The cost grows linearly with T h w.

As in video Swin, a window larger than the input along an axis is cut to the input's size,
and then that axis is not shifted (one window covers it). The shift is a cyclic roll of the
volume; tokens that the roll brings together from opposite ends of an axis belong to different
regions and must not attend to each other. Sizes that are not multiples of the window are
zero-padded at the end. The attention mask gives every token a region label: the index of
its (shifted) window along each axis in the unrolled volume, or -1 for a padding token; a
token attends only to tokens of its own label. So real tokens never see padding (nor padding
real tokens), and the output at every real token is exactly that of attention over the real
tokens of its window region, whatever the padding. Padding tokens attend to each other (so no
row of the mask is empty) and are cut off at the end.

Each block also learns a relative position bias per head (Swin's table of (2t - 1)(2h - 1)
(2w - 1) entries, indexed by the offset between two tokens of a window), the module's only
source of position: windows are permutation-invariant otherwise. Initialisation: as
`TransformerTMM` (Xavier-uniform linear weights), the bias tables truncated-normal (std 0.02).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advise.config import SwinConfig
from advise.models.tmm_transformer import TransformerBlock, init_transformer


def window_and_shift(
    sizes: tuple[int, ...], window: tuple[int, ...], shifted: bool
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The window and shift (tokens, per axis) used on a volume of `sizes`: the window cut to
    the size, and half the window where `shifted` and the window is smaller than the size."""
    used_window = tuple(min(size, win) for size, win in zip(sizes, window, strict=True))
    shift = tuple(
        win // 2 if shifted and size > win else 0 for size, win in zip(sizes, window, strict=True)
    )
    return used_window, shift


def partition_windows(x: Tensor, window: tuple[int, ...]) -> Tensor:
    """[B, T, h, w, C] (each size a multiple of the window) -> [B, windows, t * h * w, C],
    windows in (t, y, x) row-major order, tokens in a window likewise."""
    batch, frames, height, width, channels = x.shape
    win_t, win_h, win_w = window
    x = x.reshape(
        batch, frames // win_t, win_t, height // win_h, win_h, width // win_w, win_w, channels
    )
    x = x.permute(0, 1, 3, 5, 2, 4, 6, 7)  # [B, T / t, h / wh, w / ww, t, wh, ww, C]
    return x.reshape(batch, -1, win_t * win_h * win_w, channels)


def merge_windows(windows: Tensor, window: tuple[int, ...], sizes: tuple[int, ...]) -> Tensor:
    """The inverse of `partition_windows`: [B, windows, t * h * w, C] -> [B, T, h, w, C]."""
    batch, _, _, channels = windows.shape
    (win_t, win_h, win_w), (frames, height, width) = window, sizes
    x = windows.reshape(
        batch, frames // win_t, height // win_h, width // win_w, win_t, win_h, win_w, channels
    )
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7)  # [B, T / t, t, h / wh, wh, w / ww, ww, C]
    return x.reshape(batch, frames, height, width, channels)


def region_labels(
    sizes: tuple[int, ...],
    padded: tuple[int, ...],
    window: tuple[int, ...],
    shift: tuple[int, ...],
    device: torch.device | None = None,
) -> Tensor:  # -> [T', h', w'] int64 over the padded volume, unrolled coordinates
    """Per token of the padded volume: the index of its shifted window (the windows start at
    `shift` + k `window` along each axis, and the tokens before `shift` form one more) combined
    over the three axes, or -1 for a padding token. Two tokens may attend to each other exactly
    when their labels match and they are in the same window after the roll."""
    labels = torch.zeros((), dtype=torch.long, device=device)
    real = torch.ones((), dtype=torch.bool, device=device)
    for axis, (size, length, win, offset) in enumerate(
        zip(sizes, padded, window, shift, strict=True)
    ):
        positions = torch.arange(length, device=device)
        group = torch.div(positions - offset, win, rounding_mode="floor") + 1  # 0 .. length / win
        view = [1, 1, 1]
        view[axis] = length
        labels = labels * (length // win + 1) + group.reshape(view)  # broadcasts to [T', h', w']
        real = real & (positions < size).reshape(view)
    return torch.where(real, labels, -1)


class SwinBlock(nn.Module):
    """A transformer block whose attention stays within (shifted) 3-D windows.

    forward(x [B, T, h, w, width]) -> [B, T, h, w, width], any T, h, w.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        window: tuple[int, ...],
        mlp_ratio: float,
        dropout: float = 0.0,
        shifted: bool = False,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.window = tuple(window)
        self.shifted = shifted
        self.transformer = TransformerBlock(width, heads, mlp_ratio, dropout)
        spans = [2 * size - 1 for size in self.window]  # offsets -(size - 1) .. size - 1
        self.bias_table = nn.Parameter(torch.zeros(spans[0] * spans[1] * spans[2], heads))

    def relative_position_bias(self, window: tuple[int, ...]) -> Tensor:
        """[heads, N, N] for the tokens of a `window` (at most `self.window`), N = t h w."""
        device = self.bias_table.device
        coordinates = torch.stack(
            torch.meshgrid(*(torch.arange(size, device=device) for size in window), indexing="ij")
        ).flatten(1)  # [3, N]
        offsets = coordinates[:, :, None] - coordinates[:, None, :]  # [3, N, N]
        offsets = offsets + torch.tensor(self.window, device=device).reshape(3, 1, 1) - 1
        _, span_h, span_w = (2 * size - 1 for size in self.window)
        index = (offsets[0] * span_h + offsets[1]) * span_w + offsets[2]  # [N, N]
        return self.bias_table[index].permute(2, 0, 1)  # [heads, N, N]

    def attention_mask(
        self,
        sizes: tuple[int, ...],
        padded: tuple[int, ...],
        window: tuple[int, ...],
        shift: tuple[int, ...],
    ) -> Tensor:  # -> [windows, heads, N, N]: 0 or -inf by region, plus the position bias
        labels = region_labels(sizes, padded, window, shift, self.bias_table.device)
        labels = torch.roll(labels, shifts=[-offset for offset in shift], dims=(0, 1, 2))
        labels = partition_windows(labels[None, ..., None], window)[0, :, :, 0]  # [windows, N]
        same = labels[:, :, None] == labels[:, None, :]  # [windows, N, N]
        blocked = torch.zeros(same.shape, dtype=self.bias_table.dtype, device=same.device)
        blocked = blocked.masked_fill(~same, float("-inf"))
        return blocked[:, None] + self.relative_position_bias(window)  # [windows, heads, N, N]

    def forward(self, x: Tensor) -> Tensor:  # [B, T, h, w, width] -> [B, T, h, w, width]
        sizes = tuple(x.shape[1:4])
        window, shift = window_and_shift(sizes, self.window, self.shifted)
        pads = [-size % win for size, win in zip(sizes, window, strict=True)]
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))  # [B, T', h', w', width]
        padded = tuple(x.shape[1:4])
        rolled = any(shift)
        if rolled:
            x = torch.roll(x, shifts=[-offset for offset in shift], dims=(1, 2, 3))
        mask = self.attention_mask(sizes, padded, window, shift)  # [windows, heads, N, N]
        windows = self.transformer(partition_windows(x, window), mask)  # [B, windows, N, width]
        x = merge_windows(windows, window, padded)  # [B, T', h', w', width]
        if rolled:
            x = torch.roll(x, shifts=list(shift), dims=(1, 2, 3))
        return x[:, : sizes[0], : sizes[1], : sizes[2]]  # [B, T, h, w, width]


class SwinTMM(nn.Module):
    """Linear in_dim -> width, `depth` Swin blocks (windows shifted in every second one),
    LayerNorm, linear width -> out.

    Input [B, in_dim, T, h, w] -> output [B, out, T, h, w], any T, h, w; `window` is (t, h, w)
    in tokens.
    """

    def __init__(
        self,
        in_dim: int,
        depth: int = 2,
        width: int = 256,
        heads: int = 4,
        window: tuple[int, ...] = (2, 4, 4),
        mlp_ratio: float = 4.0,
        out: int = 1024,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"SwinTMM needs at least one block, got depth={depth}")
        if len(window) != 3 or any(size < 1 for size in window):
            raise ValueError(f"SwinTMM window must be three positive sizes (t, h, w), got {window}")
        self.in_dim = in_dim
        self.out_dim = out
        self.project = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(
            SwinBlock(width, heads, window, mlp_ratio, dropout, shifted=index % 2 == 1)
            for index in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, out)
        init_transformer(self)
        for block in self.blocks:
            nn.init.trunc_normal_(block.bias_table, std=0.02)

    @classmethod
    def from_config(cls, in_dim: int, config: SwinConfig) -> SwinTMM:
        return cls(
            in_dim,
            config.depth,
            config.width,
            config.heads,
            config.window,
            config.mlp_ratio,
            config.out,
            config.dropout,
        )

    def forward(self, tokens: Tensor) -> Tensor:  # [B, in_dim, T, h, w] -> [B, out, T, h, w]
        x = self.project(tokens.permute(0, 2, 3, 4, 1))  # [B, T, h, w, width]
        for block in self.blocks:
            x = block(x)
        x = self.output(self.norm(x))  # [B, T, h, w, out]
        return x.permute(0, 4, 1, 2, 3)  # [B, out, T, h, w]
