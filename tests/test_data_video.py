"""Video I/O: exact frame reading against a full sequential decode, counts, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advise.data import video
from advise.data.video import VideoDecodeError, count_frames, read_frames, write_video

NUM_FRAMES = 40


def indexed_frames(num_frames: int, size: int = 32) -> np.ndarray:
    """[T, size, size, 3] uint8 whose content encodes the frame number.

    A grey level rising 4 per frame (modulo 160), a bright vertical bar moving 3 pixels per
    frame, over a blocky grey texture panning 1 pixel per frame: neighbouring frames differ
    clearly, yet the motion is smooth enough that H.264 uses B-frames (frame reordering).
    """
    blocks = np.random.default_rng(0).integers(0, 60, (size // 4, (size + num_frames) // 4 + 1))
    texture = np.kron(blocks, np.ones((4, 4), dtype=np.int64))[:, :, None]  # [size, width, 1]
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    for number in range(num_frames):
        frames[number] = texture[:, number : number + size] + 20 + (4 * number) % 160
        left = (3 * number) % (size - 6)
        frames[number, :, left : left + 6] = 250
    return frames


def full_decode(path: Path) -> np.ndarray:
    """The ground truth: every frame of a sequential decode, [F, H, W, 3] uint8."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


# (suffix, keyframe interval): default intervals give one key frame per short clip, small
# ones make the seeking path (several key frames) run; H.264 also reorders B-frames.
VIDEO_KINDS = [(".mp4", None), (".mp4", 8), (".webm", None), (".webm", 8), (".avi", 8)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[tuple[str, int | None], tuple[Path, np.ndarray]]:
    """Each kind written once: {(suffix, interval): (path, reference frames)}."""
    folder = tmp_path_factory.mktemp("videos")
    source = indexed_frames(NUM_FRAMES)
    written = {}
    for suffix, interval in VIDEO_KINDS:
        path = write_video(folder / f"clip_{interval}{suffix}", source, keyframe_interval=interval)
        written[(suffix, interval)] = (path, full_decode(path))
    return written


@pytest.mark.parametrize("kind", VIDEO_KINDS, ids=lambda kind: f"{kind[0]}-gop{kind[1]}")
def test_round_trip_within_codec_tolerance(videos, kind):
    path, reference = videos[kind]
    source = indexed_frames(NUM_FRAMES)
    assert reference.shape == source.shape
    error = np.abs(reference.astype(np.int16) - source.astype(np.int16))
    assert error.mean() < (12 if kind[0] == ".avi" else 4)  # mpeg4 is the coarsest codec
    # Every decoded frame is closest to its own source frame: the reference is not shifted.
    distance = np.abs(reference[:, None].astype(np.int16) - source[None].astype(np.int16))
    assert (distance.mean(axis=(2, 3, 4)).argmin(axis=1) == np.arange(NUM_FRAMES)).all()


@pytest.mark.parametrize("kind", VIDEO_KINDS, ids=lambda kind: f"{kind[0]}-gop{kind[1]}")
@pytest.mark.parametrize("indexed", [False, True], ids=["sequential", "indexed"])
def test_read_frames_is_exact(videos, kind, indexed):
    path, reference = videos[kind]
    video._index_cache.clear()
    if indexed:
        assert count_frames(path) == NUM_FRAMES

    @settings(max_examples=20, deadline=None, derandomize=True, database=None)
    @given(st.lists(st.integers(0, NUM_FRAMES - 1), min_size=1, max_size=12))
    def check(indices):
        frames = read_frames(path, indices)
        assert frames.dtype == np.uint8 and frames.shape == (len(indices), 32, 32, 3)
        np.testing.assert_array_equal(frames, reference[indices])

    check()
    # Whole video, reversed, and the last frame alone (the end of the file).
    everything = np.arange(NUM_FRAMES)[::-1]
    np.testing.assert_array_equal(read_frames(path, everything), reference[everything])
    np.testing.assert_array_equal(read_frames(path, [NUM_FRAMES - 1]), reference[-1:])


@pytest.mark.parametrize("kind", [(".mp4", 8), (".webm", 8), (".avi", 8)], ids=str)
def test_indexed_read_seeks_without_falling_back(videos, kind, monkeypatch):
    """With several key frames the seeking path serves the read and is proven right."""
    path, reference = videos[kind]
    video._index_cache.clear()
    count_frames(path)
    index = video._index_cache[video._file_key(path)]
    assert index.seekable and len(index.keyframes) > 1

    def no_sequential(*args, **kwargs):
        raise AssertionError("fell back to sequential decoding")

    monkeypatch.setattr(video, "_read_sequential", no_sequential)
    rng = np.random.default_rng(0)
    for _ in range(10):
        indices = rng.integers(0, NUM_FRAMES, size=8)
        np.testing.assert_array_equal(read_frames(path, indices), reference[indices])
    assert index.seekable


def test_indexed_h264_read_drops_unreferenced_frames(videos, monkeypatch):
    """The exactness tests above cover the frame-dropping path: it really drops frames."""
    path, reference = videos[(".mp4", None)]
    video._index_cache.clear()
    count_frames(path)
    decoded = []
    original = video._Decoder.frames

    def counting_frames(self, *args, **kwargs):
        for frame in original(self, *args, **kwargs):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video._Decoder, "frames", counting_frames)
    indices = [0, 9, 18, 27, 36]
    np.testing.assert_array_equal(read_frames(path, indices), reference[indices])
    assert len(decoded) < 37  # B-frames nothing references were not decoded


def test_threaded_decoding_is_exact(tmp_path):
    """Frames large enough for decoder threads come out identical as well."""
    path = write_video(tmp_path / "large.mp4", indexed_frames(12, size=128), keyframe_interval=4)
    reference = full_decode(path)
    indices = [11, 0, 5, 5, 7, 3]
    np.testing.assert_array_equal(read_frames(path, indices), reference[indices])
    assert count_frames(path) == 12
    np.testing.assert_array_equal(read_frames(path, indices), reference[indices])


@pytest.mark.parametrize("kind", VIDEO_KINDS, ids=lambda kind: f"{kind[0]}-gop{kind[1]}")
def test_count_frames_is_exact(videos, kind):
    path, reference = videos[kind]
    video._index_cache.clear()
    assert count_frames(path) == len(reference) == NUM_FRAMES
    assert count_frames(path) == NUM_FRAMES  # cached


def test_count_follows_a_rewritten_file(tmp_path):
    path = write_video(tmp_path / "changing.mp4", indexed_frames(10))
    assert count_frames(path) == 10
    write_video(path, indexed_frames(16))
    os.utime(path, ns=(1, 1))  # a new modification time even on coarse clocks
    assert count_frames(path) == 16
    np.testing.assert_array_equal(read_frames(path, [15]), full_decode(path)[15:])


def test_empty_and_negative_indices(videos):
    path, _ = videos[(".mp4", None)]
    assert read_frames(path, []).shape == (0, 32, 32, 3)
    with pytest.raises(ValueError, match=">= 0"):
        read_frames(path, [3, -1])


def test_missing_file_and_not_a_video(tmp_path):
    missing = tmp_path / "missing.mp4"
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    for path in (missing, text):
        for call in (count_frames, lambda target: read_frames(target, [0])):
            with pytest.raises(VideoDecodeError, match=path.name) as caught:
                call(path)
            assert caught.value.path == str(path)


def test_index_past_the_end_raises(videos):
    path, _ = videos[(".webm", 8)]
    video._index_cache.clear()
    with pytest.raises(VideoDecodeError, match=f"{path.name}.*only {NUM_FRAMES} frames"):
        read_frames(path, [0, NUM_FRAMES])
    count_frames(path)
    with pytest.raises(VideoDecodeError, match=path.name):
        read_frames(path, [NUM_FRAMES + 5])


def write_faststart_mp4(path: Path, frames: np.ndarray) -> Path:
    """H.264 .mp4 with its index at the front, so a truncated file still partly decodes."""
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    "suffix, partly_decodable",
    [(".mp4", False), (".avi", None), (".webm", True), ("faststart.mp4", True)],
)
def test_truncated_file(tmp_path, suffix, partly_decodable):
    """Half a file: the frames that decode are exact, anything beyond raises naming the file.

    An .mp4 written by write_video keeps its index at the end, so half of it does not open at
    all; a .webm or a "faststart" .mp4 decodes its first part; an .avi may do either.
    """
    num_frames = 96
    noise = np.random.default_rng(0).integers(-12, 13, (num_frames, 32, 32, 3))
    # Noise makes the coded frames, not the headers, most of the file.
    source = np.clip(indexed_frames(num_frames) + noise, 0, 255).astype(np.uint8)
    whole = tmp_path / f"whole{suffix}"
    if suffix == "faststart.mp4":
        write_faststart_mp4(whole, source)
    else:
        write_video(whole, source)
    reference = full_decode(whole)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=cut.name):
        read_frames(cut, [num_frames - 1])
    try:
        decodable = count_frames(cut)
    except VideoDecodeError as error:
        assert partly_decodable is not True and cut.name in str(error)
        return
    assert partly_decodable is not False
    assert 0 < decodable < num_frames
    with pytest.raises(VideoDecodeError, match=f"{cut.name}.*only {decodable} frames"):
        read_frames(cut, [decodable])
    prefix = np.arange(decodable)
    np.testing.assert_array_equal(read_frames(cut, prefix[::-1]), reference[prefix[::-1]])
    video._index_cache.clear()  # the same frames without the index
    np.testing.assert_array_equal(read_frames(cut, prefix), reference[prefix])
    with pytest.raises(VideoDecodeError, match=cut.name):
        read_frames(cut, [decodable])


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_containers_are_closed(videos, tmp_path):
    """No file descriptor leaks, on success or on error."""
    path, _ = videos[(".mp4", 8)]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(path.read_bytes()[:2000])
    read_frames(path, [1])

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    for _ in range(20):
        read_frames(path, [3, 30])
        count_frames(path)
        with pytest.raises(VideoDecodeError):
            read_frames(broken, [0])
    assert open_descriptors() == before


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "a.mkv", np.zeros((2, 8, 8, 3), dtype=np.uint8))
