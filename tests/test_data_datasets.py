"""Datasets and collation: shapes, (seed, epoch, index) determinism, skipping bad videos."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from advise.data.datasets import (
    ClipDataset,
    MultiViewDataset,
    PretextDataset,
    SkippedVideo,
    SkippedVideoWarning,
    collate_clips,
)
from advise.data.formats import VideoRecord
from advise.data.sampling import PlaybackRateSampler, multiview_indices, segment_indices
from advise.data.transforms import test_views as make_test_views
from advise.data.transforms import train_transform
from advise.data.video import write_video

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
LENGTHS = (24, 32, 20)


def grey_ramp_video(num_frames: int, size: int = 32) -> np.ndarray:
    """[T, size, size, 3] uint8 whose grey level is 10 + 6 * frame number: frames are readable."""
    levels = 10 + 6 * np.arange(num_frames)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, 3)).astype(
        np.uint8
    )


def frame_numbers(clips: torch.Tensor) -> np.ndarray:
    """Invert `grey_ramp_video` on [..., 3, H, W] float clips in [0, 1] (identity transform)."""
    levels = clips.mean(dim=(-3, -2, -1)) * 255
    return np.rint((levels.numpy() - 10) / 6).astype(int)


def as_float(clip: torch.Tensor) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> float [T, 3, H, W] in [0, 1]: keeps content readable."""
    return clip.float() / 255


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[VideoRecord]:
    folder = tmp_path_factory.mktemp("dataset")
    return [
        VideoRecord(write_video(folder / f"video{number}.mp4", grey_ramp_video(length)), number)
        for number, length in enumerate(LENGTHS)
    ]


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> VideoRecord:
    """A real .mp4 cut in half (its index was at the end: it does not open)."""
    folder = tmp_path_factory.mktemp("broken")
    whole = write_video(folder / "whole.mp4", grey_ramp_video(32))
    cut = folder / "truncated.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return VideoRecord(cut, 1)


def playback_dataset(records, seed: int = 0) -> PretextDataset:
    sampler = PlaybackRateSampler(num_frames=4, stride=2, clips_per_video=3)
    return PretextDataset(records, sampler, train_transform(16, MEAN, STD), seed=seed)


def test_playback_item(records):
    dataset = playback_dataset(records)
    assert len(dataset) == 3
    item = dataset[1]
    assert item["input"].shape == (3, 4, 3, 16, 16) and item["input"].dtype == torch.float32
    assert item["labels"].shape == (3,) and item["labels"].dtype == torch.long
    assert ((item["labels"] >= 0) & (item["labels"] < 4)).all()
    assert item["index"] == 1


def test_playback_clips_show_the_sampled_frames(records):
    """Decode + sample plumbing: each clip's frames are the sampler's indices for its label."""
    sampler = PlaybackRateSampler(num_frames=4, stride=2, clips_per_video=4)
    dataset = PretextDataset(records, sampler, as_float, seed=3)
    dataset.set_epoch(2)
    item = dataset[1]
    expected = sampler(LENGTHS[1], np.random.default_rng([3, 2, 1]))
    for clip, label, (indices, expected_label) in zip(
        item["input"], item["labels"], expected, strict=True
    ):
        assert int(label) == expected_label
        np.testing.assert_array_equal(frame_numbers(clip), indices)


def test_randomness_is_a_function_of_seed_epoch_index(records):
    dataset = playback_dataset(records, seed=4)
    dataset.set_epoch(1)
    first = dataset[2]
    for index in (0, 1, 0):  # other items in between, using torch and numpy randomness
        dataset[index]
    torch.manual_seed(123)  # and the global torch state changed
    again = dataset[2]
    fresh = playback_dataset(records, seed=4)
    fresh.set_epoch(1)
    for other in (again, fresh[2]):
        torch.testing.assert_close(other["input"], first["input"], rtol=0, atol=0)
        assert torch.equal(other["labels"], first["labels"])
    dataset.set_epoch(2)
    assert not torch.equal(dataset[2]["input"], first["input"])
    assert not torch.equal(
        playback_dataset(records, seed=5).__getitem__(2)["input"], first["input"]
    )


def test_items_do_not_touch_the_global_torch_generator(records):
    dataset = playback_dataset(records)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    dataset[0]
    torch.testing.assert_close(torch.rand(3), expected)


def test_clip_dataset_train_and_test(records):
    train = ClipDataset(records, 8, as_float, train=True, seed=1)
    item = train[0]
    assert item["input"].shape == (1, 8, 3, 32, 32)
    assert item["labels"].tolist() == [0] and item["index"] == 0
    expected = segment_indices(LENGTHS[0], 8, np.random.default_rng([1, 0, 0]))
    np.testing.assert_array_equal(frame_numbers(item["input"][0]), expected)

    test = ClipDataset(records, 8, as_float, train=False)
    centred = frame_numbers(test[1]["input"][0])
    np.testing.assert_array_equal(centred, segment_indices(LENGTHS[1], 8, None))
    test.set_epoch(5)
    np.testing.assert_array_equal(frame_numbers(test[1]["input"][0]), centred)

    # A view transform gives several clips per item.
    views = ClipDataset(records, 8, make_test_views(16, MEAN, STD, num_crops=3), train=False)
    assert views[2]["input"].shape == (3, 8, 3, 16, 16)


def test_multiview_dataset(records):
    dataset = MultiViewDataset(records, 4, 2, make_test_views(16, MEAN, STD, num_crops=3))
    item = dataset[1]
    assert item["input"].shape == (6, 4, 3, 16, 16)  # K * S = 2 * 3
    assert item["labels"].tolist() == [1]
    plain = MultiViewDataset(records, 4, 2, as_float)[1]["input"]  # [K, T, 3, H, W]
    for clip, indices in zip(plain, multiview_indices(LENGTHS[1], 4, 2), strict=True):
        np.testing.assert_array_equal(frame_numbers(clip), indices)
    torch.testing.assert_close(dataset[1]["input"], item["input"], rtol=0, atol=0)


def test_bad_videos_are_skipped_and_short_ones_loop(records, truncated, tmp_path):
    short = VideoRecord(write_video(tmp_path / "short.mp4", grey_ramp_video(3)), 0)
    missing = VideoRecord(tmp_path / "missing.mp4", 0)
    dataset = ClipDataset([truncated, short, missing], 8, as_float, train=False)
    for index, record in [(0, truncated), (2, missing)]:
        with pytest.warns(SkippedVideoWarning, match=record.path.name):
            item = dataset[index]
        assert isinstance(item, SkippedVideo) and not item
        assert item.path == str(record.path) and item.index == index
    clip = dataset[1]["input"][0]  # 3 frames, a clip of 8: played in a loop
    np.testing.assert_array_equal(frame_numbers(clip), [0, 1, 2, 0, 1, 2, 0, 1])


def test_dataloader_skips_a_truncated_video(records, truncated):
    dataset = playback_dataset([records[0], truncated, records[1], records[2]])
    loader = DataLoader(dataset, batch_size=4, num_workers=0, collate_fn=collate_clips)
    with pytest.warns(SkippedVideoWarning, match="truncated.mp4"):
        batches = list(loader)
    assert len(batches) == 1
    batch = batches[0]
    assert batch["skipped"] == 1 and batch["skipped_paths"] == [str(truncated.path)]
    assert batch["input"].shape == (9, 4, 3, 16, 16)  # 3 good videos x 3 clips
    assert batch["labels"].shape == (9,) and batch["labels"].dtype == torch.long
    assert batch["index"].tolist() == [0, 2, 3]
    assert batch["video_of_clip"].tolist() == [0, 0, 0, 2, 2, 2, 3, 3, 3]


def test_collate_repeats_single_labels_and_handles_all_bad(records):
    dataset = MultiViewDataset(records, 4, 2, make_test_views(16, MEAN, STD, num_crops=1))
    batch = collate_clips([dataset[2], None, dataset[0]])
    assert batch["input"].shape == (4, 4, 3, 16, 16)
    assert batch["labels"].tolist() == [2, 2, 0, 0]
    assert batch["video_of_clip"].tolist() == [2, 2, 0, 0]
    assert batch["skipped"] == 1 and batch["skipped_paths"] == []

    empty = collate_clips([None, SkippedVideo(index=4, path="/x/bad.mp4", reason="broken")])
    assert empty["input"].shape[0] == 0 and empty["labels"].shape == (0,)
    assert empty["index"].shape == (0,) and empty["video_of_clip"].shape == (0,)
    assert empty["skipped"] == 2 and empty["skipped_paths"] == ["/x/bad.mp4"]


def test_index_out_of_range_and_bad_arguments(records):
    dataset = playback_dataset(records)
    with pytest.raises(IndexError):
        dataset[3]
    with pytest.raises(ValueError):
        dataset.set_epoch(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good item warns about nothing
        dataset[0]


def test_records_hold_only_paths(records):
    """Nothing is decoded at construction: a dataset over missing files builds fine."""
    dataset = ClipDataset([VideoRecord(Path("/nonexistent/video.mp4"), 0)], 8, as_float)
    assert len(dataset) == 1


def test_frame_ranges_bound_sampling(records):
    """Samplers see only [start_frame, end_frame): frame numbers come out shifted by start_frame."""
    ranged = VideoRecord(records[1].path, 1, start_frame=6, end_frame=22)  # 16 of 32 frames
    centred = ClipDataset([ranged], 8, as_float, train=False)[0]["input"][0]
    np.testing.assert_array_equal(frame_numbers(centred), 6 + segment_indices(16, 8, None))
    random = ClipDataset([ranged], 8, as_float, train=True, seed=2)[0]["input"][0]
    expected = 6 + segment_indices(16, 8, np.random.default_rng([2, 0, 0]))
    np.testing.assert_array_equal(frame_numbers(random), expected)
    views = MultiViewDataset([ranged], 4, 2, as_float)[0]["input"]
    for clip, indices in zip(views, multiview_indices(16, 4, 2), strict=True):
        np.testing.assert_array_equal(frame_numbers(clip), 6 + indices)
    sampler = PlaybackRateSampler(num_frames=4, stride=2, clips_per_video=4)
    item = PretextDataset([ranged], sampler, as_float, seed=3)[0]
    expected_clips = sampler(16, np.random.default_rng([3, 0, 0]))  # what a 16-frame video gets
    for clip, (indices, _) in zip(item["input"], expected_clips, strict=True):
        np.testing.assert_array_equal(frame_numbers(clip), 6 + indices)
        assert ((frame_numbers(clip) >= 6) & (frame_numbers(clip) < 22)).all()


def test_frame_range_end_is_clamped_to_the_video(records):
    past_end = VideoRecord(records[2].path, 2, start_frame=4, end_frame=100)  # 20-frame video
    assert past_end.frame_range(LENGTHS[2]) == (4, 20)
    clip = ClipDataset([past_end], 8, as_float, train=False)[0]["input"][0]
    np.testing.assert_array_equal(frame_numbers(clip), 4 + segment_indices(16, 8, None))


def test_frame_range_past_the_video_is_skipped(records):
    beyond = VideoRecord(records[0].path, 0, start_frame=30, end_frame=40)  # 24-frame video
    assert beyond.frame_range(LENGTHS[0]) == (24, 24)
    with pytest.warns(SkippedVideoWarning, match=r"only 0 frames in frames \[24, 24\) of 24"):
        assert not ClipDataset([beyond], 8, as_float)[0]


def test_frame_range_arguments():
    path = Path("video.mp4")
    assert VideoRecord(path, 0).frame_range(10) == (0, 10)
    assert VideoRecord(path, 0, 3).frame_range(10) == (3, 10)
    with pytest.raises(ValueError, match="start_frame"):
        VideoRecord(path, 0, start_frame=-1)
    with pytest.raises(ValueError, match="exclusive"):
        VideoRecord(path, 0, start_frame=5, end_frame=5)
