"""Clip transforms: the same random crop, flip and colour change on every frame of a clip.

Built on torchvision.transforms.v2. A clip is wrapped as a `tv_tensors.Video`, which v2 treats
as one sample: each random parameter is drawn once per call and applied to all T frames, so
motion between frames is never confused with augmentation. Randomness comes from torch's
global generator (seed it, or use `torch.random.fork_rng`, for reproducible clips).

Tensor contract: in, uint8 [T, 3, H, W] (RGB, 0..255); out, float32 normalised
((x / 255 - mean) / std per channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class Preprocessing:
    """How frames must be prepared for an IFM, as its weights were trained: square `size` in
    pixels, RGB `mean`/`std` for [0, 1] pixels, and the resize `interpolation`."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"


def _check_clip(clip: Tensor) -> None:
    if not isinstance(clip, Tensor) or clip.ndim != 4 or clip.shape[1] != 3:
        shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"clip must be a [T, 3, H, W] tensor, got {shape}")
    if clip.dtype != torch.uint8:
        raise ValueError(f"clip must be uint8 (0..255), got {clip.dtype}")


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(mean) != 3 or len(std) != 3 or any(value <= 0 for value in std):
        raise ValueError(f"mean and std need 3 values each (std > 0), got {mean}, {std}")
    return [float(value) for value in mean], [float(value) for value in std]


class RandomClipGrayscale:
    """Turn a whole clip grey (3 equal channels) with probability `p`: one draw per clip.

    Needed because torchvision 0.29's `v2.RandomGrayscale` has no kernel for
    `tv_tensors.Video` and silently returns videos unchanged.
    """

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, clip: Tensor) -> Tensor:
        if torch.rand(1).item() >= self.p:
            return clip
        gray = F.rgb_to_grayscale(clip.as_subclass(Tensor), num_output_channels=3)
        return tv_tensors.wrap(gray, like=clip) if isinstance(clip, tv_tensors.Video) else gray

    def __repr__(self) -> str:
        return f"RandomClipGrayscale(p={self.p})"


class TrainTransform:
    """Training augmentation for one clip: uint8 [T, 3, H, W] -> float32 [T, 3, size, size].

    RandomResizedCrop(size, area fraction in `scale`, aspect ratio 3/4..4/3) -> horizontal
    flip with p = 0.5 (if `flip`) -> ColorJitter(brightness 0.2, contrast 0.2, saturation 0.2,
    hue 0.1) with p = `color_jitter_p` -> grayscale with p = `grayscale_p` -> float in [0, 1]
    -> Normalize(mean, std). One draw of every random parameter per clip.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.76, 1.0),
        flip: bool = True,
        color_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        interpolation: str = "bilinear",
    ) -> None:
        self.size = size
        self.mean, self.std = _check_stats(mean, std)
        steps: list[v2.Transform] = [
            v2.RandomResizedCrop(
                size, scale=scale, interpolation=v2.InterpolationMode(interpolation)
            )
        ]
        if flip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        if color_jitter_p > 0:
            jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
            steps.append(v2.RandomApply([jitter], p=color_jitter_p))
        if grayscale_p > 0:
            steps.append(RandomClipGrayscale(p=grayscale_p))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        self.transform = v2.Compose(steps)

    def __call__(self, clip: Tensor) -> Tensor:
        """uint8 [T, 3, H, W] -> float32 [T, 3, size, size]."""
        _check_clip(clip)
        return self.transform(tv_tensors.Video(clip)).as_subclass(Tensor)

    def __repr__(self) -> str:
        return f"TrainTransform({self.transform})"


class TestViews:
    """Deterministic spatial test views: uint8 [T, 3, H, W] -> float32 [S, T, 3, size, size].

    Resizes the short side to `size` (aspect ratio kept), then takes S = `num_crops`
    size x size crops: 1 = the centre crop; 3 = start, centre and end of the long side
    (left / centre / right for landscape frames, top / centre / bottom for portrait), the
    multi-crop testing of SlowFast-style evaluation. Then float in [0, 1] -> Normalize.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_crops: int = 1,
        interpolation: str = "bilinear",
    ) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        self.size = size
        self.num_crops = num_crops
        self.mean, self.std = _check_stats(mean, std)
        self.interpolation = v2.InterpolationMode(interpolation)

    def __call__(self, clip: Tensor) -> Tensor:
        """uint8 [T, 3, H, W] -> float32 [num_crops, T, 3, size, size]."""
        _check_clip(clip)
        video = F.resize(tv_tensors.Video(clip), [self.size], interpolation=self.interpolation)
        height, width = video.shape[-2:]
        if self.num_crops == 1:
            views = [F.center_crop(video, [self.size, self.size])]
        else:
            long_side = max(height, width)
            starts = [0, (long_side - self.size) // 2, long_side - self.size]
            views = []
            for start in starts:
                top, left = (0, start) if width >= height else (start, 0)
                views.append(F.crop(video, top, left, self.size, self.size))
        stacked = torch.stack([view.as_subclass(Tensor) for view in views])  # [S, T, 3, s, s]
        stacked = stacked.to(torch.float32) / 255.0
        mean = torch.tensor(self.mean).view(1, 1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 1, 3, 1, 1)
        return (stacked - mean) / std

    def __repr__(self) -> str:
        return (
            f"TestViews(size={self.size}, num_crops={self.num_crops}, mean={self.mean}, "
            f"std={self.std}, interpolation={self.interpolation.value})"
        )


# Factory names used across the package: the classes themselves (picklable for workers).
train_transform = TrainTransform
test_views = TestViews
