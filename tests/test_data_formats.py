"""Annotation readers: UCF101 split files and CSV lists, and their start-up errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from advise.data.formats import (
    AnnotatedSplit,
    AnnotationError,
    VideoRecord,
    read_csv_annotations,
    read_ucf101,
)
from advise.data.video import count_frames, write_video

VIDEOS = {  # class folder -> files (any container)
    "Juggling": ["v_Juggling_g01_c01.mp4", "v_Juggling_g02_c01.avi"],
    "Rowing": ["v_Rowing_g01_c01.webm"],
}


@pytest.fixture
def ucf_root(tmp_path) -> Path:
    """A tiny UCF101 tree: real 16 x 16 videos of 3 frames, classInd, train/test lists."""
    root = tmp_path / "ucf"
    frames = np.full((3, 16, 16, 3), 90, dtype=np.uint8)
    for class_name, names in VIDEOS.items():
        for name in names:
            write_video(root / class_name / name, frames)
    (root / "classInd.txt").write_text("1 Juggling\n2 Rowing\n")
    (root / "trainlist01.txt").write_text(
        "Juggling/v_Juggling_g01_c01.mp4 1\r\n\nRowing/v_Rowing_g01_c01.webm 2\n"
    )
    (root / "testlist01.txt").write_text("Juggling/v_Juggling_g02_c01.avi\n")
    return root


def test_read_ucf101_train_and_test(ucf_root):
    train = read_ucf101(ucf_root, split=1, subset="train")
    assert isinstance(train, AnnotatedSplit)
    assert train.class_names == ["Juggling", "Rowing"] and train.num_classes == 2
    assert train.records == [
        VideoRecord(ucf_root / "Juggling" / "v_Juggling_g01_c01.mp4", 0),
        VideoRecord(ucf_root / "Rowing" / "v_Rowing_g01_c01.webm", 1),
    ]
    assert train.source.endswith("trainlist01.txt")
    test = read_ucf101(ucf_root, subset="test")
    assert test.records == [VideoRecord(ucf_root / "Juggling" / "v_Juggling_g02_c01.avi", 0)]
    assert all(count_frames(record.path) == 3 for record in train.records + test.records)


def test_annotation_folder_is_found_or_given(ucf_root, tmp_path):
    official = ucf_root / "ucfTrainTestlist"
    official.mkdir()
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt"):
        (ucf_root / name).rename(official / name)
    assert len(read_ucf101(ucf_root).records) == 2
    elsewhere = tmp_path / "lists"
    official.rename(elsewhere)
    assert len(read_ucf101(ucf_root, subset="test", annotation_dir=elsewhere).records) == 1
    with pytest.raises(AnnotationError, match=r"classInd\.txt:0: annotation file not found"):
        read_ucf101(ucf_root)


def expect_error(call, file: Path, line: int, problem: str) -> None:
    """`call` raises AnnotationError "<file>:<line>: ..." mentioning `problem`."""
    with pytest.raises(AnnotationError) as caught:
        call()
    message = str(caught.value)
    assert message.startswith(f"{file}:{line}: "), message
    assert problem in message
    assert (caught.value.file, caught.value.line) == (str(file), line)


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("Juggling/v_Juggling_g01_c01.mp4 1\nJuggling/v_missing.mp4 1\n", 2, "video not found"),
        ("Swimming/v_Swimming_g01_c01.mp4 1\n", 1, "unknown class 'Swimming'"),
        ("Juggling/v_Juggling_g01_c01.mp4 3\n", 1, "unknown class number '3'"),
        ("Juggling/v_Juggling_g01_c01.mp4 0\n", 1, "unknown class number '0'"),
        ("Juggling/v_Juggling_g01_c01.mp4 2\n", 1, "video is in folder 'Juggling'"),
        ("Juggling/v_Juggling_g01_c01.mp4\n", 1, "expected"),
        ("v_Juggling_g01_c01.mp4 1\n", 1, "expected"),
        # The listed name is authoritative: a file with another suffix does not count.
        ("Juggling/v_Juggling_g01_c01.avi 1\n", 1, "video not found"),
        ("\n", 0, "no videos listed"),
    ],
)
def test_bad_train_lines(ucf_root, text, line, problem):
    list_path = ucf_root / "trainlist01.txt"
    list_path.write_text(text)
    expect_error(lambda: read_ucf101(ucf_root), list_path, line, problem)


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("Juggling/v_Juggling_g02_c01.avi\nRowing/v_gone.webm\n", 2, "video not found"),
        ("Diving/v_Diving_g01_c01.avi\n", 1, "unknown class 'Diving'"),
        ("Juggling/v_Juggling_g02_c01.avi 1\n", 1, "expected"),
    ],
)
def test_bad_test_lines(ucf_root, text, line, problem):
    list_path = ucf_root / "testlist01.txt"
    list_path.write_text(text)
    expect_error(lambda: read_ucf101(ucf_root, subset="test"), list_path, line, problem)


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("0 Juggling\n1 Rowing\n", 1, "1-based"),  # 0-based indices
        ("1 Juggling\n3 Rowing\n", 2, "expected 2"),
        ("1 Juggling\nRowing\n", 2, "expected '<index> <ClassName>'"),
        ("1 Juggling\n2 Juggling\n", 2, "listed twice"),
    ],
)
def test_bad_class_index(ucf_root, text, line, problem):
    class_index = ucf_root / "classInd.txt"
    class_index.write_text(text)
    expect_error(lambda: read_ucf101(ucf_root), class_index, line, problem)


def test_bad_arguments(ucf_root):
    with pytest.raises(ValueError, match="subset"):
        read_ucf101(ucf_root, subset="val")
    with pytest.raises(ValueError, match="split"):
        read_ucf101(ucf_root, split=4)
    expect_error(
        lambda: read_ucf101(ucf_root, split=2), ucf_root / "trainlist02.txt", 0, "not found"
    )


def test_csv_with_numbers_names_and_header(ucf_root):
    numbers = ucf_root / "numbers.csv"
    numbers.write_text("Juggling/v_Juggling_g01_c01.mp4,2\nRowing/v_Rowing_g01_c01.webm, 0\n")
    split = read_csv_annotations(numbers)
    assert split.class_names == ["0", "1", "2"]
    assert [record.label for record in split.records] == [2, 0]
    assert split.records[0].path == ucf_root / "Juggling" / "v_Juggling_g01_c01.mp4"
    assert split.source == str(numbers)

    names = ucf_root / "lists" / "names.csv"
    names.parent.mkdir()
    absolute = ucf_root / "Juggling" / "v_Juggling_g02_c01.avi"
    names.write_text(
        "label,path,comment\n"
        "rowing,Rowing/v_Rowing_g01_c01.webm,outdoor\n"
        f'juggling,"{absolute}",indoor\n'
    )
    split = read_csv_annotations(names, root=ucf_root)
    assert split.class_names == ["juggling", "rowing"]
    assert split.records == [
        VideoRecord(ucf_root / "Rowing" / "v_Rowing_g01_c01.webm", 1),
        VideoRecord(absolute, 0),
    ]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("path,label\nJuggling/v_Juggling_g01_c01.mp4,0\nJuggling/nope.mp4,1\n", 3, "not found"),
        ("Juggling/v_Juggling_g01_c01.mp4,0,extra\n", 1, "expected 2"),
        ("Juggling/v_Juggling_g01_c01.mp4,\n", 1, "expected 2"),
        ("Juggling/v_Juggling_g01_c01.mp4,-1\n", 1, ">= 0"),
        ("Juggling/v_Juggling_g01_c01.mp4,1\nRowing/v_Rowing_g01_c01.webm,x\n", 1, "mix"),
        ("path,name\nJuggling/v_Juggling_g01_c01.mp4,a\n", 1, "no 'label' column"),
        ("path,label\n", 0, "no videos listed"),
    ],
)
def test_bad_csv(ucf_root, text, line, problem):
    csv_path = ucf_root / "bad.csv"
    csv_path.write_text(text)
    expect_error(lambda: read_csv_annotations(csv_path), csv_path, line, problem)
    missing = ucf_root / "absent.csv"
    expect_error(lambda: read_csv_annotations(missing), missing, 0, "not found")
