"""Which frames of a video make a clip: playback-rate, segment (TSN) and multi-view sampling.

All indices and lengths here are in frames: positions in a video's decoded frame sequence,
counted from 0 (see `advise.data.video.read_frames`). Every sampler returns int64 arrays and
draws randomness only from the `numpy.random.Generator` it is given, so the same generator
state gives the same clips.

Short videos loop. Any video with at least one frame gives clips of any length: playback-rate
clips wrap past the last frame to the first (`PlaybackRateSampler`), and a video with fewer
frames than a clip (L < T) is played in a loop for segment and multi-view sampling, i.e.
sampled as a video of T frames whose frame k is frame k mod L, so its clip is
0, 1, ..., L - 1, 0, 1, ... (in order, jumping back to the start). Only a video with no
decodable frame is unusable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# A pretext's clip sampler: (frames in the video, generator) -> [(frame indices [T], label)],
# the clips one video gives per training item (e.g. `PlaybackRateSampler`); `num_frames`, T.
ClipSampler = Callable[[int, np.random.Generator], list[tuple[np.ndarray, int]]]


class PlaybackRateSampler:
    """Clips played at a random speed, labelled by that speed (the PRP pretext task).

    For each clip a class c is drawn uniformly from `range(num_classes)`. Its speed is
    r = speeds[c % len(speeds)]; the rate actually used is jittered,
    r_j = r * (1 + U(-jitter, jitter)), so the model cannot tell speeds apart by an exact
    frame step. A start frame s is drawn uniformly from [0, num_video_frames) and

        indices[t] = (s + round(t * stride * r_j)) mod num_video_frames,   t = 0 .. T-1

    i.e. consecutive frames are round(stride * r_j) apart (stride * r_j frames on average) and
    a clip that runs past the last frame wraps around to the first (so any video length works;
    a clip that wraps shows a jump back to the start). With `reverse=True` there are
    2 * len(speeds) classes: classes len(speeds) + i play speed speeds[i] backwards (the same
    indices in reversed order).

    Args:
        speeds: playback speeds (multiples of the base stride); label i means speeds[i].
        num_frames: T, frames per clip.
        stride: base step between consecutive clip frames at speed 1, in frames.
        jitter: relative rate jitter j in [0, 1); the rate is r * (1 + U(-j, j)).
        clips_per_video: clips drawn per call, each with its own speed, jitter and start.
        reverse: add reversed-playback classes.
    """

    def __init__(
        self,
        speeds: Sequence[float] = (1, 2, 4, 8),
        num_frames: int = 8,
        stride: float = 2,
        jitter: float = 0.2,
        clips_per_video: int = 4,
        reverse: bool = False,
    ) -> None:
        if len(speeds) == 0 or any(speed <= 0 for speed in speeds):
            raise ValueError(f"speeds must be a non-empty list of positive numbers, got {speeds}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if stride <= 0:
            raise ValueError(f"stride must be > 0, got {stride}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        self.speeds = tuple(speeds)
        self.num_frames = num_frames
        self.stride = stride
        self.jitter = jitter
        self.clips_per_video = clips_per_video
        self.reverse = reverse

    @property
    def num_classes(self) -> int:
        """len(speeds), doubled when reversed playback is on."""
        return len(self.speeds) * (2 if self.reverse else 1)

    def class_name(self, label: int) -> str:
        """Human name of a label, e.g. "x4" or "x4 reversed"."""
        speed = self.speeds[label % len(self.speeds)]
        return f"x{speed:g}" + (" reversed" if label >= len(self.speeds) else "")

    def sample_clip(
        self, num_video_frames: int, label: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Indices [T] (int64, frames) of one clip of class `label` (random jitter and start)."""
        if num_video_frames < 1:
            raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label must be in [0, {self.num_classes}), got {label}")
        speed = self.speeds[label % len(self.speeds)]
        rate = speed * (1.0 + rng.uniform(-self.jitter, self.jitter))
        # One uniform draw whatever the length, so the generator advances the same way for
        # every video (rng.integers skips its draw for a range of one).
        start = min(int(rng.random() * num_video_frames), num_video_frames - 1)
        offsets = np.floor(np.arange(self.num_frames) * self.stride * rate + 0.5).astype(np.int64)
        indices = (start + offsets) % num_video_frames
        if label >= len(self.speeds):
            indices = indices[::-1].copy()
        return indices

    def __call__(
        self, num_video_frames: int, rng: np.random.Generator
    ) -> list[tuple[np.ndarray, int]]:
        """`clips_per_video` clips of a video with `num_video_frames` frames.

        Returns:
            [(indices [T] int64 frame numbers in [0, num_video_frames), label), ...], one pair
            per clip; labels uniform over `range(num_classes)`.
        """
        clips = []
        for _ in range(self.clips_per_video):
            label = int(rng.integers(self.num_classes))
            clips.append((self.sample_clip(num_video_frames, label, rng), label))
        return clips

    def __repr__(self) -> str:
        return (
            f"PlaybackRateSampler(speeds={self.speeds}, num_frames={self.num_frames}, "
            f"stride={self.stride}, jitter={self.jitter}, "
            f"clips_per_video={self.clips_per_video}, reverse={self.reverse})"
        )


def _segment_bounds(num_video_frames: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer [start, end) of `num_frames` equal segments tiling [0, max(L, T)).

    L = num_video_frames, T = num_frames. A video shorter than a clip is looped to T frames
    (module docstring): every segment then holds one frame, and callers take indices mod L.
    """
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    looped_length = max(num_video_frames, num_frames)
    edges = (np.arange(num_frames + 1, dtype=np.int64) * looped_length) // num_frames
    return edges[:-1], edges[1:]


def segment_indices(
    num_video_frames: int, num_frames: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Uniform (TSN) sampling: one frame from each of `num_frames` equal segments.

    The video [0, num_video_frames) is cut into `num_frames` segments with integer bounds
    floor(k * num_video_frames / num_frames); the frame of segment k is uniform within it when
    `rng` is given (training) and its centre (start + length // 2) when `rng` is None (test).
    A video shorter than the clip (num_video_frames < num_frames) loops: the result is
    arange(num_frames) % num_video_frames, with or without `rng` (which still advances by
    the same draws as for a long video).

    Returns:
        [num_frames] int64 frame numbers in [0, num_video_frames): strictly increasing when
        num_video_frames >= num_frames; for a shorter video 0, 1, ..., L - 1, 0, 1, ...
    """
    starts, ends = _segment_bounds(num_video_frames, num_frames)
    lengths = ends - starts
    if rng is None:
        offsets = lengths // 2
    else:
        offsets = np.floor(rng.random(num_frames) * lengths).astype(np.int64)
    return (starts + offsets) % num_video_frames


def multiview_indices(num_video_frames: int, num_frames: int, num_clips: int) -> list[np.ndarray]:
    """`num_clips` deterministic temporal views for multi-view testing.

    Uses the segments of `segment_indices`; view k takes, in every segment, the frame at
    fraction (k + 0.5) / num_clips of the segment's length. So the views are evenly spread
    shifts of the same uniform grid, together covering the whole video, and one view equals
    `segment_indices(num_video_frames, num_frames, None)` (the test-time single clip).
    Views are distinct when segments hold at least `num_clips` frames
    (num_video_frames >= num_frames * num_clips); shorter videos give repeated views, and a
    video shorter than the clip (num_video_frames < num_frames) loops, so each of its views
    is arange(num_frames) % num_video_frames.

    Returns:
        num_clips arrays, each [num_frames] int64 frame numbers in [0, num_video_frames),
        non-decreasing when num_video_frames >= num_frames (looping otherwise, as above).
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    starts, ends = _segment_bounds(num_video_frames, num_frames)
    lengths = ends - starts
    views = []
    for view in range(num_clips):
        # (2k + 1) * length // (2K) is floor((k + 0.5) / K * length) in exact integers.
        offsets = ((2 * view + 1) * lengths) // (2 * num_clips)
        views.append((starts + offsets) % num_video_frames)
    return views
