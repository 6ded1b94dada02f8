"""Annotation readers: lists of (video file, class label, frame range) from dataset split files.

One reader per `data.format`; the `FORMATS` table at the end says how each is read (which
annotation files it needs, its official splits, the files that define its labels), and
`advise.data.loaders.read_split` reads the table:

    ucf101    read_ucf101           classInd.txt + trainlist0N.txt / testlist0N.txt
    hmdb51    read_hmdb51           <class>_test_splitN.txt, markers 1 = train, 2 = test
    diving48  read_diving48         Diving48_V2_{train,test}.json (+ Diving48_vocab.json)
    ssv2      read_ssv2             labels.json + train.json / validation.json
    k400      read_kinetics         Kinetics CSV: label,youtube_id,time_start,time_end,split
    csv       read_csv_annotations  path,label rows
    folders   read_folders          no annotation files: <root>/<class>/<video>, split by a seed
                                    and a fraction, or <root>/train/<class>/, <root>/test/<class>/

Readers check everything they can at read time (start-up): a line that names a missing video,
an unknown class or is malformed raises `AnnotationError` whose message is
"<file>:<line>: <problem>", so a bad annotation never surfaces hours into a run. Kinetics is the
one exception for missing videos: every copy of it lacks some clips (deleted from YouTube), so
they are left out, listed in `AnnotatedSplit.missing` and reported in one `MissingVideosWarning`.
Video files may be .mp4, .avi or .webm (any container FFmpeg reads); the name listed is used as
is. Labels are 0-based class indices; `AnnotatedSplit.class_names[label]` names the class.

Files or folders a format needs that are not there raise `LayoutError` (an `AnnotationError`);
`read_format`, the one way to read a format by name, adds to its message what that format needs
(`FormatSpec.layout`), the formats there are, and `data.format=folders` when the root holds class
folders of videos.

Every annotation file is read through `read_annotation_text`: UTF-8 with or without a
byte-order mark, or UTF-16 with one; any other byte is an `AnnotationError` at its line.
The train split's classes are the model's: `on_train_classes` puts a test split on them and
refuses a test line whose class the train split lacks (HMDB51, whose train and test lists are
one file per class, refuses a class with test videos and no train video when it is read).

`check_files=False` (every reader) parses and validates the annotations without looking at the
videos: `read_split` uses it to read the other subset of a split cheaply for `check_disjoint`.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Official split sizes, (train, test) videos per split; every UCF101 split covers all 13,320.
UCF101_SPLIT_SIZES = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}
UCF101_NUM_CLASSES = 101
# HMDB51: 70 train and 30 test videos in each of the 51 classes, in every split.
HMDB51_SPLIT_SIZES = {split: (3570, 1530) for split in (1, 2, 3)}
HMDB51_NUM_CLASSES = 51
HMDB51_MARKERS = {"1": "train", "2": "test", "0": "unused"}
SSV2_LABEL_FILES = ("something-something-v2-labels.json", "labels.json")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
KINETICS_SUFFIXES = (".mp4", ".mkv", ".webm")
# What `folders` counts as a video (the suffix in any case); other files are ignored.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video: `path` to the file, `label` the 0-based class index.

    `start_frame` and `end_frame` restrict it to the frames [start_frame, end_frame): 0-based
    decoder frame numbers (`advise.data.video`), start inclusive, end EXCLUSIVE (Python slice
    convention); `end_frame=None` runs to the last frame. An end past the file's last frame is
    clamped to it (`frame_range`), so an approximate annotated end is harmless.
    """

    path: Path
    label: int
    start_frame: int = 0
    end_frame: int | None = None

    def __post_init__(self) -> None:
        if self.start_frame < 0:
            raise ValueError(f"start_frame must be >= 0, got {self.start_frame}")
        if self.end_frame is not None and self.end_frame <= self.start_frame:
            raise ValueError(
                f"end_frame (exclusive) must be > start_frame, got "
                f"[{self.start_frame}, {self.end_frame})"
            )

    def frame_range(self, num_video_frames: int) -> tuple[int, int]:
        """[start, stop) within a file of `num_video_frames` frames, the end clamped to it.

        Empty (start == stop) when the range starts at or after the file's last frame.
        """
        stop = num_video_frames if self.end_frame is None else min(self.end_frame, num_video_frames)
        return min(self.start_frame, stop), stop


@dataclass(frozen=True)
class SplitCounts:
    """How many videos a split holds: in all, per class (name -> videos) and missing on disk."""

    videos: int
    classes: int
    per_class: dict[str, int]
    missing: int


@dataclass
class AnnotatedSplit:
    """The videos of one split, the class names (index = label) and where they were read.

    `source` names the annotation file (or, for HMDB51, the pattern of its files); `origins`
    gives each record's (annotation file, 1-based line), in record order; `missing` lists
    (line, expected path) of listed videos that are not on disk and were left out (Kinetics).
    `class_lines` gives the line of `source` that first names each class, where a class may
    label no record (Kinetics: its clips not on disk are left out); empty otherwise.
    """

    records: list[VideoRecord]
    class_names: list[str]
    source: str
    origins: list[tuple[str, int]] = field(default_factory=list)
    missing: list[tuple[int, Path]] = field(default_factory=list)
    class_lines: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def origin(self, index: int) -> tuple[str, int]:
        """(annotation file, 1-based line) of record `index`; (source, 0) when not known."""
        return self.origins[index] if index < len(self.origins) else (self.source, 0)

    def counts(self) -> SplitCounts:
        per_class = dict.fromkeys(self.class_names, 0)
        for record in self.records:
            per_class[self.class_names[record.label]] += 1
        return SplitCounts(len(self.records), len(self.class_names), per_class, len(self.missing))

    def summary(self) -> str:
        """One line for logs, e.g. "9537 videos, 101 classes (70-121 per class) from <file>"."""
        counts = self.counts()
        sizes = list(counts.per_class.values())
        text = _plural(counts.videos, "video", "videos")
        text += ", " + _plural(counts.classes, "class", "classes")
        if sizes:
            text += f" ({min(sizes)}-{max(sizes)} per class"
            empty = sizes.count(0)
            text += f"; {empty} without videos)" if empty else ")"
        if counts.missing:
            listed = counts.videos + counts.missing
            text += f", {counts.missing} of {listed} listed videos missing on disk (left out)"
        return f"{text} from {self.source}"


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


class AnnotationError(ValueError):
    """An annotation file is wrong; the message is "<file>:<line>: <problem>".

    `line` is 1-based; 0 when the problem concerns the whole file (e.g. it is missing).
    """

    def __init__(self, file: str | Path, line: int, problem: str) -> None:
        self.file = str(file)
        self.line = line
        self.problem = problem
        super().__init__(f"{file}:{line}: {problem}")


class LayoutError(AnnotationError):
    """Files or folders the format reads are not there: an annotation file, HMDB51's split
    files, class folders. `read_format` adds what the format needs and the other formats."""


class SplitSizeWarning(UserWarning):
    """A split of an official dataset does not hold its official number of videos."""


class MissingVideosWarning(UserWarning):
    """Videos listed in an annotation file are not on disk and were left out (Kinetics)."""


def check_disjoint(
    train: AnnotatedSplit,
    test: AnnotatedSplit,
    key: Callable[[VideoRecord], object] | None = None,
) -> None:
    """Raise `AnnotationError` when a video is in both `train` and `test`.

    Videos are compared by `key(record)`, by default the normalised path (no file is touched).
    The error is located at the test list's line and names the train list's line too.
    """
    if key is None:
        key = _path_key
    train_index = {key(record): index for index, record in enumerate(train.records)}
    for index, record in enumerate(test.records):
        match = train_index.get(key(record))
        if match is not None:
            test_file, test_line = test.origin(index)
            train_file, train_line = train.origin(match)
            raise AnnotationError(
                test_file,
                test_line,
                f"video {record.path} is in the test list and in the train list "
                f"({train_file}:{train_line}); a split's train and test videos must not overlap",
            )


def on_train_classes(train: AnnotatedSplit, test: AnnotatedSplit) -> AnnotatedSplit:
    """`test` relabelled over the classes of `train`; `AnnotationError` for a class it lacks.

    The train split's class list is the model's: a test list can never add a class to it or
    renumber it (a test-only class "aaa" sorted first would shift every train label by one).
    A test label is matched to the train class of the same name. The train classes are those
    of the class file where the format has one, else the names the train file uses, or for
    class numbers 0 to the largest train number. A test line whose class is not among them
    raises the error at that line (the first such line). Test classes no line uses are dropped.
    """
    if test.class_names == train.class_names:
        return test
    train_label = {name: label for label, name in enumerate(train.class_names)}
    unknown: dict[str, tuple[str, int]] = {}  # test class train lacks -> where first named
    for index, record in enumerate(test.records):
        name = test.class_names[record.label]
        if name not in train_label and name not in unknown:
            unknown[name] = test.origin(index)
    for name, line in test.class_lines.items():
        if name not in train_label and (name not in unknown or line < unknown[name][1]):
            unknown[name] = (test.source, line)
    if unknown:
        name, (file, line) = min(unknown.items(), key=lambda item: item[1][1])
        raise AnnotationError(
            file,
            line,
            f"class {name!r} is not a class of the train list {train.source} "
            f"({_class_range(train.class_names)}): a test label must be a train class",
        )
    records = [
        dataclasses.replace(record, label=train_label[test.class_names[record.label]])
        for record in test.records
    ]
    class_lines = {name: line for name, line in test.class_lines.items() if name in train_label}
    return dataclasses.replace(
        test, records=records, class_names=list(train.class_names), class_lines=class_lines
    )


def _class_range(class_names: list[str]) -> str:
    """The classes as an error message shows them: "classes 0..4" or the first few names."""
    if class_names == [str(number) for number in range(len(class_names))]:
        return f"classes 0..{len(class_names) - 1}"
    shown = ", ".join(repr(name) for name in class_names[:4])
    more = f", ... ({len(class_names)} classes)" if len(class_names) > 4 else ""
    return f"classes {shown}{more}"


def _path_key(record: VideoRecord) -> str:
    return os.path.normpath(record.path)


def _check_subset_and_split(subset: str, split: int) -> None:
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {split!r}")


def _warn_size(
    dataset: str, source: str | Path, split: int, subset: str, count: int, official: int
) -> None:
    if count != official:
        warnings.warn(
            f"{source}: {count} {subset} videos, but the official {dataset} split {split} has "
            f"{official}: a partial or modified copy gives results not comparable to published "
            "ones",
            SplitSizeWarning,
            stacklevel=3,
        )


# Byte-order marks read_annotation_text accepts, and the codec each one announces.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)
_SAVE_AS_UTF8 = "save the file as UTF-8 (UTF-16 is read too, with a byte-order mark)"


def read_annotation_text(path: str | Path) -> str:
    """The text of an annotation file (split list, class index, vocabulary, labels, CSV, JSON,
    quarantine list): every annotation read goes through here.

    Accepts UTF-8 with or without a byte-order mark, and UTF-16 (little- or big-endian) with
    one; the mark is not part of the text. Anything else (Latin-1 or Windows-1252 bytes,
    UTF-16 without a mark, a NUL character) raises `AnnotationError` at the 1-based line of
    the first bad byte, naming its byte offset (0-based, from the start of the file), so the
    user knows where to look and that re-saving as UTF-8 fixes it. A missing file raises
    `LayoutError` (an `AnnotationError`) at line 0.
    """
    path = Path(path)
    if not path.is_file():
        raise LayoutError(path, 0, "annotation file not found")
    data = path.read_bytes()
    mark, codec, name = b"", "utf-8", "UTF-8"
    for candidate, candidate_codec, candidate_name in _BYTE_ORDER_MARKS:
        if data.startswith(candidate):
            mark, codec, name = candidate, candidate_codec, candidate_name
            break
    body = data[len(mark) :]
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as error:
        line = _line_of(body[: error.start].decode(codec, errors="replace"))
        offset = len(mark) + error.start
        raise AnnotationError(
            path,
            line,
            f"not {name} text: byte 0x{body[error.start]:02x} at byte offset {offset} cannot be "
            f"decoded; {_SAVE_AS_UTF8}",
        ) from None
    if "\0" in text:  # UTF-16 without a mark decodes as UTF-8 with a NUL after each ASCII byte
        position = text.index("\0")
        offset = len(mark) + len(text[:position].encode(codec))
        raise AnnotationError(
            path,
            _line_of(text[:position]),
            f"NUL character at byte offset {offset} (UTF-16 without a byte-order mark?); "
            f"{_SAVE_AS_UTF8}",
        )
    return text


def _line_of(prefix: str) -> int:
    """The 1-based line, as `str.splitlines` counts lines, of the character after `prefix`."""
    return len((prefix + "x").splitlines())


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines of a text file."""
    lines = [
        (number, line.strip())
        for number, line in enumerate(read_annotation_text(path).splitlines(), 1)
    ]
    return [(number, line) for number, line in lines if line]


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _read_json_list(path: Path, what: str) -> list[tuple[int, Any]]:
    """(1-based line where it starts, value) of each item of a JSON file holding one list.

    Decodes item by item so every item's line is known; a syntax error names its line.
    """
    text = read_annotation_text(path)
    decoder = json.JSONDecoder()
    position = _JSON_SPACE.match(text, 0).end()
    if not text.startswith("[", position):
        raise AnnotationError(path, _line_at(text, position), f"expected a JSON list of {what}")
    position = _JSON_SPACE.match(text, position + 1).end()
    items: list[tuple[int, Any]] = []
    line, counted = 1, 0
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise AnnotationError(path, error.lineno, f"not valid JSON: {error.msg}") from None
            line += text.count("\n", counted, position)
            counted = position
            items.append((line, value))
            position = _JSON_SPACE.match(text, end).end()
            if text.startswith(",", position):
                position = _JSON_SPACE.match(text, position + 1).end()
            elif text.startswith("]", position):
                position += 1
                break
            else:
                raise AnnotationError(
                    path, _line_at(text, position), "not valid JSON: expected ',' or ']'"
                )
    position = _JSON_SPACE.match(text, position).end()
    if position != len(text):
        raise AnnotationError(path, _line_at(text, position), "not valid JSON: extra data")
    return items


def _read_csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, stripped cells) of the non-blank rows of a CSV file."""
    reader = csv.reader(read_annotation_text(path).splitlines())
    rows = []
    try:
        for row in reader:
            rows.append((reader.line_num, [cell.strip() for cell in row]))
    except csv.Error as error:  # e.g. a field over csv.field_size_limit() (128 KiB)
        raise AnnotationError(path, reader.line_num, f"not a CSV row ({error})") from None
    return [(number, cells) for number, cells in rows if any(cells)]


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _read_class_index(path: Path) -> list[str]:
    """UCF101 classInd.txt: lines "<k> <ClassName>" with k = 1, 2, ... in order."""
    class_names: list[str] = []
    for number, line in _read_lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise AnnotationError(path, number, f"expected '<index> <ClassName>', got {line!r}")
        expected = len(class_names) + 1
        if int(fields[0]) != expected:
            raise AnnotationError(
                path,
                number,
                f"class index {fields[0]} out of order: indices are 1-based and consecutive, "
                f"expected {expected}",
            )
        if fields[1] in class_names:
            raise AnnotationError(path, number, f"class {fields[1]!r} listed twice")
        class_names.append(fields[1])
    if not class_names:
        raise AnnotationError(path, 0, "no classes listed")
    return class_names


def _find_annotation_dir(root: Path) -> Path:
    for candidate in (root, root / "ucfTrainTestlist"):
        if (candidate / "classInd.txt").is_file():
            return candidate
    return root


def read_ucf101(
    root: str | Path,
    split: int = 1,
    subset: str = "train",
    annotation_dir: str | Path | None = None,
    check_files: bool = True,
) -> AnnotatedSplit:
    """Read a UCF101-style split (also the layout `advise synth` writes).

    Layout: videos `<root>/<ClassName>/<video file>`; in `annotation_dir` (default: `root`, or
    `root/ucfTrainTestlist` when classInd.txt is there) `classInd.txt` (lines
    "1 ApplyEyeMakeup": 1-based, consecutive), `trainlist0<split>.txt` (lines
    "ClassName/video.avi 1": path relative to root, 1-based class number) and
    `testlist0<split>.txt` (lines "ClassName/video.avi"; the folder gives the class).

    Returns an `AnnotatedSplit` with 0-based labels (classInd index - 1) in file order. With
    the official 101 classes, a list whose length differs from the official split (train/test
    9537/3783, 9586/3734, 9624/3696 for splits 1/2/3) gives a `SplitSizeWarning`.
    Raises `AnnotationError` ("<file>:<line>: <problem>") for a missing annotation file, a
    malformed line, an unknown class or class number, a label that disagrees with the class
    folder, or a listed video that does not exist under `root` (checked when `check_files`).
    """
    _check_subset_and_split(subset, split)
    root = Path(root)
    annotations = Path(annotation_dir) if annotation_dir is not None else _find_annotation_dir(root)
    class_names = _read_class_index(annotations / "classInd.txt")
    label_of_class = {name: label for label, name in enumerate(class_names)}
    list_path = annotations / f"{subset}list0{split}.txt"
    records, origins = [], []
    for number, line in _read_lines(list_path):
        fields = line.split()
        expected_fields = 2 if subset == "train" else 1
        if len(fields) != expected_fields or "/" not in fields[0]:
            example = "'ClassName/video.avi 1'" if subset == "train" else "'ClassName/video.avi'"
            raise AnnotationError(list_path, number, f"expected {example}, got {line!r}")
        relative_path = fields[0]
        class_name = relative_path.split("/")[0]
        if class_name not in label_of_class:
            raise AnnotationError(
                list_path, number, f"unknown class {class_name!r} (not in classInd.txt)"
            )
        label = label_of_class[class_name]
        if subset == "train":
            if not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(class_names):
                raise AnnotationError(
                    list_path,
                    number,
                    f"unknown class number {fields[1]!r} (classInd.txt has 1..{len(class_names)})",
                )
            if int(fields[1]) - 1 != label:
                raise AnnotationError(
                    list_path,
                    number,
                    f"class number {fields[1]} is {class_names[int(fields[1]) - 1]!r} but the "
                    f"video is in folder {class_name!r}",
                )
        video_path = root / relative_path
        if check_files and not video_path.is_file():
            raise AnnotationError(list_path, number, f"video not found: {video_path}")
        records.append(VideoRecord(video_path, label))
        origins.append((str(list_path), number))
    if not records:
        raise AnnotationError(list_path, 0, "no videos listed")
    if len(class_names) == UCF101_NUM_CLASSES:
        official = UCF101_SPLIT_SIZES[split][0 if subset == "train" else 1]
        _warn_size("UCF101", list_path, split, subset, len(records), official)
    return AnnotatedSplit(records, class_names, str(list_path), origins)


def _find_hmdb51_annotation_dir(root: Path) -> Path:
    official = root / "testTrainMulti_7030_splits"
    return official if official.is_dir() else root


def read_hmdb51(
    root: str | Path,
    split: int = 1,
    subset: str = "train",
    annotation_dir: str | Path | None = None,
    check_files: bool = True,
) -> AnnotatedSplit:
    """Read an HMDB51 split.

    Layout: videos `<root>/<class>/<video file>` (the official .avi files, e.g.
    `brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi`); in `annotation_dir` (default:
    `root/testTrainMulti_7030_splits` when that folder exists, else `root`) one file
    `<class>_test_split<split>.txt` per class, lines "<video file name> <marker>" with marker
    1 = train, 2 = test, 0 = unused in this split.

    Classes are the class names of the split's files, sorted; label = position. Records come
    class by class in file order. With 51 classes, a subset whose size differs from the
    official 3570 train / 1530 test (70 / 30 per class) gives a `SplitSizeWarning`.
    Raises `AnnotationError` for no split files, a malformed line, a marker other than 0/1/2,
    a class with test videos but no train video in the split (at its first test line: it
    would add a class the model is not trained on and renumber the classes after it), or a
    listed video of the subset that does not exist (checked when `check_files`).
    """
    _check_subset_and_split(subset, split)
    root = Path(root)
    annotations = (
        Path(annotation_dir) if annotation_dir is not None else _find_hmdb51_annotation_dir(root)
    )
    suffix = f"_test_split{split}.txt"
    pattern = annotations / f"*{suffix}"
    files = {
        path.name[: -len(suffix)]: path
        for path in annotations.glob(f"*{suffix}")
        if path.is_file() and len(path.name) > len(suffix)
    }
    if not files:
        raise LayoutError(pattern, 0, f"no HMDB51 split files <class>{suffix} found")
    class_names = sorted(files)
    records, origins = [], []
    for label, class_name in enumerate(class_names):
        list_path = files[class_name]
        first_test_line, has_train = 0, False
        for number, line in _read_lines(list_path):
            fields = line.split()
            if len(fields) != 2:
                raise AnnotationError(
                    list_path, number, f"expected '<video file name> <marker>', got {line!r}"
                )
            name, marker = fields
            if marker not in HMDB51_MARKERS:
                raise AnnotationError(
                    list_path,
                    number,
                    f"marker must be 1 (train), 2 (test) or 0 (unused), got {marker!r}",
                )
            has_train = has_train or marker == "1"
            first_test_line = first_test_line or (number if marker == "2" else 0)
            if HMDB51_MARKERS[marker] != subset:
                continue
            video_path = root / class_name / name
            if check_files and not video_path.is_file():
                raise AnnotationError(list_path, number, f"video not found: {video_path}")
            records.append(VideoRecord(video_path, label))
            origins.append((str(list_path), number))
        if first_test_line and not has_train:  # a test-only class would renumber train labels
            raise AnnotationError(
                list_path,
                first_test_line,
                f"class {class_name!r} has test videos (marker 2) but no train video (marker 1) "
                f"in split {split}: a test label must be a train class",
            )
    if not records:
        raise AnnotationError(pattern, 0, f"no {subset} videos listed")
    if len(class_names) == HMDB51_NUM_CLASSES:
        official = HMDB51_SPLIT_SIZES[split][0 if subset == "train" else 1]
        _warn_size("HMDB51", pattern, split, subset, len(records), official)
    return AnnotatedSplit(records, class_names, str(pattern), origins)


class _BadEntry(Exception):
    """An item of a JSON list is wrong; the reader adds the file, line and index."""


def _is_count(value: Any) -> bool:
    """A JSON integer >= 0 (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_diving48_vocab(path: Path) -> list[str]:
    class_names = []
    for index, (line, entry) in enumerate(_read_json_list(path, "class attribute lists")):
        if not (isinstance(entry, list) and entry and all(isinstance(x, str) for x in entry)):
            raise AnnotationError(
                path, line, f"entry [{index}]: expected a list of attribute strings, got {entry!r}"
            )
        class_names.append("/".join(entry))
    if not class_names:
        raise AnnotationError(path, 0, "no classes listed")
    return class_names


def _diving48_entry(entry: Any, num_classes: int | None) -> tuple[str, int, int, int | None]:
    """(vid_name, label, start frame, exclusive stop frame or None) of one Diving48 entry."""
    if not isinstance(entry, dict):
        raise _BadEntry(f"expected an object with vid_name and label, got {entry!r}")
    name, label = entry.get("vid_name"), entry.get("label")
    if not isinstance(name, str) or not name:
        raise _BadEntry(f"'vid_name' must be a non-empty string, got {name!r}")
    if not _is_count(label):
        raise _BadEntry(f"'label' must be an integer >= 0, got {label!r}")
    if num_classes is not None and label >= num_classes:
        raise _BadEntry(f"label {label} is not a class (the vocabulary has 0..{num_classes - 1})")
    start, end = entry.get("start_frame", 0), entry.get("end_frame")
    if not _is_count(start) or not (end is None or _is_count(end)):
        raise _BadEntry(
            f"'start_frame' and 'end_frame' must be integers >= 0, got {start!r}, {end!r}"
        )
    if end is not None and end < start:
        raise _BadEntry(f"end_frame {end} is before start_frame {start}")
    return name, label, start, None if end is None else end + 1  # inclusive end -> stop


def read_diving48(
    root: str | Path,
    annotation_file: str | Path,
    vocab_file: str | Path | None = None,
    check_files: bool = True,
) -> AnnotatedSplit:
    """Read a Diving48 (V2) split.

    Layout: videos `<root>/<vid_name>.mp4`; `annotation_file` (Diving48_V2_train.json or
    Diving48_V2_test.json) is a JSON list of {"vid_name": str, "label": int (0-based),
    "start_frame": int, "end_frame": int}; start_frame and end_frame are optional (default:
    the whole video) and 0-based, end_frame the LAST frame (inclusive). The record's range is
    [start_frame, end_frame + 1), clamped to the file's frames when sampled.

    Class names: from `vocab_file` (default: `Diving48_vocab.json` beside `annotation_file`,
    when present), a JSON list with one list of attribute strings per class (e.g.
    ["Back", "15som", "05Twis", "FREE"]), joined with "/" ("Back/15som/05Twis/FREE"); without
    it "0", "1", ... up to the largest label in the file.
    Raises `AnnotationError` for invalid JSON (at its line), a malformed entry, a label
    outside the vocabulary or a missing video (checked when `check_files`); an entry's error
    names its index ("entry [3]") and is located at the line where the entry starts.
    """
    root = Path(root)
    annotation_file = Path(annotation_file)
    entries = _read_json_list(annotation_file, "video entries")
    if vocab_file is None and (annotation_file.parent / "Diving48_vocab.json").is_file():
        vocab_file = annotation_file.parent / "Diving48_vocab.json"
    class_names = _read_diving48_vocab(Path(vocab_file)) if vocab_file is not None else None
    num_classes = None if class_names is None else len(class_names)
    records, origins = [], []
    for index, (line, entry) in enumerate(entries):
        try:
            name, label, start, stop = _diving48_entry(entry, num_classes)
            video_path = root / f"{name}.mp4"
            if check_files and not video_path.is_file():
                raise _BadEntry(f"video not found: {video_path}")
        except _BadEntry as error:
            raise AnnotationError(annotation_file, line, f"entry [{index}]: {error}") from None
        records.append(VideoRecord(video_path, label, start, stop))
        origins.append((str(annotation_file), line))
    if not records:
        raise AnnotationError(annotation_file, 0, "no videos listed")
    if class_names is None:
        class_names = [str(label) for label in range(max(r.label for r in records) + 1)]
    return AnnotatedSplit(records, class_names, str(annotation_file), origins)


def _find_ssv2_labels(annotation_file: Path) -> Path:
    for name in SSV2_LABEL_FILES:
        candidate = annotation_file.parent / name
        if candidate.is_file():
            return candidate
    names = " or ".join(SSV2_LABEL_FILES)
    raise LayoutError(
        annotation_file.parent / SSV2_LABEL_FILES[-1], 0, f"labels file ({names}) not found"
    )


def _read_ssv2_labels(path: Path) -> list[str]:
    """Templates ordered by class id from the labels JSON {template: "id", ...}."""
    text = read_annotation_text(path)
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as error:
        raise AnnotationError(path, error.lineno, f"not valid JSON: {error.msg}") from None
    if not isinstance(labels, dict) or not labels:
        raise AnnotationError(path, 1, 'expected a JSON object {"<template>": "<id>", ...}')
    template_of_id: dict[int, str] = {}
    for template, value in labels.items():
        written = (json.dumps(template, ensure_ascii=False), json.dumps(template))  # é or \u00e9
        line = _line_at(text, max(max(text.find(key) for key in written), 0))
        number = value if _is_count(value) else None
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        if number is None:
            raise AnnotationError(
                path, line, f"class id of {template!r} must be a number, got {value!r}"
            )
        if number in template_of_id:
            raise AnnotationError(
                path,
                line,
                f"class id {number} given to {template!r} and {template_of_id[number]!r}",
            )
        template_of_id[number] = template
    expected = set(range(len(template_of_id)))
    if set(template_of_id) != expected:
        gaps = sorted(expected - set(template_of_id))
        raise AnnotationError(
            path, 0, f"class ids must be 0..{len(expected) - 1}; missing {gaps[:5]}"
        )
    return [template_of_id[number] for number in range(len(template_of_id))]


def _ssv2_entry(entry: Any) -> tuple[str, str]:
    """(video id, template without brackets) of one Something-Something V2 entry."""
    if not isinstance(entry, dict):
        raise _BadEntry(f"expected an object with id and template, got {entry!r}")
    video_id, template = entry.get("id"), entry.get("template")
    if _is_count(video_id):
        video_id = str(video_id)
    if not isinstance(video_id, str) or not video_id or "/" in video_id:
        raise _BadEntry(f"'id' must be a video id such as \"78687\", got {video_id!r}")
    if not isinstance(template, str):
        raise _BadEntry("no 'template' string (test.json has no labels: use validation.json)")
    return video_id, template.replace("[", "").replace("]", "")


def read_ssv2(
    root: str | Path,
    annotation_file: str | Path,
    labels_file: str | Path | None = None,
    check_files: bool = True,
) -> AnnotatedSplit:
    """Read a Something-Something V2 split.

    Layout: videos `<root>/<id>.webm`; `annotation_file` (train.json or validation.json; the
    unlabelled test.json cannot be read) is a JSON list of {"id": "78687", "label": "...",
    "template": "Holding [something] next to [something]", "placeholders": [...]}; only
    "id" and "template" are used. `labels_file` (default: `something-something-v2-labels.json`
    or else `labels.json` beside `annotation_file`) maps each template without brackets to
    its class id: {"Holding something next to something": "30", ...}, ids 0..N-1.

    The label is the id of the entry's template with "[" and "]" removed; class names are the
    templates ordered by id. Raises `AnnotationError` for invalid JSON, bad or duplicate ids
    in the labels file, a malformed entry, a template not in the labels file (naming the
    entry's index and line), or a missing video (checked when `check_files`).
    """
    root = Path(root)
    annotation_file = Path(annotation_file)
    entries = _read_json_list(annotation_file, "video entries")
    labels_path = (
        Path(labels_file) if labels_file is not None else _find_ssv2_labels(annotation_file)
    )
    class_names = _read_ssv2_labels(labels_path)
    label_of_template = {template: label for label, template in enumerate(class_names)}
    records, origins = [], []
    for index, (line, entry) in enumerate(entries):
        try:
            video_id, template = _ssv2_entry(entry)
            if template not in label_of_template:
                raise _BadEntry(f"template {template!r} is not in {labels_path}")
            video_path = root / f"{video_id}.webm"
            if check_files and not video_path.is_file():
                raise _BadEntry(f"video not found: {video_path}")
        except _BadEntry as error:
            raise AnnotationError(annotation_file, line, f"entry [{index}]: {error}") from None
        records.append(VideoRecord(video_path, label_of_template[template]))
        origins.append((str(annotation_file), line))
    if not records:
        raise AnnotationError(annotation_file, 0, "no videos listed")
    return AnnotatedSplit(records, class_names, str(annotation_file), origins)


class _Listing:
    """Which file names each folder holds, one directory listing per folder (no per-file stat)."""

    def __init__(self) -> None:
        self.folders: dict[Path, frozenset[str]] = {}

    def __contains__(self, path: Path) -> bool:
        names = self.folders.get(path.parent)
        if names is None:
            try:
                with os.scandir(path.parent) as entries:
                    names = frozenset(entry.name for entry in entries if entry.is_file())
            except OSError:
                names = frozenset()
            self.folders[path.parent] = names
        return path.name in names


def _time(text: str) -> int | None:
    """A Kinetics time in whole seconds ("14", or "14.0" as some copies write it)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def read_kinetics(
    root: str | Path, annotation_file: str | Path, check_files: bool = True
) -> AnnotatedSplit:
    """Read a Kinetics-400 split (the official CSV files; Kinetics-600/700 CSVs read the same).

    Layout: `annotation_file` (train.csv or validate.csv) starts with the header
    `label,youtube_id,time_start,time_end,split` (columns found by name; others, such as
    `is_cc`, are ignored); rows like `abseiling,0347ZoDXyP0,14,24,train` (times in whole
    seconds). The clip's video is `<root>/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`
    (e.g. `0347ZoDXyP0_000014_000024.mp4`); also looked for in the class folder
    `<root>/<label>/` (and `<root>/<label with _ for spaces>/`) and as .mkv or .webm.

    Class names are the file's label strings sorted alphabetically (as mmaction2 and PySlowFast
    do), counted over every row, present on disk or not (`class_lines`: the row that first
    names each). Clips not on disk are left out and listed in `AnnotatedSplit.missing` as
    (line, <root>/<name>.mp4), with one `MissingVideosWarning`; only when none is on disk is
    that an `AnnotationError`. Also raises it for a missing header column or a malformed row.
    With `check_files=False` no folder is read and every record's path is `<root>/<name>.mp4`.
    """
    root = Path(root)
    annotation_file = Path(annotation_file)
    entries = _kinetics_entries(annotation_file)
    class_names = sorted({label for _, label, _ in entries})
    label_of_class = {name: index for index, name in enumerate(class_names)}
    class_lines: dict[str, int] = {}
    for number, label, _ in entries:
        class_lines.setdefault(label, number)
    listing = _Listing()
    records, origins, missing = [], [], []
    for number, label, name in entries:
        expected = root / f"{name}.mp4"
        video_path = _find_clip(root, label, name, listing) if check_files else expected
        if video_path is None:
            missing.append((number, expected))
            continue
        records.append(VideoRecord(video_path, label_of_class[label]))
        origins.append((str(annotation_file), number))
    if not records:
        raise LayoutError(
            annotation_file,
            0,
            f"none of the {len(entries)} listed clips is under {root} (looked for e.g. "
            f"{missing[0][1]}): is data.root right?",
        )
    if missing:
        number, path = missing[0]
        warnings.warn(
            f"{annotation_file}: {len(missing)} of {len(entries)} listed clips are not on disk "
            f"and are left out (first: line {number}, {path})",
            MissingVideosWarning,
            stacklevel=2,
        )
    return AnnotatedSplit(records, class_names, str(annotation_file), origins, missing, class_lines)


def _kinetics_entries(annotation_file: Path) -> list[tuple[int, str, str]]:
    """(line, label, clip name "<youtube_id>_<start:06d>_<end:06d>") of every row of a Kinetics
    CSV, its header checked for the columns `KINETICS_COLUMNS`."""
    rows = _read_csv_rows(annotation_file)
    if not rows:
        raise AnnotationError(annotation_file, 0, "no videos listed")
    header_line, header = rows.pop(0)
    lowered = [name.lower() for name in header]
    absent = [name for name in KINETICS_COLUMNS if name not in lowered]
    if absent:
        raise AnnotationError(
            annotation_file,
            header_line,
            f"header {','.join(header)!r} lacks {', '.join(absent)}; expected "
            f"'{','.join(KINETICS_COLUMNS)},split'",
        )
    columns = [lowered.index(name) for name in KINETICS_COLUMNS]
    entries: list[tuple[int, str, str]] = []
    for number, row in rows:
        if len(row) != len(header):
            raise AnnotationError(
                annotation_file, number, f"expected {len(header)} fields like the header, got {row}"
            )
        label, youtube_id, start_text, end_text = (row[column] for column in columns)
        start, end = _time(start_text), _time(end_text)
        if not label or not youtube_id or start is None or end is None:
            raise AnnotationError(
                annotation_file,
                number,
                f"expected a label, a youtube_id and whole-second time_start, time_end; got {row}",
            )
        entries.append((number, label, f"{youtube_id}_{start:06d}_{end:06d}"))
    if not entries:
        raise AnnotationError(annotation_file, 0, "no videos listed")
    return entries


def kinetics_clip_key(record: VideoRecord) -> str:
    """A Kinetics clip's "<youtube_id>_<start>_<end>", wherever and however it is stored: clips
    may sit flat or in class folders, with any suffix."""
    return os.path.splitext(record.path.name)[0]


def _find_clip(root: Path, label: str, name: str, listing: _Listing) -> Path | None:
    folders = dict.fromkeys([root, root / label, root / label.replace(" ", "_")])
    for folder in folders:
        for suffix in KINETICS_SUFFIXES:
            if (candidate := folder / f"{name}{suffix}") in listing:
                return candidate
    return None


def read_csv_annotations(
    csv_path: str | Path, root: str | Path | None = None, check_files: bool = True
) -> AnnotatedSplit:
    """Read a CSV of "path,label" rows (an optional header row names the columns).

    `path` is relative to `root` (default: the CSV's folder) unless absolute. `label` is either
    a 0-based class number in every row (class names are then "0", "1", ... up to the largest)
    or a class name in every row (class names sorted alphabetically; label = position). A
    first row with a cell named `path` is a header: the `path` and `label` columns are then
    found by name and other columns ignored; without one every row is exactly "path,label".

    Raises `AnnotationError` ("<file>:<line>: <problem>") for a missing file, a malformed row,
    a negative class number, mixed numbers and names, or a listed video that does not exist
    (checked when `check_files`).
    """
    csv_path = Path(csv_path)
    root_path = Path(root) if root is not None else csv_path.parent
    rows = _read_csv_rows(csv_path)
    path_column, label_column, expected_fields = 0, 1, 2
    if rows and "path" in [cell.lower() for cell in rows[0][1]]:
        number, header = rows.pop(0)
        lowered = [name.lower() for name in header]
        if "label" not in lowered:
            raise AnnotationError(csv_path, number, f"header has no 'label' column: {header}")
        path_column, label_column = lowered.index("path"), lowered.index("label")
        expected_fields = len(header)
    entries: list[tuple[int, Path, str]] = []
    for number, row in rows:
        if len(row) != expected_fields or not row[path_column] or not row[label_column]:
            raise AnnotationError(
                csv_path,
                number,
                f"expected {expected_fields} fields with a non-empty path and label, got {row}",
            )
        video_path = Path(row[path_column])
        if not video_path.is_absolute():
            video_path = root_path / video_path
        if check_files and not video_path.is_file():
            raise AnnotationError(csv_path, number, f"video not found: {video_path}")
        entries.append((number, video_path, row[label_column]))
    if not entries:
        raise AnnotationError(csv_path, 0, "no videos listed")
    numeric = [_is_integer(label) for _, _, label in entries]
    if all(numeric):
        for number, _, label in entries:
            if int(label) < 0:
                raise AnnotationError(csv_path, number, f"class number must be >= 0, got {label}")
        num_classes = max(int(label) for _, _, label in entries) + 1
        class_names = [str(label) for label in range(num_classes)]
        records = [VideoRecord(path, int(label)) for _, path, label in entries]
    else:
        if any(numeric):
            number = entries[numeric.index(True)][0]
            raise AnnotationError(
                csv_path, number, "labels mix class numbers and class names; use one kind"
            )
        class_names = sorted({label for _, _, label in entries})
        label_of_class = {name: label for label, name in enumerate(class_names)}
        records = [VideoRecord(path, label_of_class[label]) for _, path, label in entries]
    origins = [(str(csv_path), number) for number, _, _ in entries]
    return AnnotatedSplit(records, class_names, str(csv_path), origins)


def _is_integer(text: str) -> bool:
    return text.lstrip("+-").isdigit()


# ------------------------------------------------------------------------- class folders


def _is_video(name: str) -> bool:
    """A video file name for `folders`: a `VIDEO_SUFFIXES` suffix in any case, not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


def _folder_entries(folder: Path) -> tuple[list[str], list[str]]:
    """(sub-folder names, video file names) directly in `folder`, each sorted; hidden entries
    and files that are not videos are left out."""
    folders, videos = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                folders.append(entry.name)
            elif _is_video(entry.name) and entry.is_file():
                videos.append(entry.name)
    return sorted(folders), sorted(videos)


def _holds_videos(folder: str | Path) -> bool:
    """Whether `folder` directly holds a video file (the listing stops at the first)."""
    try:
        with os.scandir(folder) as entries:
            return any(_is_video(entry.name) and entry.is_file() for entry in entries)
    except OSError:
        return False


def looks_like_class_folders(root: str | Path) -> bool:
    """Whether `root` (or `root/train`, beside `root/test`) has a sub-folder holding videos, as
    a `folders` tree does (UCF101 and HMDB51 trees do too: their folders are their classes)."""
    root = Path(root)
    base = root / "train" if (root / "train").is_dir() and (root / "test").is_dir() else root
    try:
        with os.scandir(base) as entries:
            folders = sorted(
                entry.path for entry in entries if not entry.name.startswith(".") and entry.is_dir()
            )
    except OSError:
        return False
    return any(_holds_videos(folder) for folder in folders)


def _class_videos(base: Path) -> dict[str, list[str]]:
    """Class name -> its sorted video names, for each class folder `base/<class>/`.

    Raises `LayoutError` when `base` has no class folder, and `AnnotationError` for videos
    beside the class folders (they would have no class) or a class folder without a video.
    """
    folders, loose = _folder_entries(base)
    if not folders:
        found = f"; it holds {_plural(len(loose), 'video', 'videos')} directly" if loose else ""
        raise LayoutError(base, 0, f"no class folders <class>/<video> found{found}")
    if loose:
        raise AnnotationError(
            base,
            0,
            f"{_plural(len(loose), 'video', 'videos')} ({loose[0]}, ...) beside the class "
            f"folders: each video must be in its class folder, {base}/<class>/<video>",
        )
    classes = {}
    for name in folders:
        videos = _folder_entries(base / name)[1]
        if not videos:
            raise AnnotationError(
                base / name,
                0,
                f"class folder {name!r} holds no video (files {', '.join(VIDEO_SUFFIXES)}, "
                "directly in it): add its videos or remove the folder",
            )
        classes[name] = videos
    return classes


def folders_test_videos(
    class_name: str, videos: list[str], split_seed: int, test_fraction: float
) -> set[str]:
    """The test videos of one class of a `folders` tree drawn by `split_seed`.

    round(test_fraction x n) of its n videos (halves up), at least 1 when n >= 2 and
    test_fraction > 0, at most n - 1 (a class keeps a train video): those whose sha256 of
    "<split_seed>/<class>/<file name>" is smallest. The draw depends only on the seed and the
    names (not on listing order, other classes, Python's hash seed or the global RNG), and a
    video added to a class moves at most one other video between train and test.
    """
    count = len(videos)
    if count < 2 or test_fraction <= 0:
        return set()
    num_test = min(count - 1, max(1, math.floor(test_fraction * count + 0.5)))

    def rank(name: str) -> tuple[bytes, str]:
        return hashlib.sha256(f"{split_seed}/{class_name}/{name}".encode()).digest(), name

    return set(sorted(videos, key=rank)[:num_test])


def read_folders(
    root: str | Path, subset: str = "train", split_seed: int = 0, test_fraction: float = 0.2
) -> AnnotatedSplit:
    """Read a class-per-folder tree: no annotation files, the folder names are the classes.

    Layouts: `<root>/train/<class>/<video>` and `<root>/test/<class>/<video>` when `root`
    holds both `train/` and `test/` (a test class must be a train class; a train class may
    have no test folder); otherwise `<root>/<class>/<video>`, split per class by
    `folders_test_videos(class, videos, split_seed, test_fraction)` (stratified: each class
    keeps its share in both subsets). Videos are files with a `VIDEO_SUFFIXES` suffix in any
    case, directly in their class folder; hidden entries and other files are ignored.

    Class names are the (train) class folder names sorted; label = position. Records come
    class by class, videos sorted by name. `source` is the subset's folder, or the root with
    the seed and fraction that drew the split; there is no annotation file, so no `origins`.
    Raises `LayoutError` for no class folder and `AnnotationError` for videos beside the class
    folders, a class folder without a video, `train/` without `test/` (or the reverse), a test
    class that is not a train class, or a subset without videos (a test fraction of 0).
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    root = Path(root)
    halves = [name for name in ("train", "test") if (root / name).is_dir()]
    if len(halves) == 2:
        loose = _folder_entries(root)[1]
        if loose:
            raise AnnotationError(
                root,
                0,
                f"{_plural(len(loose), 'video', 'videos')} ({loose[0]}, ...) beside train/ and "
                f"test/: each video must be in {root}/<train|test>/<class>/<video>",
            )
        train, test = _class_videos(root / "train"), _class_videos(root / "test")
        unknown = sorted(set(test) - set(train))
        if unknown:
            raise AnnotationError(
                root / "test" / unknown[0],
                0,
                f"class folder {unknown[0]!r} is in test/ but not in train/: a test class must "
                f"be a train class ({root}/train/{unknown[0]}/ is missing)",
            )
        class_names = sorted(train)
        chosen = train if subset == "train" else test
        records = [
            VideoRecord(root / subset / name / video, label)
            for label, name in enumerate(class_names)
            for video in chosen.get(name, [])
        ]
        source = str(root / subset)
    elif halves:
        missing = "test" if halves == ["train"] else "train"
        raise AnnotationError(
            root,
            0,
            f"has {halves[0]}/ but no {missing}/: a train/test tree needs both "
            f"{root}/train/<class>/ and {root}/test/<class>/ (with the class folders directly "
            f"in {root}, the split is drawn by data.split_seed and data.test_fraction)",
        )
    else:
        classes = _class_videos(root)
        class_names = sorted(classes)
        records = []
        for label, name in enumerate(class_names):
            test_videos = folders_test_videos(name, classes[name], split_seed, test_fraction)
            records += [
                VideoRecord(root / name / video, label)
                for video in classes[name]
                if (video in test_videos) == (subset == "test")
            ]
        source = f"{root} (class folders; split_seed={split_seed}, test_fraction={test_fraction})"
    if not records:  # only a drawn test subset can be empty: train keeps a video per class
        raise AnnotationError(
            root,
            0,
            f"no {subset} videos: test_fraction is {test_fraction} or every class folder holds "
            "a single video",
        )
    return AnnotatedSplit(records, class_names, source)


# ------------------------------------------------------------------------- the format table


@dataclass(frozen=True)
class FormatSpec:
    """How one `data.format` is read.

    `read(root, annotations, subset, split, check_files, **options)` returns the subset's
    videos. `layout` says in one phrase what the format needs under `data.root` (files,
    folders, which `data.*` key names which file): `read_format` puts it into a `LayoutError`.
    `annotations` is, when `split_folder`, the folder that holds every split's lists
    (`data.annotations`; None: found under the root; `folders` needs none: its root holds both
    subsets) and `split` (`data.split`) picks one of the official `splits` (unused without
    any); otherwise the subset's own file (`data.annotations` for train,
    `data.test_annotations` for test) and `split` is unused. `options` names the further
    `data.*` keys the format reads, passed to `read` as keyword arguments of the same name.
    `label_files` are the files beside the annotations that define the class labels (their
    hashes go into every run's data manifest). `clip_key` says when a train and a test record
    are the same video (None: the same path).
    """

    read: Callable[..., AnnotatedSplit]
    layout: str
    split_folder: bool = False
    splits: tuple[int, ...] = ()
    label_files: tuple[str, ...] = ()
    clip_key: Callable[[VideoRecord], object] | None = None
    options: tuple[str, ...] = ()


def _read_ucf101_lists(
    root: Path, annotations: Path | None, subset: str, split: int, check_files: bool
) -> AnnotatedSplit:
    return read_ucf101(
        root, split=split, subset=subset, annotation_dir=annotations, check_files=check_files
    )


def _read_hmdb51_lists(
    root: Path, annotations: Path | None, subset: str, split: int, check_files: bool
) -> AnnotatedSplit:
    return read_hmdb51(
        root, split=split, subset=subset, annotation_dir=annotations, check_files=check_files
    )


def _read_diving48_file(
    root: Path, annotations: Path, subset: str, split: int, check_files: bool
) -> AnnotatedSplit:
    return read_diving48(root, annotations, check_files=check_files)


def _read_ssv2_file(
    root: Path, annotations: Path, subset: str, split: int, check_files: bool
) -> AnnotatedSplit:
    return read_ssv2(root, annotations, check_files=check_files)


def _read_kinetics_file(
    root: Path, annotations: Path, subset: str, split: int, check_files: bool
) -> AnnotatedSplit:
    return read_kinetics(root, annotations, check_files=check_files)


def _read_csv_file(
    root: Path, annotations: Path, subset: str, split: int, check_files: bool
) -> AnnotatedSplit:
    return read_csv_annotations(annotations, root=root, check_files=check_files)


def _read_class_folders(
    root: Path, annotations: Path | None, subset: str, split: int, check_files: bool, **options
) -> AnnotatedSplit:
    # The tree is its own annotation: it is listed whatever check_files says. data.split, for
    # the official numbered splits, is unused: data.split_seed draws this format's split.
    return read_folders(root, subset, **options)


# data.format -> how it is read; `advise.config.CHOICES["data.format"]` lists the same names
FORMATS: dict[str, FormatSpec] = {
    "ucf101": FormatSpec(
        _read_ucf101_lists,
        "classInd.txt, trainlist0N.txt and testlist0N.txt (N = data.split) in data.root, "
        "data.root/ucfTrainTestlist or data.annotations, and videos data.root/<class>/<video>",
        split_folder=True, splits=(1, 2, 3), label_files=("classInd.txt",)),
    "hmdb51": FormatSpec(
        _read_hmdb51_lists,
        "<class>_test_splitN.txt files (N = data.split) in data.root/testTrainMulti_7030_splits,"
        " data.root or data.annotations, and videos data.root/<class>/<video>",
        split_folder=True, splits=(1, 2, 3)),
    "diving48": FormatSpec(
        _read_diving48_file,
        "data.annotations and data.test_annotations = Diving48_V2_train.json and "
        "Diving48_V2_test.json (Diving48_vocab.json beside them), videos data.root/<vid_name>.mp4",
        label_files=("Diving48_vocab.json",)),
    "ssv2": FormatSpec(
        _read_ssv2_file,
        "data.annotations and data.test_annotations = train.json and validation.json "
        "(labels.json beside them), videos data.root/<id>.webm",
        label_files=SSV2_LABEL_FILES),
    "k400": FormatSpec(
        _read_kinetics_file,
        "data.annotations and data.test_annotations = the Kinetics train.csv and validate.csv, "
        "clips data.root/[<label>/]<youtube_id>_<start:06d>_<end:06d>.mp4",
        clip_key=kinetics_clip_key),
    "csv": FormatSpec(
        _read_csv_file,
        "data.annotations and data.test_annotations = CSV files of path,label rows, the paths "
        "relative to data.root"),
    "folders": FormatSpec(
        _read_class_folders,
        "videos data.root/<class>/<video> (split by data.split_seed and data.test_fraction) or "
        "data.root/train/<class>/<video> and data.root/test/<class>/<video>, no annotation files",
        split_folder=True, options=("split_seed", "test_fraction")),
}  # fmt: skip


def read_format(
    name: str,
    root: str | Path,
    annotations: Path | None,
    subset: str,
    split: int = 1,
    check_files: bool = True,
    **options: Any,
) -> AnnotatedSplit:
    """`subset` of the dataset at `root` read as `data.format=name` (`FORMATS[name].read`).

    A `LayoutError` (a missing annotation file, no class folders...) comes back with what
    `name` needs (`FormatSpec.layout`) and the formats there are appended to its message, and,
    when `root` holds class folders of videos, the suggestion `data.format=folders`.
    """
    root = Path(root)
    try:
        return FORMATS[name].read(root, annotations, subset, split, check_files, **options)
    except LayoutError as error:
        raise LayoutError(
            error.file, error.line, f"{error.problem}; {layout_help(name, root)}"
        ) from None


def layout_help(name: str, root: str | Path) -> str:
    """One line: what `data.format=name` needs, the formats there are, and `data.format=folders`
    when `root` holds class folders of videos and `name` is another format."""
    text = (
        f"data.format={name} needs {FORMATS[name].layout}; the formats are "
        f"{', '.join(FORMATS)} (data.format=NAME)"
    )
    if name != "folders" and looks_like_class_folders(root):
        text += (
            f"; {root} holds class folders of videos: if each folder is a class, use "
            "data.format=folders"
        )
    return text
