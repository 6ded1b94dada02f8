"""Video files: PyAV encoding and exact-frame decoding.

Frame numbers in this module are positions in the sequence of frames a decoder outputs when it
decodes the file from its first packet to its last (presentation order, counted from 0). That
sequence is the ground truth: `read_frames(path, [i])` returns frame `i` of it, bit for bit, or
raises. Decoders that seek by timestamp and take whatever frame lands nearest cost other video
toolkits accuracy; for playback-rate perception a neighbouring frame is a wrong label, so this
module only seeks when it can prove which frame it lands on (see `_FrameIndex`).

What real collections hold is handled here, once: variable frame rate (frame numbers follow
the decoder's output, never timestamps divided by a rate), audio and other streams (only the
first video stream is demuxed), odd frame sizes, and phone videos whose container carries a
display matrix (the "rotate" tag): frames come out upright, turned as players show them (see
`upright`), and every frame size reported here is the upright one.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# Codec names as PyAV knows them, by the container they are written into.
CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}

# Frames with fewer pixels than this decode fastest on one thread: starting decoder threads
# costs more than they save (measured: 64 x 64 H.264 decodes about 2x faster unthreaded; from
# 128 x 128 up, threads win).
_THREADING_MIN_PIXELS = 128 * 128

# Codecs whose decoders, told skip_frame="NONREF", drop exactly the frames no other frame
# references (H.264: nal_ref_idc == 0; HEVC: sub-layer non-reference pictures).
_SKIPPABLE_CODECS = frozenset({"h264", "hevc"})

# How many files' frame indices stay cached in-process (each holds one int64 per frame).
_INDEX_CACHE_SIZE = 65536


class VideoDecodeError(RuntimeError):
    """A video file is missing, is not a video, or has fewer decodable frames than asked.

    The message starts with the file's path; `path` holds it too. `bad_frames` lists the
    frames the decoder flagged as corrupt, when that is why.
    """

    def __init__(self, path: str | Path, problem: str, bad_frames: Sequence[int] = ()) -> None:
        self.path = str(path)
        self.bad_frames = tuple(bad_frames)
        super().__init__(f"{path}: {problem}")


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 25,
    crf: int = 18,
    keyframe_interval: int | None = None,
    rotation: int = 0,
) -> Path:
    """Encode `frames` ([T, H, W, 3] uint8 RGB) into `path`; the codec follows the suffix.

    Chroma is subsampled (yuv420p) when H and W are even; odd sizes are written in yuv444p
    (H.264 / VP9; MPEG-4 Part 2 in .avi takes odd sizes in yuv420p). `crf` sets quality for
    H.264 / VP9 (lower is better). `keyframe_interval` (frames) caps the distance between key
    frames; None keeps the encoder's default (250 for H.264, so short clips hold a single key
    frame). `rotation` (degrees, a multiple of 90) writes a display matrix telling players to
    turn the frames that far counter-clockwise, as phones do (.mp4 / .webm only); reading the
    file back then gives `frames` turned by `rotation`.
    """
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    codec = CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"unsupported video suffix {path.suffix!r}; use one of {sorted(CODECS)}")
    if rotation % 90 != 0:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
    if rotation % 360 != 0 and codec == "mpeg4":
        raise ValueError(f"{path.suffix} files cannot carry a display rotation; use .mp4 or .webm")
    height, width = frames.shape[1:3]
    even = height % 2 == 0 and width % 2 == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if even or codec == "mpeg4" else "yuv444p"
        if keyframe_interval is not None:
            stream.codec_context.gop_size = keyframe_interval
        if rotation % 360 != 0:
            stream.set_display_rotation(rotation)
        if codec == "libx264":
            # no macroblock-tree rate control: with it the same frames gave other bytes and
            # other decoded pixels (up to 33 levels apart) in about half of fresh processes,
            # on one thread as on several; without it every process wrote the same bytes
            stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        else:
            stream.options = {"qscale": "2"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


class _Orientation(NamedTuple):
    """How to turn a decoded [H, W, ...] image upright: transpose, then flip rows / columns."""

    transpose: bool
    flip_rows: bool
    flip_columns: bool

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.transpose:
            image = image.swapaxes(0, 1)  # [H, W, ...] -> [W, H, ...]
        if self.flip_rows:
            image = image[::-1]
        if self.flip_columns:
            image = image[:, ::-1]
        return image


_UPRIGHT = _Orientation(False, False, False)


def _orientation(display_matrix: Sequence[int] | np.ndarray | None) -> _Orientation:
    """The quarter-turn-and-mirror transform a display matrix asks for (nearest one).

    FFmpeg's display matrix maps a decoded pixel (u, v) (column, row) to its displayed place
    (x, y) = (a u + c v, b u + d v) with a, b, c, d = matrix[0], [1], [3], [4] (row-vector
    convention). The same cases as FFmpeg's own `autorotate` (fftools), all eight orientations.
    """
    if display_matrix is None:
        return _UPRIGHT
    a, b, _, c, d = (int(value) for value in list(display_matrix)[:5])
    if abs(a) + abs(d) >= abs(b) + abs(c):
        if a == 0 and d == 0:
            return _UPRIGHT  # not a transform (all zero)
        return _Orientation(False, flip_rows=d < 0, flip_columns=a < 0)
    # x follows v and y follows u: the picture is turned a quarter.
    return _Orientation(True, flip_rows=b < 0, flip_columns=c < 0)


def _rotation(display_matrix: Sequence[int] | np.ndarray | None) -> int:
    """Degrees (0, 90, 180 or 270) a player turns the decoded frames counter-clockwise.

    The rotation part of the matrix, as FFmpeg's `av_display_rotation_get` and PyAV's
    `VideoFrame.rotation` give it (those in [-180, 180]), snapped to a quarter turn.
    """
    if display_matrix is None:
        return 0
    a, b = float(display_matrix[0]), float(display_matrix[1])
    c, d = float(display_matrix[3]), float(display_matrix[4])
    scale_x, scale_y = np.hypot(a, c), np.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return 0
    degrees = -np.degrees(np.arctan2(b / scale_y, a / scale_x))
    return int(round(degrees / 90)) % 4 * 90


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's display matrix (9 int32, 16.16 fixed point; FFmpeg layout), None if none."""
    side_data = frame.side_data.get("DISPLAYMATRIX")
    if side_data is None:
        return None
    matrix = np.frombuffer(bytes(side_data), dtype=np.int32)
    return matrix if matrix.size == 9 else None


def upright(image: np.ndarray, display_matrix: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """`image` ([H, W, ...], as decoded) turned as a player shows it, given the display matrix.

    `display_matrix` is FFmpeg's 3 x 3 matrix as 9 int32 values (16.16 fixed point; None:
    upright already), e.g. what PyAV's `VideoStream.set_display_rotation` writes. Rotations
    are quarter turns (other angles snap to the nearest one), mirrored matrices are mirrored
    the same way FFmpeg's `autorotate` does. Returns a view of `image` (no copy), [W, H, ...]
    for a quarter turn.
    """
    return _orientation(display_matrix).apply(image)


@dataclass
class _FrameIndex:
    """What one full sequential decode of a file found; makes seeking provably exact.

    `presentation_timestamps[i]` is the pts (stream time base) of decoded frame i;
    `keyframes` lists the frame numbers the decoder flagged as key frames. Decoding after a
    seek is trusted only when it restarts at one of these key frames (checked by pts) and then
    reproduces the indexed pts in order (gaps only where the decoder was allowed to drop an
    unwanted, unreferenced frame); any mismatch falls back to decoding from the start and marks
    the file `seekable = False`.

    A file cut short (a packet the demuxer flags as truncated, or a demuxing error) keeps the
    frames before the cut: they come from intact packets, and `error` says why they end.
    A damaged stream is another matter: when the decoder flags a frame as corrupt (it
    concealed errors in it), fails on a packet, or turns a packet into no frame, `damage`
    says so and the file is refused whole. Frames that reference a damaged one are wrong
    without being flagged (in H.264 up to the next key frame; a B-frame decoded after a
    damaged frame can be shown before it), and bit errors the decoder cannot detect usually
    come before the first one it does, so no frame of such a file is trusted.
    """

    presentation_timestamps: np.ndarray  # [F] int64, strictly increasing
    keyframes: np.ndarray  # [K] int64 frame numbers, sorted
    seekable: bool
    error: str | None  # why the decodable frames end early, None when they reach the end
    display_matrix: np.ndarray | None  # frame 0's, None when it has none (or no frame decodes)
    corrupt_frames: tuple[int, ...] = ()  # frame numbers the decoder flagged as corrupt
    damage: str | None = None  # why no frame of the file is trusted, None when intact

    @property
    def num_frames(self) -> int:
        return len(self.presentation_timestamps)


# Least recently used first; the lock keeps it whole when threads share it.
_index_cache: OrderedDict[tuple[str, int, int], _FrameIndex] = OrderedDict()
_index_cache_lock = threading.Lock()


def _file_key(path: str | Path) -> tuple[str, int, int]:
    """(absolute path, size in bytes, modification time in ns): changes when the file does."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except OSError as error:
        raise VideoDecodeError(path, f"cannot read file ({error})") from None
    return os.path.abspath(path), status.st_size, status.st_mtime_ns


class _Decoder:
    """Frames of the first video stream of an open container, in presentation order.

    A demuxing or decoding error, or a packet the demuxer flags as corrupt (cut short), ends
    the frames early and is kept in `error`: the frames out before it are the file's
    decodable frames (frames still held in the decoder's reordering buffer are not flushed).
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        path: str | Path,
        allow_threads: bool = True,
        track_packets: bool = False,
    ) -> None:
        if not container.streams.video:
            raise VideoDecodeError(path, "contains no video stream")
        self.container = container
        self.stream = container.streams.video[0]
        context = self.stream.codec_context
        if context is None:  # FFmpeg has no decoder for what the stream claims to hold
            raise VideoDecodeError(path, "its video stream has no decoder (unknown codec)")
        # Threading gives bit-identical frames for an intact file; it only changes speed. On a
        # damaged file, frame threading reports the error a few packets late, so how many frames
        # come out before it varies: callers redo such files unthreaded (`allow_threads=False`).
        self.threaded = allow_threads and context.width * context.height >= _THREADING_MIN_PIXELS
        if self.threaded:
            context.thread_type = "AUTO"
            context.thread_count = 0
        else:
            context.thread_type = "NONE"
        self.error: str | None = None
        # With `track_packets`: the pts of every packet fed to the decoder.
        self.track_packets = track_packets
        self.packet_timestamps: set[int] = set()
        # One reformatter per call reuses its scaling context across frames (a fresh one per
        # frame, as `frame.to_ndarray(format="rgb24")` makes, is several times slower).
        self.reformatter = VideoReformatter()

    def frames(
        self, skip_packet: Callable[[av.Packet], bool] | None = None
    ) -> Iterator[av.VideoFrame]:
        """Decode from the container's current position to the end (or the first error).

        `skip_packet(packet)` True lets the decoder drop that packet's frame if no other frame
        references it (skip_frame="NONREF"); such a frame then does not come out.
        """
        packets = self.container.demux(self.stream)
        context = self.stream.codec_context
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as error:
                self.error = f"demuxing failed ({error})"
                return
            if packet.is_corrupt:
                # E.g. the last packet of a truncated file: decoders would conceal the missing
                # data and return a plausible but wrong frame. Decodable frames end here.
                self.error = "corrupt or truncated packet"
                return
            if self.track_packets and packet.pts is not None and packet.size:
                self.packet_timestamps.add(packet.pts)
            if skip_packet is not None:
                context.skip_frame = "NONREF" if skip_packet(packet) else "DEFAULT"
            try:
                decoded = packet.decode()
            except av.FFmpegError as error:
                self.error = f"decoding failed ({error})"
                return
            yield from decoded

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """[H, W, 3] uint8 RGB, C-contiguous, upright: `frame.to_ndarray(format="rgb24")`
        turned by `upright` with the frame's display matrix ([W, H, 3] as coded then)."""
        rgb = self.reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
        display_matrix = _display_matrix(frame)
        if display_matrix is None:
            return rgb
        return np.ascontiguousarray(upright(rgb, display_matrix))


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as error:
        raise VideoDecodeError(path, f"not a readable video ({error.strerror or error})") from None
    except UnicodeDecodeError as error:  # PyAV decodes the container's metadata as UTF-8
        raise VideoDecodeError(path, f"not a readable video (metadata: {error})") from None


def _build_index(path: str | Path) -> _FrameIndex:
    """Decode `path` once, on one thread, and index its frames.

    One thread because the verdict on damage must not depend on timing: with frame threads
    the decoder conceals damage differently from run to run, and in 5 of 300 files with a
    few flipped bits it flagged no frame as corrupt where one thread flagged one.
    """
    timestamps: list[int] = []
    keyframes: list[int] = []
    corrupt: list[int] = []
    display_matrix = None
    with _open(path) as container:
        decoder = _Decoder(container, path, allow_threads=False, track_packets=True)
        for number, frame in enumerate(decoder.frames()):
            if number == 0:
                display_matrix = _display_matrix(frame)
            timestamps.append(frame.pts if frame.pts is not None else -(2**62))
            if frame.key_frame:
                keyframes.append(number)
            if frame.is_corrupt:
                corrupt.append(number)
    presentation_timestamps = np.asarray(timestamps, dtype=np.int64)
    seekable = (
        len(timestamps) > 0
        and all(frame_pts > -(2**62) for frame_pts in timestamps)
        and bool(np.all(np.diff(presentation_timestamps) > 0))
        and len(keyframes) > 0
        and keyframes[0] == 0
    )
    return _FrameIndex(
        presentation_timestamps=presentation_timestamps,
        keyframes=np.asarray(keyframes, dtype=np.int64),
        seekable=seekable,
        error=decoder.error,
        display_matrix=display_matrix,
        corrupt_frames=tuple(corrupt),
        damage=_damage(decoder, timestamps, corrupt),
    )


def _damage(decoder: _Decoder, timestamps: list[int], corrupt: list[int]) -> str | None:
    """Why the decoder's output cannot be trusted, or None; see `_FrameIndex.damage`."""
    reasons = []
    if corrupt:
        shown = ", ".join(str(number) for number in corrupt[:10])
        more = f" and {len(corrupt) - 10} more" if len(corrupt) > 10 else ""
        plural = "s" if len(corrupt) > 1 else ""
        reasons.append(f"the decoder flags frame{plural} {shown}{more} as corrupt")
    if decoder.error is not None and decoder.error.startswith("decoding failed"):
        reasons.append(f"{decoder.error} after frame {len(timestamps) - 1}")
    # A packet between the first and the last frame out that gave no frame shifts the
    # numbers of every later frame (leading packets before the first key frame may be
    # dropped by design; trailing ones are still in the decoder when decoding stops).
    if len(timestamps) > 1 and decoder.error is None:
        shown_pts = set(timestamps)
        dropped = [
            pts
            for pts in decoder.packet_timestamps
            if timestamps[0] < pts < timestamps[-1] and pts not in shown_pts
        ]
        if dropped:
            reasons.append(f"{len(dropped)} packet(s) in the middle decode to no frame")
    return "; ".join(reasons) or None


def _cached_index(key: tuple[str, int, int]) -> _FrameIndex | None:
    with _index_cache_lock:
        index = _index_cache.get(key)
        if index is not None:
            _index_cache.move_to_end(key)
        return index


def _frame_index(path: str | Path) -> _FrameIndex:
    key = _file_key(path)
    index = _cached_index(key)
    if index is None:
        index = _build_index(path)  # outside the lock: decoding takes a while
        with _index_cache_lock:
            _index_cache[key] = index
            while len(_index_cache) > _INDEX_CACHE_SIZE:
                _index_cache.popitem(last=False)
    return index


def count_frames(path: str | Path) -> int:
    """The exact number of decodable frames of `path`'s first video stream.

    Decodes the whole file once (no colour conversion) and caches the result in-process, keyed
    by path, size and modification time, so later calls and `read_frames` seeks are free. For a
    file cut short this is the number of frames before the cut.

    Raises `VideoDecodeError` (naming the file) for a missing file, a file that is not a video,
    a damaged stream (see `_FrameIndex`), or a video with no decodable frame.
    """
    return _usable_index(path).num_frames


def _usable_index(path: str | Path) -> _FrameIndex:
    """`path`'s index; raises `VideoDecodeError` unless some of its frames can be used."""
    index = _frame_index(path)
    if index.damage is not None:
        raise VideoDecodeError(
            path,
            f"damaged: {index.damage}; no frame of it is used (frames that reference damaged "
            "ones are wrong too)",
            bad_frames=index.corrupt_frames,
        )
    if index.num_frames == 0:
        reason = f" ({index.error})" if index.error else ""
        raise VideoDecodeError(path, f"contains no decodable video frame{reason}")
    return index


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` found out about a file (sizes as `read_frames` returns frames)."""

    num_frames: int  # decodable frames (`count_frames`)
    width: int  # of the upright frames, pixels
    height: int
    fps: float | None  # the container's average frame rate; None when it states none
    duration: float | None  # seconds the file states (video stream, else container); None: none
    decoded_duration: float | None  # seconds the decodable frames span (timestamps)
    has_audio: bool  # the file also holds an audio stream (never decoded here)
    rotation: int  # 0, 90, 180 or 270: degrees the decoded frames are turned counter-clockwise
    error: str | None  # why decoding stopped before the end of the file, None when it did not


def probe_video(path: str | Path) -> VideoInfo:
    """Count `path`'s frames (as `count_frames`, cached) and read its stream properties.

    A file cut short whose first frames decode gives their count and the reason decoding
    stopped in `error`; a file cut at a packet boundary stops without an error, but its
    `decoded_duration` then falls short of the `duration` its header states.

    Raises `VideoDecodeError` (naming the file) when the file is missing, is not a video, is
    damaged (its `bad_frames` then lists the frames the decoder flags as corrupt) or has no
    decodable frame.
    """
    index = _usable_index(path)
    num_frames = index.num_frames
    with _open(path) as container:
        stream = _Decoder(container, path).stream
        height, width = stream.codec_context.height, stream.codec_context.width
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        timestamps = index.presentation_timestamps
        if num_frames > 1 and index.seekable and stream.time_base is not None:
            # The span of the frames' timestamps plus one average frame gap.
            span = int(timestamps[-1] - timestamps[0]) * num_frames / (num_frames - 1)
            decoded_duration = float(span * stream.time_base)
        else:
            decoded_duration = num_frames / float(rate) if rate else None
        has_audio = len(container.streams.audio) > 0
    if _orientation(index.display_matrix).transpose:
        height, width = width, height
    return VideoInfo(
        num_frames=num_frames,
        width=width,
        height=height,
        fps=float(rate) if rate else None,
        duration=duration,
        decoded_duration=decoded_duration,
        has_audio=has_audio,
        rotation=_rotation(index.display_matrix),
        error=index.error,
    )


def _missing_frames_error(
    path: str | Path, wanted: np.ndarray, num_decoded: int, error: str | None
) -> VideoDecodeError:
    reason = f"; {error}" if error else ""
    return VideoDecodeError(
        path,
        f"frame {int(wanted.max())} requested but only {num_decoded} frames decode{reason}",
    )


def _read_sequential(
    path: str | Path, wanted: np.ndarray, allow_threads: bool = True
) -> dict[int, np.ndarray]:
    """Decode from the first frame until the last wanted one; frames by frame number."""
    wanted_set = set(wanted.tolist())
    last_wanted = int(wanted[-1])
    found: dict[int, np.ndarray] = {}
    number = 0
    with _open(path) as container:
        decoder = _Decoder(container, path, allow_threads)
        for frame in decoder.frames():
            if number in wanted_set:
                if frame.is_corrupt:
                    raise VideoDecodeError(path, f"the decoder flags frame {number} as corrupt")
                found[number] = decoder.to_rgb(frame)
            number += 1
            if number > last_wanted:
                return found
    if decoder.error is not None and decoder.threaded:
        return _read_sequential(path, wanted, allow_threads=False)
    raise _missing_frames_error(path, wanted, number, decoder.error)


class _SeekMismatch(Exception):
    """Decoding after a seek did not reproduce the indexed frames."""


def _read_indexed(
    path: str | Path, wanted: np.ndarray, index: _FrameIndex
) -> dict[int, np.ndarray]:
    """Decode as little as the index proves safe; every frame identified by its pts.

    Two savings, both checked against `index`: decoding starts at the key frame before each
    run of wanted frames (a seek), and for codecs in `_SKIPPABLE_CODECS` packets of unwanted
    frames are decoded with skip_frame="NONREF", so the decoder drops them when no other frame
    references them (those frames then never come out). Raises `_SeekMismatch` when the
    decoder's output disagrees with the index.
    """
    timestamps = index.presentation_timestamps
    keyframe_set = set(index.keyframes.tolist())
    wanted_set = set(wanted.tolist())
    found: dict[int, np.ndarray] = {}

    def frame_number(pts: int | None) -> int | None:
        if pts is None:
            return None
        number = int(np.searchsorted(timestamps, pts))
        return number if number < len(timestamps) and timestamps[number] == pts else None

    def skip_packet(packet: av.Packet) -> bool:
        number = frame_number(packet.pts)
        return number is not None and number not in wanted_set

    with _open(path) as container:
        decoder = _Decoder(container, path)
        # Frame threading hands packets to worker threads later; keep skipping synchronous.
        skipping = not decoder.threaded and decoder.stream.codec_context.name in _SKIPPABLE_CODECS
        frames: Iterator[av.VideoFrame] | None = None
        last_decoded = -1  # frame number of the last trusted frame out of the decoder
        trusted = False
        for target in wanted.tolist():
            start = int(index.keyframes[np.searchsorted(index.keyframes, target, side="right") - 1])
            if frames is None or start > last_decoded + 1:
                # Decoding on from here would pass through frames we do not need.
                if frames is not None or start > 0:
                    container.seek(int(timestamps[start]), stream=decoder.stream)
                frames = decoder.frames(skip_packet if skipping else None)
                last_decoded, trusted = -1, False
            while target not in found:
                frame = next(frames, None)
                number = None if frame is None else frame_number(frame.pts)
                if number is None:
                    raise _SeekMismatch
                if not trusted:
                    # Frames before the first key frame after a seek (e.g. leading B-frames
                    # of an open GOP) may reference pictures we did not decode: pass them.
                    if number > target:
                        raise _SeekMismatch
                    if number not in keyframe_set:
                        continue
                    trusted = True
                elif number <= last_decoded or (number > last_decoded + 1 and not skipping):
                    raise _SeekMismatch
                elif any(gap in wanted_set for gap in range(last_decoded + 1, number)):
                    raise _SeekMismatch  # a wanted frame did not come out
                last_decoded = number
                if number in wanted_set:
                    if frame.is_corrupt:
                        raise _SeekMismatch  # not so in the index: decode from the start
                    found[number] = decoder.to_rgb(frame)
    return found


def _frame_size(path: str | Path, index: _FrameIndex | None) -> tuple[int, int]:
    """(height, width) of the upright frames, from the stream and the first frame's matrix."""
    with _open(path) as container:
        decoder = _Decoder(container, path)
        context = decoder.stream.codec_context
        if index is not None:
            display_matrix = index.display_matrix
        else:
            first = next(decoder.frames(), None)
            display_matrix = None if first is None else _display_matrix(first)
        height, width = context.height, context.width
    return (width, height) if _orientation(display_matrix).transpose else (height, width)


def read_frames(path: str | Path, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Frames `indices` of `path`, exactly as a full sequential decode gives them.

    Args:
        path: a video file (any container and codec FFmpeg reads; the first video stream).
        indices: frame numbers (0-based, presentation order), in any order, repeats allowed.

    Returns:
        [N, H, W, 3] uint8 RGB, N = len(indices), row n = frame indices[n]; bit-identical to
        `frame.to_ndarray(format="rgb24")` for the frames of a decode from the first packet,
        turned upright (`upright`) when the file carries a display matrix (phone videos): H
        and W are then the displayed height and width.

    The file is indexed first (one full decode without colour conversion, as `count_frames`,
    cached in-process). Decoding then starts at the key frame before each run of wanted
    frames, and H.264 / HEVC decoders drop unwanted frames that nothing references; every frame
    that comes out is matched to its frame number by pts against the index, and any
    disagreement falls back to decoding from the start. A damaged stream (see `_FrameIndex`) is
    refused whole, and a frame the decoder flags as corrupt is never returned. The container
    is opened per call and always closed.

    Raises `VideoDecodeError` (naming the file) for a missing file, a file that is not a
    video, or an index beyond the frames that decode (e.g. in a truncated file); `ValueError`
    for a negative index.
    """
    requested = np.asarray(indices, dtype=np.int64).reshape(-1)
    if requested.size and requested.min() < 0:
        raise ValueError(f"frame indices must be >= 0, got {int(requested.min())}")
    index = _usable_index(path)
    if requested.size == 0:
        return np.empty((0, *_frame_size(path, index), 3), dtype=np.uint8)
    wanted = np.unique(requested)  # sorted
    if int(wanted[-1]) >= index.num_frames:
        raise _missing_frames_error(path, wanted, index.num_frames, index.error)
    found: dict[int, np.ndarray] | None = None
    if index.seekable:
        try:
            found = _read_indexed(path, wanted, index)
        except _SeekMismatch:
            index.seekable = False
    if found is None:
        found = _read_sequential(path, wanted)
    return np.stack([found[number] for number in requested.tolist()])
