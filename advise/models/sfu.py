"""Spatial feature utilisation (SFU): optional average pooling of the IFM token volume, and an
optional learned linear adapter of its width."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SFU(nn.Module):
    """Average-pools the token grid spatially (h x w -> s x s) and/or along channels (D -> c).

    Pooling is adaptive: with s dividing h (c dividing D) each output is the mean of one block
    of h/s x h/s positions (D/c consecutive channels). Time is never pooled. `None` keeps a size.

    With `adapter` (an output width; `in_dim` then gives the input width D), a learned linear
    map of the pooled channels to `adapter` channels follows (a 1 x 1 x 1 convolution with a
    bias): a TMM pre-trained on one IFM's tokens can then be fine-tuned on an IFM of another
    width (`advise finetune --transplant`).

    Input [B, D, T, h, w] -> output [B, c, T, s, s] (c = `adapter` when given).

    Tokens already pooled to the output sizes pass unchanged, bit for bit (each output is the
    mean of one input): a run from a feature store, whose tokens were pooled before storing
    (`advise extract --pool`) or as they are read (`advise.data.sources.StoreSource`), keeps
    this module in the model, and its checkpoints fit an online model.
    """

    def __init__(
        self,
        spatial: int | None = None,
        channels: int | None = None,
        adapter: int | None = None,
        in_dim: int | None = None,
    ) -> None:
        super().__init__()
        for label, size in (("spatial", spatial), ("channels", channels), ("adapter", adapter)):
            if size is not None and size < 1:
                raise ValueError(f"SFU {label} must be a positive size or None, got {size}")
        if adapter is not None and in_dim is None:
            raise ValueError("SFU adapter needs in_dim, the width of the tokens it is given")
        self.spatial = spatial
        self.channels = channels
        self.adapter = None
        if adapter is not None:
            pooled = in_dim if channels is None else channels
            self.adapter = nn.Conv3d(pooled, adapter, kernel_size=1)  # per token: c -> adapter

    def out_dim(self, in_dim: int) -> int:
        """Channel width after pooling (and adapting) an `in_dim`-channel input."""
        if self.adapter is not None:
            return self.adapter.out_channels
        return in_dim if self.channels is None else self.channels

    def out_grid_size(self, grid_size: tuple[int, int]) -> tuple[int, int]:
        """Token grid (h, w) after pooling a `grid_size` grid."""
        return grid_size if self.spatial is None else (self.spatial, self.spatial)

    def forward(self, tokens: Tensor) -> Tensor:  # [B, D, T, h, w] -> [B, c, T, s, s]
        batch, dim, frames, height, width = tokens.shape
        if self.spatial is not None:
            if self.spatial > min(height, width):
                raise ValueError(
                    f"SFU spatial={self.spatial} exceeds the {height}x{width} token grid"
                )
            if (height, width) != (self.spatial, self.spatial):  # else the mean of one: itself
                # [B, D, T, h, w] -> [B, D, T, s, s]
                tokens = F.adaptive_avg_pool3d(tokens, (frames, self.spatial, self.spatial))
        if self.channels is not None and self.channels != dim:
            if self.channels > dim:
                raise ValueError(f"SFU channels={self.channels} exceeds the {dim} input channels")
            height, width = tokens.shape[-2:]
            # [B, D, T, s, s] -> [B, T, s, s, D] -> [B*T*s*s, 1, D]: channels as the pooled axis
            flat = tokens.permute(0, 2, 3, 4, 1).reshape(-1, 1, dim)
            flat = F.adaptive_avg_pool1d(flat, self.channels)  # [B*T*s*s, 1, c]
            # [B*T*s*s, 1, c] -> [B, T, s, s, c] -> [B, c, T, s, s]
            tokens = flat.reshape(batch, frames, height, width, self.channels)
            tokens = tokens.permute(0, 4, 1, 2, 3).contiguous()
        if self.adapter is not None:
            tokens = self.adapter(tokens)  # [B, c, T, s, s] -> [B, adapter, T, s, s]
        return tokens
