"""`advise check-data`'s engine: which videos fail and why, the report, the quarantine list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from advise.data import check
from advise.data.check import (
    CheckReport,
    VideoCheck,
    check_videos,
    drop_quarantined,
    read_quarantine,
    write_report,
)
from advise.data.formats import AnnotatedSplit, AnnotationError, VideoRecord
from advise.data.video import write_video


def noisy_frames(num_frames: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Noise makes the coded frames, not the headers, most of a file (so a cut hits frames)."""
    return np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    """Good videos and the bad files real collections hold, by role."""
    root = tmp_path_factory.mktemp("collection")
    good = write_video(root / "Walk" / "good.mp4", noisy_frames(12), keyframe_interval=4)
    phone = write_video(
        root / "Walk" / "phone.mp4", noisy_frames(6, seed=1)[:, :, :24], rotation=90
    )
    whole = write_video(root / "whole.mp4", noisy_frames(30, seed=2))
    truncated = root / "Run" / "truncated.mp4"
    truncated.parent.mkdir()
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # index is at the end
    empty = root / "Run" / "empty.mp4"
    empty.write_bytes(b"")
    text = root / "Run" / "notes.mp4"
    text.write_text("not a video, despite the name\n")
    whole_webm = write_video(root / "whole.webm", noisy_frames(60, seed=3))
    cut_webm = root / "Run" / "cut.webm"  # its first half still decodes
    cut_webm.write_bytes(whole_webm.read_bytes()[: whole_webm.stat().st_size // 2])
    return {
        "good": good,
        "phone": phone,
        "truncated": truncated,
        "empty": empty,
        "text": text,
        "cut_webm": cut_webm,
        "missing": root / "Run" / "missing.mp4",
    }


BAD = {"truncated", "empty", "text", "missing"}


@pytest.fixture(scope="module")
def records(tree) -> list[VideoRecord]:
    return [VideoRecord(path, label) for label, path in enumerate(tree.values())]


@pytest.fixture(scope="module")
def report(records) -> CheckReport:
    return check_videos(records, workers=0, progress=False)


def test_report_marks_exactly_the_bad_videos(tree, records, report):
    assert [entry.path for entry in report.videos] == [str(record.path) for record in records]
    by_role = dict(zip(tree, report.videos, strict=True))
    assert {role for role, entry in by_role.items() if not entry.ok} == BAD
    for role in BAD:
        entry = by_role[role]
        assert entry.reason and entry.num_frames is None
    assert "file not found" in by_role["missing"].reason
    assert "not a readable video" in by_role["text"].reason
    good = by_role["good"]
    assert good.ok and good.reason is None and good.warning is None
    assert (good.num_frames, good.width, good.height, good.rotation) == (12, 32, 32, 0)
    assert good.fps == pytest.approx(25) and good.duration == pytest.approx(12 / 25)
    assert good.has_audio is False
    phone = by_role["phone"]  # 24 wide x 32 high as coded, shown turned a quarter
    assert phone.ok and (phone.width, phone.height, phone.rotation) == (32, 24, 90)
    cut = by_role["cut_webm"]  # usable, but flagged
    assert cut.ok and 0 < cut.num_frames < 60 and "cut short" in cut.warning
    totals = report.totals()
    assert totals["videos"] == 7 and totals["ok"] == 3 and totals["failed"] == 4
    assert totals["warnings"] == 1 and totals["rotated"] == 1
    assert totals["frames"]["min"] == 6 and totals["frames"]["max"] == cut.num_frames


def test_workers_agree_with_in_process(records, report):
    parallel = check_videos(records, workers=2, progress=False)
    assert parallel.to_dict() == report.to_dict()


def test_written_report_and_quarantine(tree, report, tmp_path):
    paths = write_report(report, tmp_path / "check")
    data = json.loads(paths["json"].read_text())
    assert data["totals"]["failed"] == 4 and len(data["videos"]) == 7
    assert {entry["path"] for entry in data["videos"] if not entry["ok"]} == {
        str(tree[role]) for role in BAD
    }
    markdown = paths["markdown"].read_text()
    for role in BAD:
        assert str(tree[role]) in markdown
    assert "cut short" in markdown and "| 8-15 | 1 |" in markdown
    lines = paths["quarantine"].read_text().splitlines()
    assert lines[0].startswith("#")
    listed = [line for line in lines if not line.startswith("#")]
    assert sorted(listed) == sorted(os.path.abspath(tree[role]) for role in BAD)
    assert read_quarantine(paths["quarantine"]) == set(listed)


def test_drop_quarantined(tree, records, report, tmp_path):
    quarantine = write_report(report, tmp_path)["quarantine"]
    split = AnnotatedSplit(list(records), [str(label) for label in range(7)], "train.csv")
    split.origins = [("train.csv", line) for line in range(1, 8)]
    with pytest.warns(UserWarning, match="skipping 4 of 7 videos"):
        kept = drop_quarantined(split, quarantine)
    roles = list(tree)
    good = [position for position, role in enumerate(roles) if role not in BAD]
    assert [record.path for record in kept.records] == [tree[roles[i]] for i in good]
    assert kept.origins == [("train.csv", position + 1) for position in good]
    assert kept.class_names == split.class_names and kept.source == "train.csv"
    assert len(split.records) == 7  # the input is left alone
    everything = tmp_path / "all.txt"
    everything.write_text("".join(f"{record.path}\n" for record in records))
    with pytest.raises(AnnotationError, match="every video"):
        drop_quarantined(split, everything)
    with pytest.raises(FileNotFoundError):
        drop_quarantined(split, tmp_path / "no_such_list.txt")


def test_quarantine_entries_relative_to_the_list(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    listing = folder / "quarantine.txt"
    listing.write_text("# comment\n\nvideos/a.mp4\n  /abs/b.mp4  \n")
    assert read_quarantine(listing) == {str(folder / "videos" / "a.mp4"), "/abs/b.mp4"}


def test_duplicates_and_validation(tree):
    record = VideoRecord(tree["good"], 0)
    assert len(check_videos([record, record], workers=0, progress=False).videos) == 1
    with pytest.raises(ValueError, match="workers"):
        check_videos([record], workers=-1)
    with pytest.raises(ValueError, match="random_frames"):
        check_videos([record], workers=0, random_frames=-1)


def crash_on_poison(path: str, label: int, random_frames: int, seed: int) -> VideoCheck:
    """A check whose worker dies outright (as in a crash inside FFmpeg) on one file."""
    if "poison" in Path(path).name:
        os._exit(3)
    return VideoCheck(path, label, ok=True, num_frames=len(path))


def test_a_crashing_worker_fails_only_its_video():
    jobs = [
        (f"/videos/{name}.mp4", 0, 3, 0) for name in ["a", "b", "poison", "c", "d", "poison-2", "e"]
    ]
    results = check._run_checks(crash_on_poison, jobs, workers=2, progress=False)
    assert [entry.path for entry in results] == [job[0] for job in jobs]
    assert [entry.ok for entry in results] == [True, True, False, True, True, False, True]
    assert "crashed" in results[2].reason and "crashed" in results[5].reason


def test_a_quarantine_list_is_read_like_an_annotation_file(tmp_path):
    """UTF-16 with a byte-order mark is read; a Latin-1 byte is an AnnotationError at its line."""
    listing = tmp_path / "quarantine.txt"
    listing.write_text("# written on Windows\nvidéos/a.mp4\n", encoding="utf-16")
    assert read_quarantine(listing) == {str(tmp_path / "vidéos" / "a.mp4")}
    listing.write_bytes("# comment\nvidéos/a.mp4\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match=r"quarantine.txt:2: not UTF-8"):
        read_quarantine(listing)
