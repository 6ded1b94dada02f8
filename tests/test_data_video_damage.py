"""Damaged and cut video files: the same bytes give the same frames on every read, a frame
the decoder flags as corrupt never reaches training, and a file cut short is reported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from fabricate import tiny_config, ucf_tree

from advise.cli import main
from advise.data import video
from advise.data.check import CheckReport, check_video, write_report
from advise.data.video import VideoDecodeError, count_frames, read_frames, write_video

NUM_FRAMES = 60
HEIGHT, WIDTH = 128, 160  # large enough for the decoder's threads (video._THREADING_MIN_PIXELS)


def textured_clip(seed: int = 0) -> np.ndarray:
    """[60, 128, 160, 3] uint8: a moving ramp, a moving bar and noise, so every frame codes
    with real residuals that bit errors can hit."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:HEIGHT, :WIDTH]
    frames = np.zeros((NUM_FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for t in range(NUM_FRAMES):
        frames[t] = ((columns + 3 * t) % 64 * 4)[..., None]
        frames[t, (rows - 2 * t) % HEIGHT < 20] = (255, 0, 0)
    return np.clip(frames + rng.integers(0, 30, frames.shape), 0, 255).astype(np.uint8)


def plain_decode(path: Path) -> tuple[list[np.ndarray], list[int]] | None:
    """Every frame of a one-thread decode from the first packet, and those flagged corrupt;
    None when a packet fails to decode."""
    frames, corrupt = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "NONE"
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                return None
            for frame in decoded:
                if frame.is_corrupt:
                    corrupt.append(len(frames))
                frames.append(frame.to_ndarray(format="rgb24"))
    return frames, corrupt


def flip_bits(data: bytes, seed: int, flips: int) -> bytes:
    """`flips` single-bit errors at random places in the second half of `data`."""
    rng = np.random.default_rng(seed)
    damaged = bytearray(data)
    for position in rng.integers(len(data) // 2, len(data) - 3000, flips):
        damaged[position] ^= 1 << int(rng.integers(8))
    return bytes(damaged)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, tuple[Path, list[np.ndarray], list[int]]]:
    """An intact clip, one the decoder flags frames of, and one whose damage it cannot see
    (frames differ from the intact ones, none is flagged), each with its plain decode."""
    folder = tmp_path_factory.mktemp("damaged")
    intact = write_video(folder / "intact.mp4", textured_clip())
    reference, _ = plain_decode(intact)
    found = {"intact": (intact, reference, [])}
    for seed in range(40):
        path = folder / f"damaged{seed}.mp4"
        path.write_bytes(flip_bits(intact.read_bytes(), seed, flips=1 + seed % 5))
        decoded = plain_decode(path)
        if decoded is None:
            continue  # a packet that fails: also refused, but not the kind looked for here
        frames, corrupt = decoded
        differs = len(frames) == NUM_FRAMES and any(
            not np.array_equal(frame, good) for frame, good in zip(frames, reference, strict=True)
        )
        kind = "flagged" if corrupt else "silent" if differs else None
        if kind and kind not in found:
            found[kind] = (path, frames, corrupt)
        if len(found) == 3:
            return found
    pytest.fail(f"40 damaged files gave only {sorted(found)}")


def test_a_file_the_decoder_flags_is_refused_the_same_way_on_every_read(damaged):
    path, _, corrupt = damaged["flagged"]
    outcomes = set()
    for _ in range(30):
        video._index_cache.clear()  # decode the file afresh each time
        with pytest.raises(VideoDecodeError) as caught:
            read_frames(path, np.arange(NUM_FRAMES))
        assert str(caught.value).startswith(f"{path}: damaged: the decoder flags frame")
        assert caught.value.bad_frames == tuple(corrupt)
        outcomes.add(str(caught.value))
    assert len(outcomes) == 1
    with pytest.raises(VideoDecodeError, match="no frame of it is used"):
        count_frames(path)
    with pytest.raises(VideoDecodeError, match="damaged"):
        read_frames(path, [0])  # not even the frames before the first flagged one


def test_damage_the_decoder_cannot_see_still_reads_the_same_on_every_read(damaged):
    """Frame threads would conceal damage differently on each run: the verdict comes from
    one thread, and the frames read (threaded) equal a one-thread decode every time."""
    path, frames, _ = damaged["silent"]
    assert video._Decoder(av.open(str(path)), path).threaded  # reads do use threads here
    expected = np.stack(frames)
    for _ in range(30):
        video._index_cache.clear()
        np.testing.assert_array_equal(read_frames(path, np.arange(len(frames))), expected)


def test_check_data_fails_a_flagged_file_and_lists_its_bad_frames(damaged, tmp_path):
    path, _, corrupt = damaged["flagged"]
    entry = check_video(str(path), 0, random_frames=3, seed=0)
    assert not entry.ok and entry.bad_frames == corrupt and "corrupt" in entry.reason
    intact = check_video(str(damaged["intact"][0]), 0, random_frames=3, seed=0)
    assert intact.ok and intact.warning is None and intact.bad_frames is None
    paths = write_report(CheckReport([entry, intact]), tmp_path)
    assert ", ".join(map(str, corrupt)) in paths["markdown"].read_text()
    assert paths["quarantine"].read_text().splitlines()[-1] == str(path)
    assert json.loads(paths["json"].read_text())["videos"][0]["bad_frames"] == corrupt


def test_training_skips_a_flagged_file_by_name(damaged, tmp_path, capsys):
    root = ucf_tree(tmp_path / "tree")
    victim = root / "Left" / "v_Left_g01.mp4"
    victim.write_bytes(damaged["flagged"][0].read_bytes())
    config = tiny_config(tmp_path / "c.yaml", data={"root": str(root), "max_bad_fraction": 0.5})
    with pytest.warns(UserWarning, match=r"v_Left_g01.mp4: damaged: the decoder flags"):
        assert main(["finetune", "--config", str(config), "--out", str(tmp_path / "ft")]) == 0
    lines = (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in lines if '"kind": "epoch"' in line]
    assert [epoch["skipped_videos"] for epoch in epochs] == [1, 1]


def write_mkv(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """H.264 in Matroska: its header states the length, and a cut file still opens."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def cut_mkv(tmp_path_factory) -> Path:
    """60 frames stated (2.4 s at 25 fps), 36 of them in the file: cut at a packet boundary."""
    folder = tmp_path_factory.mktemp("cut")
    whole = write_mkv(folder / "whole.mkv", textured_clip())
    data = whole.read_bytes()
    low, high = 0, len(data)
    cut = folder / "cut.mkv"
    while low < high:  # the shortest prefix of the bytes that decodes to 36 frames
        middle = (low + high) // 2
        cut.write_bytes(data[:middle])
        video._index_cache.clear()
        try:
            decodable = count_frames(cut)
        except VideoDecodeError:
            decodable = 0
        low, high = (middle + 1, high) if decodable < 36 else (low, middle)
    cut.write_bytes(data[:low])
    assert count_frames(cut) == 36
    return cut


def test_check_data_judges_a_cut_relative_to_the_stated_length(cut_mkv):
    """36 of 60 frames: 0.96 s missing of 2.4 s, less than a second but 40% of the clip."""
    info = video.probe_video(cut_mkv)
    assert info.duration == pytest.approx(2.4, abs=0.05) and info.num_frames == 36
    entry = check_video(str(cut_mkv), 0, random_frames=3, seed=0, clip_frames=16)
    assert entry.ok and re.fullmatch(
        r"frames span 1\.4\d s but the file states 2\.40 s.*", entry.warning
    )
    needs_more = check_video(str(cut_mkv), 0, random_frames=3, seed=0, clip_frames=40)
    assert not needs_more.ok and "a clip spans 40" in needs_more.reason


def test_predict_warns_on_a_cut_file(cut_mkv, tmp_path, capsys):
    root = ucf_tree(tmp_path / "tree")
    config = tiny_config(tmp_path / "c.yaml", data={"root": str(root)}, train={"epochs": 1})
    assert main(["finetune", "--config", str(config), "--out", str(tmp_path / "ft")]) == 0
    checkpoint = tmp_path / "ft" / "checkpoints" / "last.safetensors"
    capsys.readouterr()
    assert main(["predict", str(cut_mkv), "--ckpt", str(checkpoint), "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: " in captured.err and "cut.mkv" in captured.err
    assert "cut short" in json.loads(captured.out)["warning"]
    intact = root / "Left" / "v_Left_g01.mp4"
    assert main(["predict", str(intact), "--ckpt", str(checkpoint)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_odd_headers_are_decode_errors_naming_the_file(tmp_path):
    """Metadata that is not UTF-8, or a codec FFmpeg has no decoder for: VideoDecodeError
    (training skips the video by name), not a Python error that stops the run."""
    intact = write_video(tmp_path / "intact.mp4", textured_clip()[:4, :32, :32])
    data = intact.read_bytes()
    latin = tmp_path / "latin.mp4"
    latin.write_bytes(data.replace(b"VideoHandler", b"Video\xe4andler"))
    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(data.replace(b"avc1", b"zzzz"))
    with pytest.raises(VideoDecodeError, match="latin.mp4: not a readable video"):
        count_frames(latin)
    with pytest.raises(VideoDecodeError, match="unknown.mp4: its video stream has no decoder"):
        count_frames(unknown)
    assert not check_video(str(unknown), 0, random_frames=1, seed=0).ok
