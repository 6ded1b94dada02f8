"""Annotation readers for every dataset format, `read_split` wiring, and start-up errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from fabricate import (
    CSV_CLASSES,
    DIVING48_VOCAB,
    FOLDERS_CLASSES,
    FORMATS,
    HMDB51_CLASSES,
    KINETICS_CLASSES,
    NUM_FRAMES,
    SSV2_LABELS,
    dataset_tree,
    kinetics_clip_name,
)

from advise.config import ConfigError, load_config
from advise.data.formats import (
    AnnotatedSplit,
    AnnotationError,
    MissingVideosWarning,
    SplitCounts,
    SplitSizeWarning,
    VideoRecord,
    read_csv_annotations,
    read_diving48,
    read_hmdb51,
    read_ucf101,
)
from advise.data.loaders import read_split
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


# ---------------------------------------------------------------------------------------------
# Every format through `read_split`, on fabricated trees of real videos.

DIVING48_NAMES = ["/".join(attributes) for attributes in DIVING48_VOCAB]
SSV2_NAMES = sorted(SSV2_LABELS, key=lambda template: int(SSV2_LABELS[template]))
CLASS_NAMES = {
    "ucf101": ["Left", "Right"],
    "hmdb51": list(HMDB51_CLASSES),
    "diving48": DIVING48_NAMES,
    "ssv2": SSV2_NAMES,
    "k400": sorted(KINETICS_CLASSES),
    "csv": list(CSV_CLASSES),
    "folders": list(FOLDERS_CLASSES[:2]),
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """format -> the data.* overrides of its fabricated tree (each built once, on first use)."""
    built: dict[str, dict] = {}

    def tree(format: str) -> dict:
        if format not in built:
            built[format] = dataset_tree(format, tmp_path_factory.mktemp(format))
        return dict(built[format])

    return tree


def read_both(
    overrides: dict,
) -> tuple[AnnotatedSplit, AnnotatedSplit, list[warnings.WarningMessage]]:
    """Train and test splits as a run reads them, and the user warnings they gave."""
    config = load_config("demo", overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = read_split(config.data, "train")
        test = read_split(config.data, "test")
    return train, test, [w for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("format", FORMATS)
def test_every_format_reads_train_and_test(trees, format):
    train, test, caught = read_both(trees(format))
    names = CLASS_NAMES[format]
    assert train.class_names == test.class_names == names
    assert [record.label for record in train.records] == [0, 0, 1, 1]
    assert [record.label for record in test.records] == [0, 1]
    assert train.counts() == SplitCounts(
        videos=4, classes=2, per_class=dict.fromkeys(names, 2), missing=int(format == "k400")
    )
    assert test.counts() == SplitCounts(2, 2, dict.fromkeys(names, 1), 0)
    assert test.summary().startswith("2 videos, 2 classes (1-1 per class)")
    expected_warnings = [MissingVideosWarning] if format == "k400" else []
    assert [w.category for w in caught] == expected_warnings
    if format != "folders":  # class folders: no annotation lines
        assert len(train.origins) == 4 and len(test.origins) == 2
    for record in (train.records[0], test.records[-1]):  # real videos
        assert count_frames(record.path) == NUM_FRAMES


def test_source_lines_are_reported(trees):
    train, test, _ = read_both(trees("ucf101"))
    root = Path(trees("ucf101")["data.root"])
    assert train.origins == [(str(root / "trainlist01.txt"), line) for line in (1, 2, 3, 4)]
    hmdb = trees("hmdb51")
    test = read_split(load_config("demo", hmdb).data, "test")
    folder = Path(hmdb["data.annotations"])
    assert test.origins == [(str(folder / f"{name}_test_split1.txt"), 3) for name in HMDB51_CLASSES]


def test_diving48_frame_ranges(trees):
    """end_frame is inclusive in Diving48; records hold the exclusive stop, clamped when used."""
    train, test, _ = read_both(trees("diving48"))
    ranges = [(record.start_frame, record.end_frame) for record in train.records]
    assert ranges == [(2, 16), (3, 17), (2, 16), (3, 17)]
    assert [(r.start_frame, r.end_frame) for r in test.records] == [(1, NUM_FRAMES + 6)] * 2
    assert test.records[0].frame_range(NUM_FRAMES) == (1, NUM_FRAMES)
    assert train.records[0].path.name == "dive0_00000.mp4"


def test_diving48_without_vocabulary_numbers_its_classes(trees, tmp_path):
    overrides = annotation_copy(trees("diving48"), tmp_path / "lists")
    (tmp_path / "lists" / "Diving48_vocab.json").unlink()
    train, test, _ = read_both(overrides)
    assert train.class_names == test.class_names == ["0", "1"]


def test_kinetics_missing_clips_are_counted_and_warned(trees):
    overrides = trees("k400")
    root = Path(overrides["data.root"])
    config = load_config("demo", overrides)
    with pytest.warns(MissingVideosWarning, match=r"train\.csv: 1 of 5 listed clips .*line 6"):
        train = read_split(config.data, "train")
    missing_path = root / f"{kinetics_clip_name(0, 99)}.mp4"
    assert train.missing == [(6, missing_path)]
    assert train.counts().missing == 1
    assert "1 of 5 listed videos missing on disk" in train.summary()
    # Flat, in the class folder (its name has a space), and another suffix are all found.
    test = read_split(config.data, "test")
    assert test.records[0].path == root / f"{kinetics_clip_name(0, 2)}.mp4"
    assert test.records[1].path == root / "air drumming" / f"{kinetics_clip_name(1, 2)}.webm"
    assert train.records[2].path.parent == root / "air drumming"


def test_kinetics_with_no_clip_on_disk_is_an_error(trees, tmp_path):
    overrides = trees("k400")
    overrides["data.root"] = str(tmp_path)  # right lists, wrong folder
    config = load_config("demo", overrides)
    csv_path = Path(overrides["data.annotations"])
    expect_error(
        lambda: read_split(config.data, "train"), csv_path, 0, "none of the 5 listed clips"
    )


def test_hmdb51_finds_its_split_folder_and_checks_the_split(trees):
    overrides = trees("hmdb51")
    root = Path(overrides["data.root"])
    assert len(read_hmdb51(root, split=1, subset="train").records) == 4  # folder found
    folder = root / "testTrainMulti_7030_splits"
    expect_error(lambda: read_hmdb51(root, split=2), folder / "*_test_split2.txt", 0, "no HMDB51")


def test_ssv2_flip_is_refused():
    with pytest.raises(ConfigError, match=r'turns "left" into "right".*data\.flip=false'):
        load_config("demo", {"data.format": "ssv2", "data.flip": True})
    with pytest.raises(ConfigError, match="Something-Something"):
        load_config(None, {"data.format": "ssv2"})  # the default flips
    assert load_config("demo", {"data.format": "ssv2"}).data.flip is False


# ---------------------------------------------------------------------------------------------
# Malformed annotations: AnnotationError at the right file and line.

ANNOTATION_SUFFIXES = (".txt", ".json", ".csv")


def annotation_copy(overrides: dict, destination: Path) -> dict:
    """Copy a fabricated tree's annotation files to `destination` (videos stay where they are);
    the overrides that read the copy."""
    root = Path(overrides["data.root"])
    source = Path(overrides["data.annotations"] or root)
    folder = source if source.is_dir() else source.parent
    destination.mkdir(parents=True)
    for path in folder.iterdir():
        if path.is_file() and path.suffix in ANNOTATION_SUFFIXES:
            shutil.copy(path, destination / path.name)
    copied = dict(overrides, **{"data.annotations": str(destination)})
    for key in ("data.annotations", "data.test_annotations"):
        if overrides[key] and not Path(overrides[key]).is_dir():
            copied[key] = str(destination / Path(overrides[key]).name)
    return copied


UCF_VIDEO = "Left/v_Left_g00.mp4"
HMDB_VIDEO = "Clip_0_brush_hair_f_cm_np1_fr_med_0.avi"
DIVE = '{"vid_name": "dive0_00000", "label": 0, "start_frame": 0, "end_frame": 9}'
SSV2_ENTRY = '{"id": "1000", "template": "Pushing [something] from right to left"}'
K400_HEADER = "label,youtube_id,time_start,time_end,split\n"
K400_ROW = "abseiling,yt0x0000000,0,10,train\n"


@pytest.mark.parametrize(
    "format, file, text, line, problem",
    [
        ("ucf101", "trainlist01.txt", f"{UCF_VIDEO} 1\nLeft/gone.mp4 1\n", 2, "video not found"),
        ("ucf101", "trainlist01.txt", f"{UCF_VIDEO} 2\n", 1, "video is in folder 'Left'"),
        (
            "hmdb51",
            "brush_hair_test_split1.txt",
            f"{HMDB_VIDEO} 1\n\nmarkerless.avi\n",
            3,
            "expected '<video file name> <marker>'",
        ),
        (
            "hmdb51",
            "shoot_ball_test_split1.txt",
            "x.avi 0\ny.avi 3\n",
            2,
            "marker must be 1 (train), 2 (test) or 0 (unused), got '3'",
        ),
        ("hmdb51", "brush_hair_test_split1.txt", "gone.avi 1\n", 1, "video not found"),
        (
            "diving48",
            "Diving48_V2_train.json",
            f"[\n {DIVE},\n {DIVE[:-1]}\n]",
            4,
            "not valid JSON",
        ),
        (
            "diving48",
            "Diving48_V2_train.json",
            f'[{DIVE},\n\n {{"vid_name": "x", "label": "1"}}]',
            3,
            "entry [1]: 'label' must be an integer >= 0, got '1'",
        ),
        (
            "diving48",
            "Diving48_V2_train.json",
            '[\n {"vid_name": "dive0_00000", "label": 2}]',
            2,
            "entry [0]: label 2 is not a class",
        ),
        (
            "diving48",
            "Diving48_V2_train.json",
            '[{"vid_name": "dive0_00000", "label": 0, "start_frame": 9, "end_frame": 3}]',
            1,
            "end_frame 3 is before start_frame 9",
        ),
        (
            "diving48",
            "Diving48_V2_train.json",
            f"[{DIVE},\n {DIVE.replace('00000', '9')}]",
            2,
            "entry [1]: video not found",
        ),
        ("diving48", "Diving48_V2_train.json", '{"vid_name": "x"}', 1, "expected a JSON list"),
        (
            "diving48",
            "Diving48_vocab.json",
            '[["Back", "15som"],\n "Forward"]',
            2,
            "entry [1]: expected a list of attribute strings",
        ),
        (
            "ssv2",
            "train.json",
            f'[{SSV2_ENTRY},\n {{"id": "1001", "template": "Spinning [something]"}}]',
            2,
            "entry [1]: template 'Spinning something' is not in",
        ),
        ("ssv2", "train.json", '[{"id": "1000", "label": "a pen"}]', 1, "use validation.json"),
        ("ssv2", "train.json", f"[{SSV2_ENTRY.replace('1000', '777')}]", 1, "video not found"),
        (
            "ssv2",
            "labels.json",
            '{\n "Pushing something from right to left": "0",\n'
            ' "Pushing something from left to right": "0"\n}',
            3,
            "class id 0 given to",
        ),
        ("ssv2", "labels.json", '{"Pushing something from right to left": "1"}', 0, "missing [0]"),
        (
            "k400",
            "train.csv",
            "label,youtube_id,time_start,split\n" + K400_ROW,
            1,
            "lacks time_end",
        ),
        (
            "k400",
            "train.csv",
            K400_HEADER + K400_ROW + "abseiling,yt0x0000001,ten,20,train\n",
            3,
            "whole-second time_start",
        ),
        (
            "k400",
            "train.csv",
            K400_HEADER + "\n" + K400_ROW + "abseiling,yt0x0000001\n",
            4,
            "expected 5 fields",
        ),
        (
            "csv",
            "train.csv",
            "path,label\nvideos/jumping/clip0.mp4,jumping\nclip9.mp4,rowing\n",
            3,
            "video not found",
        ),
    ],
)
def test_malformed_annotations(trees, tmp_path, format, file, text, line, problem):
    overrides = annotation_copy(trees(format), tmp_path / "lists")
    bad = tmp_path / "lists" / file
    bad.write_text(text)
    config = load_config("demo", overrides)
    expect_error(lambda: read_split(config.data, "train"), bad, line, problem)


# A train video listed in the test list too: (file in the annotation copy, text to append).
OVERLAPS = {
    "ucf101": ("testlist01.txt", f"{UCF_VIDEO}\n"),
    "hmdb51": ("brush_hair_test_split1.txt", f"{HMDB_VIDEO} 2\n"),
    "diving48": ("Diving48_V2_test.json", DIVE),
    "ssv2": ("validation.json", SSV2_ENTRY),
    "k400": ("validate.csv", "abseiling,yt0x0000000,0,10,val\n"),
    "csv": ("test.csv", "videos/jumping/clip0.mp4,jumping\n"),
}


def append_entry(path: Path, entry: str) -> int:
    """Append a line to a list file or an entry to a JSON list; the line it lands on."""
    if path.suffix == ".json":
        items = json.loads(path.read_text())
        lines = [json.dumps(item) for item in items] + [entry]
        path.write_text("[\n" + ",\n".join(lines) + "\n]\n")
        return len(lines) + 1
    text = path.read_text()
    path.write_text(text + entry)
    return len(text.splitlines()) + 1


@pytest.mark.parametrize("format", list(OVERLAPS))  # a folders tree cannot list one twice
def test_train_test_overlap_is_refused(trees, tmp_path, format):
    overrides = annotation_copy(trees(format), tmp_path / "lists")
    file, entry = OVERLAPS[format]
    test_list = tmp_path / "lists" / file
    line = append_entry(test_list, entry)
    config = load_config("demo", overrides)
    for subset in ("train", "test"):  # whichever subset a run reads
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingVideosWarning)
            expect_error(
                lambda subset=subset: read_split(config.data, subset),
                test_list,
                line,
                "is in the test list and in the train list",
            )


def test_overlap_check_reads_only_the_other_list(trees, tmp_path):
    """The other subset's videos are not looked at: a run on train starts with a test video gone."""
    overrides = annotation_copy(trees("csv"), tmp_path / "lists")
    test_list = tmp_path / "lists" / "test.csv"
    test_list.write_text("path,label\nvideos/jumping/gone.mp4,jumping\n")
    config = load_config("demo", overrides)
    assert len(read_split(config.data, "train").records) == 4
    expect_error(lambda: read_split(config.data, "test"), test_list, 2, "video not found")


def test_overlap_check_needs_a_non_empty_other_list(trees, tmp_path):
    overrides = trees("csv")
    overrides["data.test_annotations"] = ""  # not configured
    config = load_config("demo", overrides)
    assert len(read_split(config.data, "train").records) == 4
    with pytest.raises(ConfigError, match="data.test_annotations is empty"):
        read_split(config.data, "test")
    # An empty test list, as `advise synth pool` writes (every video is for pretraining).
    overrides = annotation_copy(trees("ucf101"), tmp_path / "lists")
    (tmp_path / "lists" / "testlist01.txt").write_text("")
    assert len(read_split(load_config("demo", overrides).data, "train").records) == 4
    # But a malformed line in the other list stops the run now, not after training.
    (tmp_path / "lists" / "testlist01.txt").write_text("Left/v_Left_g02.mp4 1\n")
    expect_error(
        lambda: read_split(load_config("demo", overrides).data, "train"),
        tmp_path / "lists" / "testlist01.txt",
        1,
        "expected 'ClassName/video.avi'",
    )


# ---------------------------------------------------------------------------------------------
# Official split sizes.


def placeholder_ucf101(root: Path, num_classes: int, per_class: int = 1) -> Path:
    """UCF101 lists over `num_classes` classes with empty placeholder files for videos."""
    classes = [f"Class{number:03d}" for number in range(num_classes)]
    (root / "classInd.txt").parent.mkdir(parents=True)
    (root / "classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(classes)))
    train, test = [], []
    for label, name in enumerate(classes):
        (root / name).mkdir()
        for index in range(2 * per_class):
            (root / name / f"v_{index}.avi").touch()
        train += [f"{name}/v_{i}.avi {label + 1}\n" for i in range(per_class)]
        test += [f"{name}/v_{i}.avi\n" for i in range(per_class, 2 * per_class)]
    (root / "trainlist01.txt").write_text("".join(train))
    (root / "testlist01.txt").write_text("".join(test))
    return root


def test_ucf101_split_size_warning(tmp_path):
    root = placeholder_ucf101(tmp_path / "ucf101", 101)
    config = load_config("demo", {"data.format": "ucf101", "data.root": str(root)})
    with pytest.warns(SplitSizeWarning) as caught:
        assert len(read_split(config.data, "train").records) == 101
    assert len(caught) == 1  # the test list read for the overlap check does not warn
    assert "101 train videos, but the official UCF101 split 1 has 9537" in str(caught[0].message)
    with pytest.warns(SplitSizeWarning, match="101 test videos, but .* split 1 has 3783"):
        read_split(config.data, "test")


def test_no_size_warning_for_other_class_counts(tmp_path, trees):
    root = placeholder_ucf101(tmp_path / "ucf100", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_ucf101(root)
        read_both(trees("ucf101"))  # the fabricated 2-class tree


def test_hmdb51_split_size_warning(tmp_path):
    folder = tmp_path / "hmdb51" / "testTrainMulti_7030_splits"
    folder.mkdir(parents=True)
    for number in range(51):
        name = f"action_{number:02d}"
        (folder.parent / name).mkdir()
        (folder.parent / name / "a.avi").touch()
        (folder.parent / name / "b.avi").touch()
        (folder / f"{name}_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    with pytest.warns(SplitSizeWarning, match="51 train videos, but the official HMDB51 split 1"):
        split = read_hmdb51(folder.parent)
    assert split.num_classes == 51 and split.class_names[:2] == ["action_00", "action_01"]
    with pytest.warns(SplitSizeWarning, match="51 test videos, .* has 1530"):
        read_hmdb51(folder.parent, subset="test")


def test_json_lines_are_found_in_one_line_files(tmp_path):
    """The official Diving48 JSON is a single line: every entry is at line 1."""
    root = tmp_path
    write_video(root / "a.mp4", np.zeros((4, 16, 16, 3), dtype=np.uint8))
    annotations = root / "one_line.json"
    annotations.write_text('[{"vid_name": "a", "label": 1}, {"vid_name": "b", "label": 0}]')
    expect_error(
        lambda: read_diving48(root, annotations), annotations, 1, "entry [1]: video not found"
    )
    annotations.write_text('[{"vid_name": "a", "label": 1}]')
    split = read_diving48(root, annotations)
    assert split.class_names == ["0", "1"] and split.records == [VideoRecord(root / "a.mp4", 1)]


def test_train_and_test_share_one_class_list(tmp_path):
    """A test CSV without the class "jump" must not renumber "run" and "walk"."""
    root = tmp_path / "csv"
    for name in ("jump/a.mp4", "run/b.mp4", "walk/c.mp4", "run/d.mp4", "walk/e.mp4"):
        write_video(root / name, np.zeros((4, 16, 16, 3), np.uint8))
    (root / "train.csv").write_text("path,label\njump/a.mp4,jump\nrun/b.mp4,run\nwalk/c.mp4,walk\n")
    (root / "test.csv").write_text("path,label\nrun/d.mp4,run\nwalk/e.mp4,walk\n")
    overrides = {
        "data.format": "csv",
        "data.root": str(root),
        "data.annotations": str(root / "train.csv"),
        "data.test_annotations": str(root / "test.csv"),
    }
    data = load_config("demo", overrides).data
    train, test = read_split(data, "train"), read_split(data, "test")
    assert train.class_names == test.class_names == ["jump", "run", "walk"]
    assert [record.label for record in test.records] == [1, 2]

    (root / "train.csv").write_text("path,label\njump/a.mp4,0\nrun/b.mp4,1\nwalk/c.mp4,2\n")
    (root / "test.csv").write_text("path,label\nrun/d.mp4,1\n")
    test = read_split(data, "test")
    assert test.class_names == ["0", "1", "2"] and test.records[0].label == 1
