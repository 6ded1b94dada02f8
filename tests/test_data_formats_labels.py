"""Train labels belong to the train list: no test list can add, drop or renumber a class.

Annotation-only trees: readers check that a listed video exists, not that it decodes, so
empty placeholder files stand in for the videos. Class words carry an accent ("Délta") so
the encoding tests (`test_data_formats_encoding.py`) can reuse these trees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fabricate import tiny_config

from advise.cli import main
from advise.config import load_config
from advise.data.formats import AnnotatedSplit, AnnotationError, read_hmdb51, read_kinetics
from advise.data.loaders import read_split

WORDS = ("Bravo", "Délta", "Echo")  # the train classes, in label order for every format
UNKNOWN = len(WORDS)  # a class no train line has: "Alpha" (sorts first) or class number 5
UNKNOWN_WORD, UNKNOWN_NUMBER = "Alpha", 5

Entry = tuple[str, int]  # (video tag, class index into WORDS, or UNKNOWN)
Location = tuple[Path, int]  # (annotation file, 1-based line)
Writer = Callable[[Path, list[Entry], list[Entry]], tuple[dict, Location | None]]

TRAIN: list[Entry] = [("r0", 0), ("r1", 0), ("r2", 1), ("r3", 2)]  # in class order
TEST: list[Entry] = [("t0", 0), ("t1", 1), ("t2", 2)]
TEST_VARIANTS = {
    "as-written": TEST,
    "fewer-lines-and-classes": [("t1", 1)],
    "more-lines": [*TEST, ("t3", 2), ("t4", 0)],
    "reordered": TEST[::-1],
}


def word(label: int) -> str:
    return UNKNOWN_WORD if label == UNKNOWN else WORDS[label]


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def json_list(items: list) -> str:
    """A JSON list with item i on line i + 2."""
    return "[\n" + ",\n".join(json.dumps(item, ensure_ascii=False) for item in items) + "\n]\n"


def unknown_line(entries: list[Entry], first_line: int) -> int | None:
    labels = [label for _, label in entries]
    return first_line + labels.index(UNKNOWN) if UNKNOWN in labels else None


def located(path: Path, line: int | None) -> Location | None:
    return None if line is None else (path, line)


def ucf101(root: Path, train: list[Entry], test: list[Entry]) -> tuple[dict, Location | None]:
    root.mkdir(parents=True)
    (root / "classInd.txt").write_text("".join(f"{k + 1} {w}\n" for k, w in enumerate(WORDS)))
    lines = {"train": [], "test": []}
    for subset, entries in (("train", train), ("test", test)):
        for tag, label in entries:
            relative = f"{word(label)}/{word(label)}_{tag}.avi"
            touch(root / relative)
            lines[subset].append(relative + (f" {label + 1}" if subset == "train" else ""))
    (root / "trainlist01.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "testlist01.txt").write_text("\r\n".join(lines["test"]) + "\r\n")
    overrides = {"data.format": "ucf101", "data.root": str(root), "data.split": 1}
    return overrides, located(root / "testlist01.txt", unknown_line(test, 1))


def hmdb51(root: Path, train: list[Entry], test: list[Entry]) -> tuple[dict, Location | None]:
    """One file per class; its test lines (marker 2) come before its train lines (marker 1),
    so adding a test line moves every train line of that class down one line."""
    folder = root / "splits"
    folder.mkdir(parents=True)
    labels = sorted({label for _, label in train + test})
    for label in labels:
        name = word(label).lower()
        lines = [f"{name}_{tag}.avi 2" for tag, k in test if k == label]
        lines += [f"{name}_{tag}.avi 1" for tag, k in train if k == label]
        for line in lines:
            touch(root / name / line.split()[0])
        (folder / f"{name}_test_split1.txt").write_text("\n".join(lines) + "\n")
    overrides = {"data.format": "hmdb51", "data.root": str(root), "data.annotations": str(folder)}
    line = 1 if UNKNOWN in labels else None  # its own file holds only test lines
    return overrides, located(folder / f"{UNKNOWN_WORD.lower()}_test_split1.txt", line)


def files_format(
    format: str,
    train_name: str,
    test_name: str,
    write_list: Callable[[list[str]], str],
    first_line: int,
    entry_of: Callable[[str, int], tuple[object, str]],
    class_files: dict[str, str] | None = None,
) -> Writer:
    """A writer for a format with a train file and a test file in `<root>/lists`:
    `entry_of(stem, label)` gives an entry of the list and the video file it names."""

    def write(root: Path, train: list[Entry], test: list[Entry]) -> tuple[dict, Location | None]:
        folder = root / "lists"
        folder.mkdir(parents=True)
        for name, text in (class_files or {}).items():
            (folder / name).write_text(text)
        for name, entries in ((train_name, train), (test_name, test)):
            items = []
            for tag, label in entries:
                item, video = entry_of(f"{word(label)}_{tag}", label)
                touch(root / video)
                items.append(item)
            (folder / name).write_text(write_list(items))
        overrides = {
            "data.format": format,
            "data.root": str(root),
            "data.annotations": str(folder / train_name),
            "data.test_annotations": str(folder / test_name),
        }
        if format == "ssv2":
            overrides["data.flip"] = False
        return overrides, located(folder / test_name, unknown_line(test, first_line))

    return write


def csv_rows(header: str) -> Callable[[list[str]], str]:
    return lambda rows: "\n".join([header, *rows]) + "\n"


def number(label: int) -> int:
    return UNKNOWN_NUMBER if label == UNKNOWN else label


def kinetics_entry(stem: str, label: int) -> tuple[str, str]:
    return f"{word(label).lower()},{stem},0,10,train", f"{stem}_000000_000010.mp4"


LAYOUTS: dict[str, tuple[Writer, list[str]]] = {  # format variant -> writer, train classes
    "ucf101": (ucf101, list(WORDS)),
    "hmdb51": (hmdb51, [w.lower() for w in WORDS]),
    "diving48": (
        files_format(
            "diving48",
            "Diving48_V2_train.json",
            "Diving48_V2_test.json",
            json_list,
            2,
            lambda stem, label: ({"vid_name": stem, "label": number(label)}, f"{stem}.mp4"),
            {"Diving48_vocab.json": json_list([[w, "PIKE"] for w in WORDS])},
        ),
        [f"{w}/PIKE" for w in WORDS],
    ),
    "diving48-no-vocabulary": (
        files_format(
            "diving48",
            "Diving48_V2_train.json",
            "Diving48_V2_test.json",
            json_list,
            2,
            lambda stem, label: ({"vid_name": stem, "label": number(label)}, f"{stem}.mp4"),
        ),
        ["0", "1", "2"],
    ),
    "ssv2": (
        files_format(
            "ssv2",
            "train.json",
            "validation.json",
            json_list,
            2,
            lambda stem, label: (
                {"id": stem, "template": f"{word(label)} [something]"},
                f"{stem}.webm",
            ),
            {
                "labels.json": json.dumps(
                    {f"{w} something": str(k) for k, w in enumerate(WORDS)}, ensure_ascii=False
                )
            },
        ),
        [f"{w} something" for w in WORDS],
    ),
    "k400": (
        files_format(
            "k400",
            "train.csv",
            "validate.csv",
            csv_rows("label,youtube_id,time_start,time_end,split"),
            2,
            kinetics_entry,
        ),
        [w.lower() for w in WORDS],
    ),
    "csv-names": (
        files_format(
            "csv",
            "train.csv",
            "test.csv",
            csv_rows("path,label"),
            2,
            lambda stem, label: (f"videos/{stem}.mp4,{word(label).lower()}", f"videos/{stem}.mp4"),
        ),
        [w.lower() for w in WORDS],
    ),
    "csv-numbers": (
        files_format(
            "csv",
            "train.csv",
            "test.csv",
            csv_rows("path,label"),
            2,
            lambda stem, label: (f"videos/{stem}.mp4,{number(label)}", f"videos/{stem}.mp4"),
        ),
        ["0", "1", "2"],
    ),
}


def read_train_and_test(overrides: dict) -> tuple[AnnotatedSplit, AnnotatedSplit]:
    data = load_config("demo", overrides).data
    return read_split(data, "train"), read_split(data, "test")


def labelled(split: AnnotatedSplit) -> list[tuple[str, str]]:
    """(video file name, class name) of every record, in record order."""
    return [(record.path.name, split.class_names[record.label]) for record in split.records]


VIDEO_NAMES = {  # layout -> its video file name of an entry (w: class word, t: tag)
    "ucf101": "{w}_{t}.avi",
    "hmdb51": "{lower}_{t}.avi",
    "ssv2": "{w}_{t}.webm",
    "k400": "{w}_{t}_000000_000010.mp4",
}


def expected(layout: str, entries: list[Entry]) -> list[tuple[str, str]]:
    """(video file name, class name) of `entries` as the layout's reader should give them."""
    _, names = LAYOUTS[layout]
    pattern = VIDEO_NAMES.get(layout, "{w}_{t}.mp4")
    return [
        (pattern.format(w=WORDS[label], lower=WORDS[label].lower(), t=tag), names[label])
        for tag, label in entries
    ]


@pytest.mark.parametrize("variant", TEST_VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_train_labels_do_not_depend_on_the_test_list(tmp_path, layout, variant):
    writer, names = LAYOUTS[layout]
    overrides, _ = writer(tmp_path / "tree", TRAIN, TEST_VARIANTS[variant])
    train, test = read_train_and_test(overrides)
    assert train.class_names == names  # the class list and every train label, as written
    assert [record.label for record in train.records] == [label for _, label in TRAIN]
    assert labelled(train) == expected(layout, TRAIN)
    assert test.class_names == names  # the test list is numbered over the train classes
    assert sorted(labelled(test)) == sorted(expected(layout, TEST_VARIANTS[variant]))


@pytest.mark.parametrize("subset", ["train", "test"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_test_class_the_train_list_lacks_is_refused_at_its_line(tmp_path, layout, subset):
    writer, _ = LAYOUTS[layout]
    overrides, (file, line) = writer(tmp_path / "tree", TRAIN, [*TEST, ("t9", UNKNOWN)])
    data = load_config("demo", overrides).data
    with pytest.raises(AnnotationError) as caught:
        read_split(data, subset)
    assert (caught.value.file, caught.value.line) == (str(file), line), str(caught.value)
    assert str(caught.value).startswith(f"{file}:{line}: ")
    numbered = layout in ("diving48", "diving48-no-vocabulary", "csv-numbers")
    assert (str(UNKNOWN_NUMBER) if numbered else UNKNOWN_WORD.lower()) in str(caught.value).lower()


@pytest.mark.filterwarnings("ignore::advise.data.formats.MissingVideosWarning")
def test_a_test_class_only_on_a_kinetics_clip_missing_on_disk_is_refused(tmp_path):
    writer, _ = LAYOUTS["k400"]
    overrides, (file, line) = writer(tmp_path / "tree", TRAIN, [*TEST, ("t9", UNKNOWN)])
    (tmp_path / "tree" / f"{UNKNOWN_WORD}_t9_000000_000010.mp4").unlink()
    data = load_config("demo", overrides).data
    for subset in ("train", "test"):
        with pytest.raises(AnnotationError, match=f"^{file}:{line}: class 'alpha'"):
            read_split(data, subset)
    split = read_kinetics(tmp_path / "tree", file)  # the file alone is fine
    assert split.class_lines == {"bravo": 2, "délta": 3, "echo": 4, "alpha": 5}


def test_an_hmdb51_class_with_test_videos_only_is_refused_by_the_reader(tmp_path):
    _, (file, line) = hmdb51(tmp_path / "tree", TRAIN, [*TEST, ("t9", UNKNOWN)])
    for subset in ("train", "test"):
        with pytest.raises(AnnotationError, match="'alpha' has test videos .* but no train video"):
            read_hmdb51(tmp_path / "tree", subset=subset, annotation_dir=file.parent)


def test_a_class_number_within_the_train_range_is_a_train_class(tmp_path):
    """Class numbers run 0 to the largest train number: a test label inside it is a class
    (with no train video, as a class of a class file can be); one past it is refused."""
    writer, _ = LAYOUTS["csv-numbers"]
    overrides, _ = writer(tmp_path / "tree", [("r0", 0), ("r1", 2)], [("t0", 1)])
    train, test = read_train_and_test(overrides)
    assert train.class_names == test.class_names == ["0", "1", "2"]
    assert [record.label for record in test.records] == [1]


def test_the_cli_refuses_a_test_only_class_with_exit_2(tmp_path, capsys):
    writer, _ = LAYOUTS["csv-names"]
    overrides, (file, line) = writer(tmp_path / "tree", TRAIN, [*TEST, ("t9", UNKNOWN)])
    data = {key.split(".")[1]: value for key, value in overrides.items()}
    config = tiny_config(tmp_path / "c.yaml", data=data)
    code = main(["check-data", "--config", str(config), "--out", str(tmp_path / "check")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"advise: error: {file}:{line}: class 'alpha' is not a class")
    assert len(err.splitlines()) == 1 and not (tmp_path / "check").exists()
