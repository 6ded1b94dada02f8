"""Video I/O: exact frame reading against a full sequential decode, counts, clear errors."""

from __future__ import annotations

import os
from fractions import Fraction
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


def test_h264_is_encoded_without_mbtree_for_the_same_bytes_in_every_process(tmp_path):
    """x264's macroblock-tree rate control gave other bytes, and other decoded pixels, in
    about half of fresh processes for the same frames (measured; a test in one process
    cannot see it). x264 writes its settings into the stream (an SEI message), so the file
    itself says whether mbtree was on."""
    frames = np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    data = write_video(tmp_path / "a.mp4", frames).read_bytes()
    assert b"x264 - core" in data and b" mbtree=0 " in data


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "a.mkv", np.zeros((2, 8, 8, 3), dtype=np.uint8))


# What real collections hold: variable frame rate, audio, odd sizes, phone rotation tags.


def write_with_pyav(
    path: Path,
    frames: np.ndarray,
    timestamps_ms: np.ndarray | None = None,
    audio: bool = False,
    keyframe_interval: int = 8,
    display: tuple[int, bool] | None = None,
) -> Path:
    """H.264 (.mp4/.mkv) or VP9 (.webm) written frame by frame, for what `write_video` does not
    make: `timestamps_ms` gives each frame's pts in milliseconds (variable frame rate),
    `audio` adds a 2 s audio stream (AAC, or Opus in .webm), `display` = (degrees, hflip)
    writes a display matrix (PyAV's `set_display_rotation`)."""
    webm = path.suffix == ".webm"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libvpx-vp9" if webm else "libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = keyframe_interval
        if timestamps_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if display is not None:
            stream.set_display_rotation(display[0], hflip=display[1])
        sound = container.add_stream("libopus" if webm else "aac", rate=48000) if audio else None
        for number, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if timestamps_ms is not None:
                frame.pts, frame.time_base = int(timestamps_ms[number]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if sound is not None:
            tone = np.sin(np.arange(48000 * 2) / 10).astype(np.float32)[None]  # [1, samples]
            for start in range(0, tone.shape[1], 960):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(tone[:, start : start + 960]), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = 48000, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode())
    return path


def irregular_timestamps(num_frames: int, seed: int = 0) -> np.ndarray:
    """Milliseconds with gaps from 8 to 120 ms, as phones and screen recorders write them."""
    gaps = np.random.default_rng(seed).integers(8, 121, num_frames)
    return np.concatenate([[0], np.cumsum(gaps[1:])])


def check_exact_reads(path: Path, reference: np.ndarray, indexed: bool) -> None:
    """Random, reversed and repeated reads equal the reference, with and without the index."""
    video._index_cache.clear()
    if indexed:
        assert count_frames(path) == len(reference)
    rng = np.random.default_rng(1)
    for _ in range(8):
        indices = rng.integers(0, len(reference), size=6)
        np.testing.assert_array_equal(read_frames(path, indices), reference[indices])
    everything = np.arange(len(reference))[::-1]
    np.testing.assert_array_equal(read_frames(path, everything), reference[everything])


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
@pytest.mark.parametrize("indexed", [False, True], ids=["sequential", "indexed"])
def test_variable_frame_rate_reads_decode_order(tmp_path, suffix, indexed):
    """Irregular timestamps: frame i is still the i-th frame a full decode gives."""
    source = indexed_frames(NUM_FRAMES)
    timestamps = irregular_timestamps(NUM_FRAMES)
    path = write_with_pyav(tmp_path / f"vfr{suffix}", source, timestamps_ms=timestamps)
    reference = full_decode(path)
    with av.open(str(path)) as container:  # the file really is VFR
        times = [frame.time for frame in container.decode(video=0)]
    gaps = np.diff(times)
    assert gaps.max() > 5 * gaps.min()
    assert len(reference) == NUM_FRAMES
    distance = np.abs(reference[:, None].astype(np.int16) - source[None].astype(np.int16))
    assert (distance.mean(axis=(2, 3, 4)).argmin(axis=1) == np.arange(NUM_FRAMES)).all()
    check_exact_reads(path, reference, indexed)
    if indexed:
        assert video._index_cache[video._file_key(path)].seekable


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_audio_stream_is_ignored(tmp_path, suffix):
    """A file with audio: only the video stream is decoded; counts and frames are exact."""
    path = write_with_pyav(tmp_path / f"sound{suffix}", indexed_frames(NUM_FRAMES), audio=True)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
    reference = full_decode(path)
    assert len(reference) == NUM_FRAMES
    video._index_cache.clear()
    assert count_frames(path) == NUM_FRAMES
    for indexed in (False, True):
        check_exact_reads(path, reference, indexed)
    info = video.probe_video(path)
    assert info.has_audio and info.num_frames == NUM_FRAMES and info.error is None
    assert info.fps == pytest.approx(25) and info.decoded_duration == pytest.approx(1.6)
    assert info.duration == pytest.approx(1.6 if suffix == ".mp4" else 2.0, abs=0.05)


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_odd_frame_sizes(tmp_path, suffix):
    """33 x 47 frames: written (yuv444p, or yuv420p in .avi) and read back exactly."""
    source = indexed_frames(24, size=48)[:, 5:38, :47]  # [24, 33, 47, 3]
    path = write_video(tmp_path / f"odd{suffix}", np.ascontiguousarray(source), keyframe_interval=8)
    reference = full_decode(path)
    assert reference.shape == (24, 33, 47, 3)
    error = np.abs(reference.astype(np.int16) - source.astype(np.int16))
    assert error.mean() < (12 if suffix == ".avi" else 4)
    for indexed in (False, True):
        check_exact_reads(path, reference, indexed)
    info = video.probe_video(path)
    assert (info.height, info.width, info.rotation) == (33, 47, 0)
    assert read_frames(path, []).shape == (0, 33, 47, 3)


def corner_marked(num_frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """[T, H, W, 3] frames with a white block in the top-left and a grey one top-right."""
    frames = np.full((num_frames, height, width, 3), 40, dtype=np.uint8)
    frames[:, :8, :8] = 250
    frames[:, :8, -8:] = 140
    return frames


@pytest.mark.parametrize("rotation", [90, 180, 270])
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_rotated_phone_video_comes_out_upright(tmp_path, suffix, rotation):
    """A display rotation tag: frames come out turned as a player shows them."""
    source = corner_marked(12)
    path = write_video(tmp_path / f"phone{suffix}", source, keyframe_interval=4, rotation=rotation)
    stored = full_decode(path)  # as coded: not turned
    assert stored.shape == (12, 32, 48, 3)
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).rotation % 360 == rotation  # PyAV agrees
    shown = np.rot90(stored, k=rotation // 90, axes=(1, 2))  # counter-clockwise quarter turns
    for indexed in (False, True):
        check_exact_reads(path, shown, indexed)
    frames = read_frames(path, [0, 11])
    assert frames.flags.c_contiguous
    # Where the white corner ends up: 90 counter-clockwise puts top-left at bottom-left.
    white_corner = {90: (-1, 0), 180: (-1, -1), 270: (0, -1)}[rotation]
    assert frames[0][white_corner].min() > 200
    expected_shape = (48, 32) if rotation in (90, 270) else (32, 48)
    assert frames.shape[1:3] == expected_shape
    info = video.probe_video(path)
    assert (info.height, info.width, info.rotation) == (*expected_shape, rotation)
    video._index_cache.clear()
    assert read_frames(path, []).shape == (0, *expected_shape, 3)


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_all_eight_display_orientations(tmp_path, degrees, hflip):
    """Rotation then mirroring (PyAV's meaning of set_display_rotation) for all 8 EXIF cases."""
    source = corner_marked(3, 16, 24)
    path = write_with_pyav(tmp_path / "turned.mp4", source, display=(degrees, hflip))
    stored = full_decode(path)
    shown = np.rot90(stored, k=degrees // 90, axes=(1, 2))
    if hflip:
        shown = shown[:, :, ::-1]
    np.testing.assert_array_equal(read_frames(path, [2, 0, 1]), shown[[2, 0, 1]])
    assert video.probe_video(path).rotation in (0, 90, 180, 270)


def test_upright_on_arrays():
    """The transform straight from FFmpeg's display matrix layout (16.16 fixed point)."""
    image = np.arange(6).reshape(2, 3)
    one = 1 << 16

    def matrix(a: int, b: int, c: int, d: int) -> list[int]:
        return [a * one, b * one, 0, c * one, d * one, 0, 0, 0, 1 << 30]

    np.testing.assert_array_equal(video.upright(image, None), image)
    np.testing.assert_array_equal(video.upright(image, matrix(1, 0, 0, 1)), image)
    # av_display_rotation_set(m, -90) is 90 degrees counter-clockwise (PyAV rotation 90).
    np.testing.assert_array_equal(video.upright(image, matrix(0, -1, 1, 0)), np.rot90(image, 1))
    np.testing.assert_array_equal(video.upright(image, matrix(0, 1, -1, 0)), np.rot90(image, -1))
    np.testing.assert_array_equal(video.upright(image, matrix(-1, 0, 0, -1)), np.rot90(image, 2))
    np.testing.assert_array_equal(video.upright(image, matrix(-1, 0, 0, 1)), image[:, ::-1])
    np.testing.assert_array_equal(video.upright(image, matrix(1, 0, 0, -1)), image[::-1])
    np.testing.assert_array_equal(video.upright(image, matrix(0, 1, 1, 0)), image.T)
    assert video._rotation(matrix(0, -1, 1, 0)) == 90
    assert video._rotation(matrix(0, 1, -1, 0)) == 270
    assert video._rotation(matrix(-1, 0, 0, -1)) == 180
    assert video._rotation(None) == video._rotation([0] * 9) == 0


def test_probe_video_of_a_damaged_file(tmp_path):
    source = np.clip(
        indexed_frames(96).astype(np.int16)
        + np.random.default_rng(0).integers(-12, 13, (96, 32, 32, 3)),
        0,
        255,
    ).astype(np.uint8)
    whole = write_video(tmp_path / "whole.webm", source)
    cut = tmp_path / "cut.webm"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    info = video.probe_video(cut)
    # Cut at a packet boundary: no decoding error, but the header states the whole length.
    assert 0 < info.num_frames < 96 and info.error is None
    assert info.duration == pytest.approx(96 / 25, abs=0.05)
    assert info.decoded_duration == pytest.approx(info.num_frames / 25)
    whole_info = video.probe_video(whole)
    assert whole_info.num_frames == 96 and whole_info.decoded_duration == pytest.approx(96 / 25)
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        video.probe_video(tmp_path / "missing.mp4")


def test_write_video_rejects_bad_rotation(tmp_path):
    frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="multiple of 90"):
        write_video(tmp_path / "a.mp4", frames, rotation=45)
    with pytest.raises(ValueError, match="display rotation"):
        write_video(tmp_path / "a.avi", frames, rotation=90)
