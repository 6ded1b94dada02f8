"""Check a collection's videos before training: which decode, which do not, and why.

`check_videos` opens every video the way training will (`advise.data.video`): it counts the
frames (one full decode) and reads the first, the last and a few random frames, in a pool of
worker processes. A video *fails* when training could not use it: the file is missing, is not a
video, has no decodable frame, a frame it claims does not decode, its stream is damaged (the
decoder flags frames as corrupt or fails on a packet: the report lists the bad frames, see
`advise.data.video`), or it is cut short below the frames one clip needs. A video cut short
that still holds a clip (decoding stops with an error before the end of the file, or its frames
span clearly less time than its header states) is *ok with a warning*: its decodable frames
are what training samples from.

`write_report` writes `check_report.json` (every video + totals), `check_report.md` (for a
person: totals, failures with reasons, warnings, frame counts) and `quarantine.txt` (the failed
videos, one path per line). Training skips what `quarantine.txt` lists: `drop_quarantined`.

Nothing a bad file does stops the check: errors become the video's reason, and a worker
process that dies in the decoder (a crash in FFmpeg) is replaced, the video it held being
marked failed (with `workers=0`, the check runs in this process and such a crash would end it).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from advise.data.formats import (
    AnnotatedSplit,
    AnnotationError,
    VideoRecord,
    read_annotation_text,
)
from advise.data.video import VideoDecodeError, VideoInfo, probe_video, read_frames
from advise.files import atomic_write

# A usable video's frames may span less time than its header states by this much before it is
# flagged (frames, and a fraction of the stated duration; both must be exceeded): containers
# round durations and count audio that outlasts the video a little.
_SHORTFALL_FRAMES = 2
_SHORTFALL_FRACTION = 0.1


@dataclass(frozen=True)
class VideoCheck:
    """The check of one video. Properties are None when the video failed before they were read.

    `reason` says why a video failed (None when `ok`); `warning` what looks damaged in a usable
    one; `bad_frames` the frames the decoder flags as corrupt (a damaged stream fails whole).
    Sizes are those of the frames as read (upright); `rotation` is the display rotation
    applied (degrees counter-clockwise); `fps`, `duration` (seconds) as the file states them.
    """

    path: str
    label: int
    ok: bool
    reason: str | None = None
    warning: str | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    has_audio: bool | None = None
    rotation: int | None = None
    bad_frames: list[int] | None = None


@dataclass
class CheckReport:
    """Every checked video, in the order of the records given to `check_videos`."""

    videos: list[VideoCheck]

    @property
    def failed(self) -> list[VideoCheck]:
        return [entry for entry in self.videos if not entry.ok]

    @property
    def warned(self) -> list[VideoCheck]:
        return [entry for entry in self.videos if entry.ok and entry.warning]

    def totals(self) -> dict[str, Any]:
        """Counts over all videos and a summary of the frame counts of the usable ones."""
        usable = [entry for entry in self.videos if entry.ok]
        counts = np.array([entry.num_frames for entry in usable], dtype=np.int64)
        return {
            "videos": len(self.videos),
            "ok": len(usable),
            "failed": len(self.failed),
            "warnings": len(self.warned),
            "with_audio": sum(bool(entry.has_audio) for entry in usable),
            "rotated": sum(bool(entry.rotation) for entry in usable),
            "frames": _frame_count_summary(counts),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"totals": self.totals(), "videos": [asdict(entry) for entry in self.videos]}


def _frame_count_summary(counts: np.ndarray) -> dict[str, Any]:
    """min / median / mean / max and a histogram over power-of-two bins [2^k, 2^(k+1))."""
    if counts.size == 0:
        return {"total": 0, "min": None, "median": None, "mean": None, "max": None, "bins": []}
    bins = []
    low = 1
    while low <= counts.max():
        high = 2 * low - 1
        number = int(((counts >= low) & (counts <= high)).sum())
        if number:
            bins.append({"from": low, "to": high, "videos": number})
        low *= 2
    return {
        "total": int(counts.sum()),
        "min": int(counts.min()),
        "median": float(np.median(counts)),
        "mean": round(float(counts.mean()), 2),
        "max": int(counts.max()),
        "bins": bins,
    }


def _reason(error: Exception, path: str) -> str:
    """The error's message without the leading "<path>: " the decoder's errors carry."""
    if isinstance(error, VideoDecodeError):
        message = str(error)
        prefix = f"{error.path}: "
        return message[len(prefix) :] if message.startswith(prefix) else message
    return f"{type(error).__name__}: {error}"


def cut_short(info: VideoInfo) -> str | None:
    """What says a usable video was cut short, or None: decoding stopped before the end of
    the file, or its frames span clearly less time than its header states (by more than
    `_SHORTFALL_FRAMES` frames and `_SHORTFALL_FRACTION` of the stated duration)."""
    if info.error is not None:
        return f"decoding stops after frame {info.num_frames - 1} ({info.error})"
    if info.duration is None or info.decoded_duration is None:
        return None
    shortfall = info.duration - info.decoded_duration
    frame_seconds = 1 / info.fps if info.fps else 0.0
    if shortfall > max(_SHORTFALL_FRAMES * frame_seconds, _SHORTFALL_FRACTION * info.duration):
        return (
            f"frames span {info.decoded_duration:.2f} s but the file states "
            f"{info.duration:.2f} s (cut short?)"
        )
    return None


def check_video(
    path: str, label: int, random_frames: int, seed: int, clip_frames: int = 1
) -> VideoCheck:
    """Count one video's frames and decode its first, last and `random_frames` random frames
    (from `np.random.default_rng([seed, CRC-32 of the path])`). A video cut short to fewer
    than `clip_frames` frames (the span of one clip) fails. Never raises."""
    try:
        info = probe_video(path)
    except Exception as error:  # noqa: BLE001 - any error of a bad file is its reason
        bad_frames = list(getattr(error, "bad_frames", ())) or None
        return VideoCheck(path, label, ok=False, reason=_reason(error, path), bad_frames=bad_frames)
    checked = VideoCheck(
        path,
        label,
        ok=True,
        num_frames=info.num_frames,
        width=info.width,
        height=info.height,
        fps=info.fps,
        duration=info.duration,
        has_audio=info.has_audio,
        rotation=info.rotation,
    )
    rng = np.random.default_rng([seed, _path_seed(path)])
    wanted = np.concatenate(
        [[0, info.num_frames - 1], rng.integers(0, info.num_frames, random_frames)]
    )
    try:
        frames = read_frames(path, wanted)
        if frames.shape[1:] != (info.height, info.width, 3):
            raise VideoDecodeError(
                path, f"frames are {frames.shape[1:]}, expected {(info.height, info.width, 3)}"
            )
    except Exception as error:  # noqa: BLE001
        return replace(checked, ok=False, reason=_reason(error, path))
    warning = cut_short(info)
    if warning is not None and info.num_frames < clip_frames:
        return replace(
            checked,
            ok=False,
            reason=f"cut short: {warning}; {info.num_frames} frames, a clip spans {clip_frames}",
        )
    return replace(checked, warning=warning)


def _path_seed(path: str) -> int:
    """A stable number from a path (the same in every process, unlike `hash`)."""
    return zlib.crc32(path.encode("utf-8", "surrogateescape"))


def _crashed(job: tuple[str, int, int, int, int]) -> VideoCheck:
    path, label = job[0], job[1]
    return VideoCheck(path, label, ok=False, reason="decoding crashed the worker process")


class _Progress:
    """tqdm on a terminal; otherwise a plain line every tenth of the videos (or none)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.terminal = enabled and sys.stderr.isatty()
        self.lines = enabled and not self.terminal
        self.bar = None
        if self.terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="checking videos", unit="video")

    def update(self, entry: VideoCheck) -> None:
        self.done += 1
        self.failed += not entry.ok
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(failed=self.failed, refresh=False)
        elif self.lines and (self.done % max(1, self.total // 10) == 0 or self.done == self.total):
            print(
                f"checked {self.done}/{self.total} videos, {self.failed} failed",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _pool_round(
    function: Callable[..., VideoCheck],
    jobs: Sequence[tuple],
    positions: Sequence[int],
    workers: int,
    results: list[VideoCheck | None],
    progress: _Progress,
) -> list[int]:
    """Run `jobs[positions]` in a fresh pool; the positions lost to a dead worker, sorted."""
    lost = []
    # spawn, not fork: the caller may hold threads (torch, tqdm) that a fork would copy mid-lock.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as executor:
        futures = {executor.submit(function, *jobs[position]): position for position in positions}
        for future in as_completed(futures):
            position = futures[future]
            try:
                results[position] = future.result()
            except BrokenProcessPool:
                lost.append(position)
                continue
            except Exception as error:  # noqa: BLE001 - e.g. a result that would not pickle
                path, label = jobs[position][:2]
                results[position] = VideoCheck(path, label, ok=False, reason=_reason(error, path))
            progress.update(results[position])
    return sorted(lost)


def _worker_started() -> bool:
    return True


def _check_workers_start() -> None:
    """Raise when worker processes die whatever they run, so no video is blamed for it."""
    try:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as executor:
            executor.submit(_worker_started).result()
    except BrokenProcessPool:
        raise RuntimeError(
            "video check worker processes die on start (run with workers=0 to see why; a "
            "script calling check_videos needs an `if __name__ == '__main__':` guard)"
        ) from None


def _run_checks(
    function: Callable[..., VideoCheck], jobs: Sequence[tuple], workers: int, progress: bool
) -> list[VideoCheck]:
    """`function(*job)` for every job, in `workers` processes (0: here); results in job order.

    When a worker dies, the pool is lost with the jobs it still held. Unless workers die
    whatever they run (then this raises RuntimeError: no video is to blame), one of the jobs
    did it. Jobs go to workers in order, so the culprit is among the first 2 * workers + 1
    unfinished ones (those running or queued); they are rerun one at a time in a one-worker
    pool, where the first one lost is the culprit (marked failed), and the other jobs go on in
    a fresh pool.
    """
    results: list[VideoCheck | None] = [None] * len(jobs)
    bar = _Progress(len(jobs), progress)
    try:
        if workers == 0:
            for position, job in enumerate(jobs):
                results[position] = function(*job)
                bar.update(results[position])
            return results  # type: ignore[return-value]
        queue = list(range(len(jobs)))
        while queue:
            unfinished = _pool_round(function, jobs, queue, workers, results, bar)
            if unfinished:
                _check_workers_start()
            suspects, queue = unfinished[: 2 * workers + 1], unfinished[2 * workers + 1 :]
            while suspects:
                left = _pool_round(function, jobs, suspects, 1, results, bar)
                if not left:
                    break
                results[left[0]] = _crashed(jobs[left[0]])
                bar.update(results[left[0]])
                suspects = left[1:]
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def check_videos(
    records: Sequence[VideoRecord],
    workers: int,
    random_frames: int = 3,
    seed: int = 0,
    progress: bool = True,
    clip_frames: int = 1,
) -> CheckReport:
    """Check that every video decodes as training will read it.

    Args:
        records: the videos (a path listed twice is checked once, with its first label).
        workers: worker processes decoding in parallel; 0 checks in this process.
        random_frames: frames read at random positions, besides the first and the last.
        seed: the random frames of a video depend only on `seed` and its path, so any
            `workers` gives the same report.
        progress: show a tqdm bar on a terminal (plain progress lines otherwise).
        clip_frames: the frames one clip spans; a video cut short to fewer fails.

    Returns:
        A `CheckReport`, one `VideoCheck` per distinct path in the order of `records`.
        Never raises for a bad video: its check says why it failed.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if random_frames < 0:
        raise ValueError(f"random_frames must be >= 0, got {random_frames}")
    jobs, seen = [], set()
    for record in records:
        path = str(record.path)
        if path not in seen:
            seen.add(path)
            jobs.append((path, int(record.label), random_frames, seed, clip_frames))
    return CheckReport(_run_checks(check_video, jobs, workers, progress))


def write_report(report: CheckReport, out_dir: str | Path) -> dict[str, Path]:
    """Write check_report.json, check_report.md and quarantine.txt into `out_dir`.

    quarantine.txt lists the failed videos' absolute paths, one per line, under a `#` header;
    `data.quarantine` (or `drop_quarantined`) makes training skip them. Returns the paths
    written, by kind ("json", "markdown", "quarantine").
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "check_report.json",
        "markdown": out / "check_report.md",
        "quarantine": out / "quarantine.txt",
    }
    atomic_write(paths["json"], json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write(paths["markdown"], _markdown(report))
    failed = report.failed
    header = (
        f"# Videos that failed `advise check-data`: {len(failed)} of {len(report.videos)}.\n"
        "# One path per line; training skips them when data.quarantine names this file.\n"
        "# Lines starting with # are comments; relative paths are relative to this folder.\n"
    )
    lines = [os.path.abspath(entry.path) + "\n" for entry in failed]
    atomic_write(paths["quarantine"], header + "".join(lines))
    return paths


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(report: CheckReport) -> str:
    totals = report.totals()
    frames = totals["frames"]
    lines = [
        "# Video check",
        "",
        "| videos | ok | failed | ok with warnings | with audio | rotated |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {totals['videos']} | {totals['ok']} | {totals['failed']} | {totals['warnings']} "
        f"| {totals['with_audio']} | {totals['rotated']} |",
        "",
        f"## Failed ({totals['failed']}, listed in quarantine.txt)",
        "",
    ]
    if report.failed:
        lines += ["| video | reason | frames flagged corrupt |", "| --- | --- | --- |"]
        lines += [
            f"| {_cell(entry.path)} | {_cell(entry.reason or '')} "
            f"| {', '.join(map(str, entry.bad_frames or []))} |"
            for entry in report.failed
        ]
    else:
        lines.append("None.")
    lines += ["", f"## Usable but damaged ({totals['warnings']})", ""]
    if report.warned:
        lines += ["| video | frames | warning |", "| --- | ---: | --- |"]
        lines += [
            f"| {_cell(entry.path)} | {entry.num_frames} | {_cell(entry.warning or '')} |"
            for entry in report.warned
        ]
    else:
        lines.append("None.")
    lines += ["", "## Frame counts of the usable videos", ""]
    if frames["bins"]:
        lines.append(
            f"min {frames['min']}, median {frames['median']:g}, mean {frames['mean']:g}, "
            f"max {frames['max']}; {frames['total']} frames in all. A video shorter than a clip "
            "is played in a loop."
        )
        lines += ["", "| frames | videos |", "| --- | ---: |"]
        lines += [f"| {bin['from']}-{bin['to']} | {bin['videos']} |" for bin in frames["bins"]]
    else:
        lines.append("No usable video.")
    return "\n".join(lines) + "\n"


def read_quarantine(path: str | Path) -> set[str]:
    """The absolute paths a quarantine list names (blank lines and `#` comments skipped).

    Relative entries are taken relative to the list's own folder. Read like an annotation
    file (UTF-8, or UTF-16 with a byte-order mark; else `AnnotationError` at the line).
    Raises FileNotFoundError when the list does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "quarantine list not found", str(path))
    folder = path.parent
    entries = set()
    for line in read_annotation_text(path).splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            entries.add(os.path.abspath(folder / entry))  # an absolute entry stays as it is
    return entries


def drop_quarantined(split: AnnotatedSplit, path: str | Path) -> AnnotatedSplit:
    """`split` without the videos the quarantine list at `path` names; warns how many went.

    Videos are matched by absolute path (every record of a quarantined file goes); the rest of
    the split (class names, source, each kept record's origin) is kept. Raises
    `AnnotationError` when every video of the split is quarantined, and FileNotFoundError when
    the list does not exist.
    """
    quarantined = read_quarantine(path)
    kept = [
        position
        for position, record in enumerate(split.records)
        if os.path.abspath(record.path) not in quarantined
    ]
    dropped = len(split.records) - len(kept)
    if not kept:
        raise AnnotationError(path, 0, f"every video of {split.source} is quarantined")
    if dropped:
        warnings.warn(
            f"{split.source}: skipping {dropped} of {len(split.records)} videos "
            f"quarantined in {path}",
            stacklevel=2,
        )
    changes: dict[str, Any] = {"records": [split.records[position] for position in kept]}
    origins = getattr(split, "origins", None)  # (file, line) per record, when the reader kept them
    if origins and len(origins) == len(split.records):
        changes["origins"] = [origins[position] for position in kept]
    return replace(split, **changes)
