"""data.format=folders (the class folders are the classes, no annotation files) and the layout
errors of every format: a missing file names the format in use, what it needs, the formats
there are, and suggests data.format=folders for a tree of class folders."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from fabricate import (
    FOLDERS_CLASSES,
    NUM_FRAMES,
    class_folders_tree,
    class_video,
    train_test_folders_tree,
)

from advise.config import ConfigError, load_config
from advise.data.formats import (
    FORMATS,
    AnnotatedSplit,
    AnnotationError,
    LayoutError,
    read_folders,
    read_format,
)
from advise.data.loaders import read_split
from advise.data.video import count_frames
from advise.provenance import data_manifest

FORMAT_LIST = "ucf101, hmdb51, diving48, ssv2, k400, csv, folders"
FIVE_CLASSES = ("a", "b", "c", "d", "e")


def folders_data(root: Path, **options):
    """The demo preset's data section read as data.format=folders at `root` (works whether or
    not the config has data.split_seed / data.test_fraction yet: extra keys ride along)."""
    fields = dataclasses.asdict(load_config("demo").data)
    fields.update(format="folders", root=str(root), annotations="", test_annotations="")
    fields.update(options)
    return SimpleNamespace(**fields)


def names(split: AnnotatedSplit) -> set[str]:
    return {f"{record.path.parent.name}/{record.path.name}" for record in split.records}


def per_class(split: AnnotatedSplit) -> dict[str, int]:
    return split.counts().per_class


# ------------------------------------------------------------------------- reading


@pytest.fixture
def tree(tmp_path) -> Path:
    return class_folders_tree(tmp_path / "tree", per_class=5)


def test_class_folders_give_sorted_classes_and_disjoint_subsets(tree):
    train, test = read_folders(tree, "train"), read_folders(tree, "test")
    assert train.class_names == test.class_names == sorted(FOLDERS_CLASSES)
    assert per_class(train) == dict.fromkeys(FOLDERS_CLASSES, 4)  # 5 - round(0.2 x 5)
    assert per_class(test) == dict.fromkeys(FOLDERS_CLASSES, 1)
    for split in (train, test):
        for record in split.records:  # the folder is the class
            assert split.class_names[record.label] == record.path.parent.name
            assert record.path.is_file() and (record.start_frame, record.end_frame) == (0, None)
    assert not names(train) & names(test)
    on_disk = {f"{path.parent.name}/{path.name}" for path in tree.glob("*/*")}
    assert names(train) | names(test) == on_disk
    # every suffix, in any case, is a video; .MOV and .mkv decode like the others
    assert {path.suffix for path in tree.glob("*/*")} == {".mp4", ".AVI", ".webm", ".MOV", ".mkv"}
    for suffix in (".MOV", ".mkv", ".AVI"):
        assert count_frames(next(tree.glob(f"*/*{suffix}"))) == NUM_FRAMES
    assert "split_seed=0" in train.source and "test_fraction=0.2" in train.source


def test_hidden_entries_and_other_files_are_ignored(tree):
    before = names(read_folders(tree, "train")), names(read_folders(tree, "test"))
    (tree / "README.txt").write_text("not a video\n")
    (tree / ".DS_Store").write_bytes(b"\0")
    class_video(tree / ".cache" / "thumb.mp4", 0, 9)  # a hidden folder is no class
    (tree / "clapping" / "notes.txt").write_text("x\n")
    (tree / "clapping" / ".hidden.mp4").write_bytes(b"")
    (tree / "clapping" / "frames").mkdir()  # sub-folders of a class folder are not read
    class_video(tree / "clapping" / "frames" / "deep.mp4", 0, 8)
    after = names(read_folders(tree, "train")), names(read_folders(tree, "test"))
    assert after == before
    assert read_folders(tree).class_names == sorted(FOLDERS_CLASSES)


def test_train_and_test_folders_give_the_split(tmp_path):
    root = train_test_folders_tree(tmp_path / "tt", (3, 2, 4), (2, 1, 0))
    train, test = read_folders(root, "train"), read_folders(root, "test")
    assert train.class_names == test.class_names == list(FOLDERS_CLASSES)
    assert per_class(train) == {"clapping": 3, "jumping": 2, "waving": 4}
    assert per_class(test) == {"clapping": 2, "jumping": 1, "waving": 0}  # waving: no test/
    assert all(record.path.parent.parent == root / "train" for record in train.records)
    assert all(record.path.parent.parent == root / "test" for record in test.records)
    assert [test.class_names[r.label] for r in test.records] == [
        r.path.parent.name for r in test.records
    ]
    assert train.source == str(root / "train") and test.source == str(root / "test")
    # the seed and fraction draw nothing here: the folders are the split
    assert names(read_folders(root, "test", split_seed=5, test_fraction=0.5)) == names(test)


# ------------------------------------------------------------------------- the drawn split

# videos per class of FIVE_CLASSES, and the test videos each gets per test fraction: round
# half up, at least 1 when a class has 2 or more, at most all but one
SIZES = (10, 7, 3, 2, 1)
EXPECTED_TEST = {
    0.2: (2, 1, 1, 1, 0),
    0.5: (5, 4, 2, 1, 0),
    0.9: (9, 6, 2, 1, 0),
}


@pytest.fixture
def five(tmp_path) -> Path:
    return class_folders_tree(tmp_path / "five", per_class=SIZES, classes=FIVE_CLASSES)


@pytest.mark.parametrize("fraction", list(EXPECTED_TEST))
def test_the_split_is_stratified_and_honours_the_fraction(five, fraction):
    train = read_folders(five, "train", test_fraction=fraction)
    test = read_folders(five, "test", test_fraction=fraction)
    expected_test = dict(zip(FIVE_CLASSES, EXPECTED_TEST[fraction], strict=True))
    assert per_class(test) == expected_test
    assert per_class(train) == {
        name: size - expected_test[name] for name, size in zip(FIVE_CLASSES, SIZES, strict=True)
    }
    assert all(count >= 1 for count in per_class(train).values())  # every class trains
    assert not names(train) & names(test)
    assert len(names(train) | names(test)) == sum(SIZES)


def test_the_split_is_drawn_by_the_seed_alone(five):
    def drawn(seed: int) -> set[str]:
        return names(read_folders(five, "test", split_seed=seed))

    first = drawn(0)
    random.seed(123)  # the global RNG plays no part
    random.random()
    assert drawn(0) == first
    assert drawn(1) != first and drawn(2) != first and drawn(1) != drawn(2)
    for seed in (0, 1, 2):  # other seeds, the same sizes per class
        assert per_class(read_folders(five, "test", split_seed=seed)) == dict(
            zip(FIVE_CLASSES, EXPECTED_TEST[0.2], strict=True)
        )


def test_adding_a_class_or_a_video_leaves_the_other_draws(five):
    before = names(read_folders(five, "test", split_seed=3))
    class_folders_tree(five, per_class=(4,), classes=("aa",))  # a new class, sorted second
    after = read_folders(five, "test", split_seed=3)
    assert after.class_names == ["a", "aa", "b", "c", "d", "e"]
    assert {name for name in names(after) if not name.startswith("aa/")} == before
    class_video(five / "a" / "clip100.mp4", 0, 100)  # 11 videos: still 2 test videos in "a"
    grown = {name for name in names(read_folders(five, "test", split_seed=3)) if name[:2] == "a/"}
    old = {name for name in before if name[:2] == "a/"}
    assert len(grown) == 2 and len(grown - old - {"a/clip100.mp4"}) == 0 and len(old - grown) <= 1


def test_a_zero_test_fraction_trains_on_everything(five):
    train = read_folders(five, "train", test_fraction=0)
    assert len(train.records) == sum(SIZES)
    with pytest.raises(AnnotationError, match="no test videos"):
        read_folders(five, "test", test_fraction=0)
    with pytest.raises(ValueError, match="test_fraction"):
        read_folders(five, "train", test_fraction=1.0)


# ------------------------------------------------------------------------- folders errors


def empty_class(root: Path) -> Path:
    class_folders_tree(root, per_class=2)
    (root / "zooming").mkdir()
    return root / "zooming"


def loose_video(root: Path) -> Path:
    class_folders_tree(root, per_class=2)
    class_video(root / "stray.mp4", 0, 7)
    return root


def class_only_in_test(root: Path) -> Path:
    train_test_folders_tree(root, (2, 2), (1, 1))
    class_video(root / "test" / "zooming" / "z.mp4", 0, 3)
    return root / "test" / "zooming"


def train_without_test(root: Path) -> Path:
    class_folders_tree(root / "train", per_class=2)
    return root


def loose_beside_train_and_test(root: Path) -> Path:
    train_test_folders_tree(root, (2, 2), (1, 1))
    class_video(root / "stray.webm", 0, 7)
    return root


def empty_test_class(root: Path) -> Path:
    train_test_folders_tree(root, (2, 2), (1, 1))
    (root / "test" / "jumping" / "test0.mp4").unlink()
    return root / "test" / "jumping"


@pytest.mark.parametrize(
    "build, words",
    [
        (empty_class, ["class folder 'zooming' holds no video", ".mp4", ".mov"]),
        (loose_video, ["1 video (stray.mp4, ...) beside the class folders", "<class>/<video>"]),
        (class_only_in_test, ["'zooming' is in test/ but not in train/", "train/zooming/"]),
        (train_without_test, ["has train/ but no test/", "test/<class>/"]),
        (loose_beside_train_and_test, ["stray.webm", "<train|test>/<class>/<video>"]),
        (empty_test_class, ["class folder 'jumping' holds no video"]),
    ],
)
@pytest.mark.parametrize("subset", ["train", "test"])
def test_a_broken_class_folder_tree_is_refused_at_its_path(tmp_path, build, words, subset):
    root = tmp_path / "tree"
    path = build(root)
    with pytest.raises(AnnotationError) as caught:
        read_split(folders_data(root), subset)  # either subset sees the whole tree
    message = str(caught.value)
    assert message.startswith(f"{path}:0: ") and "\n" not in message, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("content", ["nothing", "only videos"])
def test_no_class_folders_says_what_folders_needs(tmp_path, content):
    root = tmp_path / "flat"
    root.mkdir()
    if content == "only videos":
        class_video(root / "one.mp4", 0, 0)
        class_video(root / "two.avi", 1, 1)
    with pytest.raises(LayoutError) as caught:
        read_split(folders_data(root), "train")
    message = str(caught.value)
    assert message.startswith(f"{root}:0: no class folders <class>/<video> found"), message
    assert "data.format=folders needs videos data.root/<class>/<video>" in message
    assert "data.split_seed" in message and "data.root/train/<class>/<video>" in message
    assert FORMAT_LIST in message
    assert ("holds 2 videos directly" in message) == (content == "only videos")
    assert "use data.format=folders" not in message  # it is in use


# ------------------------------------------------------------------------- through read_split


@pytest.mark.parametrize("layout", ["drawn", "train/test"])
def test_read_split_reads_folders(tmp_path, layout):
    if layout == "drawn":
        root = class_folders_tree(tmp_path / "tree", per_class=(5, 6, 4))
        sizes = ({"clapping": 4, "jumping": 5, "waving": 3}, dict.fromkeys(FOLDERS_CLASSES, 1))
    else:
        root = train_test_folders_tree(tmp_path / "tree", (3, 2, 2), (1, 1, 2))
        sizes = (
            {"clapping": 3, "jumping": 2, "waving": 2},
            {"clapping": 1, "jumping": 1, "waving": 2},
        )
    data = folders_data(root)
    train, test = read_split(data, "train"), read_split(data, "test")
    assert train.class_names == test.class_names == list(FOLDERS_CLASSES)
    assert (per_class(train), per_class(test)) == sizes
    assert not names(train) & names(test)
    assert [r.label for r in test.records] == [
        FOLDERS_CLASSES.index(r.path.parent.name) for r in test.records
    ]


def test_read_split_passes_the_split_seed_and_test_fraction(five):
    plain = read_split(folders_data(five), "test")
    assert names(plain) == names(read_folders(five, "test"))  # the defaults: seed 0, 0.2
    data = folders_data(five, split_seed=4, test_fraction=0.5)
    drawn = read_split(data, "test")
    assert names(drawn) == names(read_folders(five, "test", split_seed=4, test_fraction=0.5))
    assert per_class(drawn) == dict(zip(FIVE_CLASSES, EXPECTED_TEST[0.5], strict=True))
    assert "split_seed=4, test_fraction=0.5" in drawn.source


def test_the_manifest_of_a_folders_split_hashes_no_video(five):
    config = load_config("demo")
    data = dataclasses.replace(config.data, format="folders", root=str(five))
    config = dataclasses.replace(config, data=data)
    split = read_split(config.data, "train")
    manifest = data_manifest(config, split)
    assert manifest["annotation_sha256"] == {}  # the tree is the annotation: no file to hash
    assert manifest["split"] is None  # data.split is for the official numbered splits
    assert "split_seed=0" in manifest["source"] and manifest["videos"] == len(split.records)


# ------------------------------------------------------------------------- every format's layout

# per format: data.* overrides pointing at a missing annotation, and what its message must name
NOT_FOUND = "annotation file not found"
MISSING = {
    "ucf101": ({}, f"classInd.txt:0: {NOT_FOUND}", "trainlist0N.txt"),
    "hmdb51": ({}, "*_test_split1.txt:0: no HMDB51 split files", "testTrainMulti_7030_splits"),
    "diving48": ({"data.annotations": "t.json"}, NOT_FOUND, "Diving48_V2_test.json"),
    "ssv2": ({"data.annotations": "train.json"}, NOT_FOUND, "validation.json"),
    "k400": ({"data.annotations": "train.csv"}, NOT_FOUND, "validate.csv"),
    "csv": ({"data.annotations": "train.csv"}, NOT_FOUND, "path,label rows"),
}  # fmt: skip


def data_of(name: str, root: Path, overrides: dict[str, str]):
    values = {"data.format": name, "data.root": str(root), "data.annotations": ""}
    values.update({key: str(root / value) for key, value in overrides.items()})
    if name == "ssv2":
        values["data.flip"] = False
    return load_config("demo", values).data


def test_every_format_but_folders_is_described():
    assert set(MISSING) == set(FORMATS) - {"folders"}
    assert all(spec.layout and "\n" not in spec.layout for spec in FORMATS.values())


@pytest.mark.parametrize("name", list(MISSING))
@pytest.mark.parametrize("tree", ["class folders", "empty"])
def test_a_missing_annotation_names_the_format_its_files_and_the_formats(tmp_path, name, tree):
    root = tmp_path / "root"
    if tree == "class folders":
        class_folders_tree(root, per_class=1)
    else:
        root.mkdir()
    overrides, problem, needed = MISSING[name]
    with pytest.raises(LayoutError) as caught:
        read_split(data_of(name, root, overrides), "train")
    message = str(caught.value)
    assert message.startswith(str(root)) and problem in message and "\n" not in message, message
    assert f"data.format={name} needs " in message and needed in message
    assert FORMAT_LIST in message
    assert ("use data.format=folders" in message) == (tree == "class folders")


def test_ucf101_on_a_class_folder_tree_suggests_folders(tmp_path):
    # before the layout messages this said only "<root>/classInd.txt:0: annotation file not found"
    root = class_folders_tree(tmp_path / "mine", per_class=3)
    with pytest.raises(AnnotationError) as caught:
        read_split(data_of("ucf101", root, {}), "train")
    message = str(caught.value)
    assert message.startswith(f"{root / 'classInd.txt'}:0: annotation file not found; ")
    assert "data.format=ucf101 needs classInd.txt, trainlist0N.txt and testlist0N.txt" in message
    assert FORMAT_LIST in message
    assert f"{root} holds class folders of videos: if each folder is a class, use " in message
    assert message.endswith("data.format=folders")
    # and the suggestion reads the tree
    split = read_split(folders_data(root), "train")
    assert split.class_names == sorted(FOLDERS_CLASSES) and len(split.records) == 6


def test_a_train_test_tree_is_recognised_for_the_suggestion(tmp_path):
    root = train_test_folders_tree(tmp_path / "tt", (1, 1), (1, 1))
    with pytest.raises(LayoutError, match="use data.format=folders"):
        read_format("csv", root, root / "train.csv", "train")


def test_a_missing_ssv2_labels_file_is_a_layout_error(tmp_path):
    root = tmp_path / "ssv2"
    root.mkdir()
    (root / "train.json").write_text("[]")
    with pytest.raises(LayoutError) as caught:
        read_split(data_of("ssv2", root, {"data.annotations": "train.json"}), "train")
    message = str(caught.value)
    assert "labels file" in message and "data.format=ssv2 needs" in message
    assert "labels.json beside them" in message and FORMAT_LIST in message


def test_an_empty_annotation_key_describes_the_format(tmp_path):
    root = class_folders_tree(tmp_path / "tree", per_class=1)
    with pytest.raises(ConfigError) as caught:
        read_split(data_of("k400", root, {}), "train")
    message = str(caught.value)
    assert message.startswith("data.annotations is empty: the k400 format needs the train file")
    assert "train.csv and validate.csv" in message and FORMAT_LIST in message
    assert "use data.format=folders" in message


def test_other_annotation_errors_are_left_as_they_were(tmp_path):
    root = tmp_path / "csv"
    class_video(root / "a.mp4", 0, 0)
    (root / "train.csv").write_text("a.mp4,0\ngone.mp4,1\n")
    with pytest.raises(AnnotationError) as caught:
        read_split(data_of("csv", root, {"data.annotations": "train.csv"}), "train")
    assert not isinstance(caught.value, LayoutError)
    assert str(caught.value) == f"{root / 'train.csv'}:2: video not found: {root / 'gone.mp4'}"
