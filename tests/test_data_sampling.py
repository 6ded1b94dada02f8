"""Frame sampling: playback-rate clips, uniform segments, multi-view clips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advise.data.sampling import PlaybackRateSampler, multiview_indices, segment_indices

LONG_VIDEO = 100_000


def forward_steps(indices: np.ndarray, num_video_frames: int) -> np.ndarray:
    """Steps between consecutive frames with the wrap past the last frame undone."""
    return np.diff(indices) % num_video_frames


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_playback_steps_follow_the_speed(stride):
    sampler = PlaybackRateSampler(speeds=(1, 2, 4, 8), num_frames=8, stride=stride, jitter=0.2)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        for indices, label in sampler(LONG_VIDEO, rng):
            seen.add(label)
            speed = sampler.speeds[label]
            assert indices.dtype == np.int64 and indices.shape == (8,)
            steps = forward_steps(indices, LONG_VIDEO)
            low, high = stride * speed * 0.8, stride * speed * 1.2
            # Each step is the rounded jittered step: within the jitter bounds up to rounding,
            # and constant within a clip up to rounding.
            assert (steps > low - 1).all() and (steps < high + 1).all()
            assert steps.max() - steps.min() <= 1
            # The average step identifies the speed: jitter ranges of speeds do not overlap.
            average = steps.sum() / 7
            assert low - 0.5 / 7 - 1e-9 <= average <= high + 0.5 / 7 + 1e-9
    assert seen == {0, 1, 2, 3}


def test_no_jitter_gives_exact_steps():
    sampler = PlaybackRateSampler(speeds=(1, 3), stride=2, jitter=0.0)
    for indices, label in sampler(LONG_VIDEO, np.random.default_rng(1)):
        assert (forward_steps(indices, LONG_VIDEO) == 2 * sampler.speeds[label]).all()


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(num_video_frames=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
def test_playback_indices_wrap_modulo_video_length(num_video_frames, seed):
    """The same draws on a short video are the long-video indices taken mod its length."""
    sampler = PlaybackRateSampler(num_frames=8, stride=2, clips_per_video=3)
    short_clips = sampler(num_video_frames, np.random.default_rng(seed))
    long_clips = sampler(LONG_VIDEO, np.random.default_rng(seed))
    for (short, short_label), (long, long_label) in zip(short_clips, long_clips, strict=True):
        assert short_label == long_label
        assert ((short >= 0) & (short < num_video_frames)).all()
        # Offsets from the first frame agree modulo the length (the starts differ).
        np.testing.assert_array_equal(
            (short - short[0]) % num_video_frames, (long - long[0]) % num_video_frames
        )


def test_same_seed_same_clips_and_clips_differ():
    sampler = PlaybackRateSampler()
    first = sampler(96, np.random.default_rng(7))
    again = sampler(96, np.random.default_rng(7))
    other = sampler(96, np.random.default_rng(8))
    assert len(first) == sampler.clips_per_video == 4
    for (indices, label), (indices_again, label_again) in zip(first, again, strict=True):
        np.testing.assert_array_equal(indices, indices_again)
        assert label == label_again
    assert any(
        not np.array_equal(mine, theirs)
        for (mine, _), (theirs, _) in zip(first, other, strict=True)
    )
    # Clips of one call have their own start and speed.
    assert len({tuple(indices) for indices, _ in first}) == len(first)


def test_reversed_playback_classes():
    sampler = PlaybackRateSampler(speeds=(1, 2, 4, 8), reverse=True, clips_per_video=8)
    assert sampler.num_classes == 8
    assert sampler.class_name(1) == "x2" and sampler.class_name(5) == "x2 reversed"
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(100):
        for indices, label in sampler(LONG_VIDEO, rng):
            seen.add(label)
            speed = sampler.speeds[label % 4]
            # Reversed classes play the same kind of clip backwards.
            played = indices[::-1] if label >= 4 else indices
            steps = forward_steps(played, LONG_VIDEO)
            assert (steps > 2 * speed * 0.8 - 1).all() and (steps < 2 * speed * 1.2 + 1).all()
            if label >= 4:
                assert forward_steps(indices, LONG_VIDEO).min() > LONG_VIDEO - 2 * speed * 1.2 - 1
    assert seen == set(range(8))
    # A reversed class is its forward class's clip in reverse order (same draws).
    for label in range(4):
        forward = sampler.sample_clip(50, label, np.random.default_rng(label))
        backward = sampler.sample_clip(50, label + 4, np.random.default_rng(label))
        np.testing.assert_array_equal(backward, forward[::-1])
    without = PlaybackRateSampler(reverse=False)
    assert without.num_classes == 4


def test_sample_clip_and_validation():
    sampler = PlaybackRateSampler(jitter=0.0, num_frames=4, stride=2)
    indices = sampler.sample_clip(10, 1, np.random.default_rng(0))  # speed 2: step 4
    assert ((indices - indices[0]) % 10 == np.array([0, 4, 8, 12]) % 10).all()
    with pytest.raises(ValueError):
        sampler.sample_clip(10, 4, np.random.default_rng(0))
    with pytest.raises(ValueError):
        sampler.sample_clip(0, 0, np.random.default_rng(0))
    for bad in (dict(speeds=()), dict(jitter=1.0), dict(num_frames=0), dict(clips_per_video=0)):
        with pytest.raises(ValueError):
            PlaybackRateSampler(**bad)


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(
    num_video_frames=st.integers(1, 400),
    num_frames=st.integers(1, 16),
    seed=st.one_of(st.none(), st.integers(0, 1000)),
)
def test_segment_indices_one_per_segment(num_video_frames, num_frames, seed):
    rng = None if seed is None else np.random.default_rng(seed)
    indices = segment_indices(num_video_frames, num_frames, rng)
    assert indices.dtype == np.int64 and indices.shape == (num_frames,)
    assert ((indices >= 0) & (indices < num_video_frames)).all()
    if num_video_frames < num_frames:  # a short video loops
        np.testing.assert_array_equal(indices, np.arange(num_frames) % num_video_frames)
    else:
        assert (np.diff(indices) > 0).all()
        segment = np.arange(num_frames)
        starts = segment * num_video_frames // num_frames
        ends = (segment + 1) * num_video_frames // num_frames
        assert ((indices >= starts) & (indices < ends)).all()


def test_segment_indices_centre_and_random():
    np.testing.assert_array_equal(segment_indices(40, 4, None), [5, 15, 25, 35])
    np.testing.assert_array_equal(segment_indices(40, 4, None), segment_indices(40, 4, None))
    draws = {tuple(segment_indices(40, 4, np.random.default_rng(seed))) for seed in range(20)}
    assert len(draws) > 10
    same = segment_indices(40, 4, np.random.default_rng(5))
    np.testing.assert_array_equal(same, segment_indices(40, 4, np.random.default_rng(5)))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    num_video_frames=st.integers(1, 300),
    num_frames=st.integers(1, 12),
    num_clips=st.integers(1, 6),
)
def test_multiview_indices(num_video_frames, num_frames, num_clips):
    views = multiview_indices(num_video_frames, num_frames, num_clips)
    assert len(views) == num_clips
    again = multiview_indices(num_video_frames, num_frames, num_clips)
    for view, view_again in zip(views, again, strict=True):
        np.testing.assert_array_equal(view, view_again)
        assert view.dtype == np.int64 and view.shape == (num_frames,)
        assert ((view >= 0) & (view < num_video_frames)).all()
        if num_video_frames < num_frames:  # a short video loops
            np.testing.assert_array_equal(view, np.arange(num_frames) % num_video_frames)
        else:
            assert (np.diff(view) >= 0).all()
    # Later views sit later in every segment (the looped video's segments hold one frame).
    stacked = np.stack(views)  # [K, T]
    assert (np.diff(stacked, axis=0) >= 0).all()
    if num_video_frames >= num_frames * num_clips:
        assert len({tuple(view) for view in views}) == num_clips
        assert (np.diff(stacked, axis=0) > 0).all()


def test_short_videos_loop():
    """A video shorter than the clip plays in order and wraps to its start (documented rule)."""
    looped = [0, 1, 2, 0, 1, 2, 0, 1]
    np.testing.assert_array_equal(segment_indices(3, 8, None), looped)
    np.testing.assert_array_equal(segment_indices(3, 8, np.random.default_rng(0)), looped)
    for view in multiview_indices(3, 8, 3):
        np.testing.assert_array_equal(view, looped)
    np.testing.assert_array_equal(segment_indices(1, 4, None), [0, 0, 0, 0])
    # Training draws advance the generator the same way for short and long videos.
    short_rng, long_rng = np.random.default_rng(4), np.random.default_rng(4)
    segment_indices(3, 8, short_rng)
    segment_indices(LONG_VIDEO, 8, long_rng)
    assert short_rng.random() == long_rng.random()
    # Exactly a clip's length: every frame once, no loop.
    np.testing.assert_array_equal(segment_indices(8, 8, None), np.arange(8))
    with pytest.raises(ValueError, match="num_video_frames"):
        segment_indices(0, 8, None)
    with pytest.raises(ValueError, match="num_video_frames"):
        multiview_indices(0, 8, 2)


def test_multiview_single_view_is_the_test_clip():
    np.testing.assert_array_equal(multiview_indices(97, 8, 1)[0], segment_indices(97, 8, None))
    views = multiview_indices(32, 4, 2)  # segments of 8 frames: offsets 2 and 6
    np.testing.assert_array_equal(views[0], [2, 10, 18, 26])
    np.testing.assert_array_equal(views[1], [6, 14, 22, 30])
    with pytest.raises(ValueError):
        multiview_indices(32, 4, 0)
