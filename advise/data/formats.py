"""Annotation readers: lists of (video file, class label) from dataset split files.

Readers check everything they can at read time (start-up): a line that names a missing video,
an unknown class or is malformed raises `AnnotationError` whose message is
"<file>:<line>: <problem>", so a bad annotation never surfaces hours into a run. Video files may
be .mp4, .avi or .webm (any container FFmpeg reads); the name listed is used as is.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video: `path` to the file, `label` the 0-based class index."""

    path: Path
    label: int


@dataclass
class AnnotatedSplit:
    """The videos of one split, the class names (index = label) and where they were read."""

    records: list[VideoRecord]
    class_names: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class AnnotationError(ValueError):
    """An annotation file is wrong; the message is "<file>:<line>: <problem>".

    `line` is 1-based; 0 when the problem concerns the whole file (e.g. it is missing).
    """

    def __init__(self, file: str | Path, line: int, problem: str) -> None:
        self.file = str(file)
        self.line = line
        self.problem = problem
        super().__init__(f"{file}:{line}: {problem}")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines of a text file."""
    if not path.is_file():
        raise AnnotationError(path, 0, "annotation file not found")
    text = path.read_text(encoding="utf-8-sig")
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
    return [(number, line) for number, line in lines if line]


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
) -> AnnotatedSplit:
    """Read a UCF101-style split (also the layout `advise synth` writes).

    Layout: `<root>/<ClassName>/<video file>`; in `annotation_dir` (default: `root`, or
    `root/ucfTrainTestlist` when classInd.txt is there) `classInd.txt` ("1 ApplyEyeMakeup",
    1-based), `trainlist0<split>.txt` ("ClassName/video.avi 1", 1-based label) and
    `testlist0<split>.txt` ("ClassName/video.avi"; the folder gives the class).

    Returns an `AnnotatedSplit` with 0-based labels (classInd index - 1) in file order.
    Raises `AnnotationError` ("<file>:<line>: <problem>") for a missing annotation file, a
    malformed line, an unknown class or class number, a label that disagrees with the class
    folder, or a listed video that does not exist under `root`.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {split!r}")
    root = Path(root)
    annotations = Path(annotation_dir) if annotation_dir is not None else _find_annotation_dir(root)
    class_names = _read_class_index(annotations / "classInd.txt")
    label_of_class = {name: label for label, name in enumerate(class_names)}
    list_path = annotations / f"{subset}list0{split}.txt"
    records = []
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
        if not video_path.is_file():
            raise AnnotationError(list_path, number, f"video not found: {video_path}")
        records.append(VideoRecord(video_path, label))
    if not records:
        raise AnnotationError(list_path, 0, "no videos listed")
    return AnnotatedSplit(records, class_names, source=str(list_path))


def read_csv_annotations(csv_path: str | Path, root: str | Path | None = None) -> AnnotatedSplit:
    """Read a CSV of "path,label" rows (an optional header row names the columns).

    `path` is relative to `root` (default: the CSV's folder) unless absolute. `label` is either
    a 0-based class number in every row (class names are then "0", "1", ... up to the largest)
    or a class name in every row (class names sorted alphabetically; label = position). A
    first row with a cell named `path` is a header: the `path` and `label` columns are then
    found by name and other columns ignored; without one every row is exactly "path,label".

    Raises `AnnotationError` ("<file>:<line>: <problem>") for a missing file, a malformed row,
    a negative class number, mixed numbers and names, or a listed video that does not exist.
    """
    csv_path = Path(csv_path)
    root_path = Path(root) if root is not None else csv_path.parent
    if not csv_path.is_file():
        raise AnnotationError(csv_path, 0, "annotation file not found")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [
            (number, [cell.strip() for cell in row])
            for number, row in enumerate(csv.reader(handle), start=1)
            if any(cell.strip() for cell in row)
        ]
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
        if not video_path.is_file():
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
    return AnnotatedSplit(records, class_names, source=str(csv_path))


def _is_integer(text: str) -> bool:
    return text.lstrip("+-").isdigit()
