"""Annotation files in UTF-8 (with or without a byte-order mark) or UTF-16 with one read the
same; any other encoding stops at start-up naming the file, the line and the byte offset."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest
from fabricate import tiny_config
from test_data_formats_labels import LAYOUTS, TEST, TRAIN, read_train_and_test

from advise.cli import main
from advise.config import load_config
from advise.data.formats import AnnotationError, read_annotation_text, read_ssv2
from advise.data.loaders import read_split

ANNOTATION_SUFFIXES = (".txt", ".csv", ".json")
ENCODINGS = {  # name -> how the text becomes the file's bytes
    "utf-8-bom": lambda text: text.encode("utf-8-sig"),
    "utf-16-le-bom": lambda text: codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
    "utf-16-be-bom": lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
}


def annotation_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in ANNOTATION_SUFFIXES)


def as_read(overrides: dict) -> list:
    """Everything a run takes from the annotations: classes, records and where each was read."""
    return [
        (split.class_names, split.records, split.origins)
        for split in read_train_and_test(overrides)
    ]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_format_reads_byte_order_marked_utf8_and_utf16_alike(tmp_path, layout, encoding):
    writer, _ = LAYOUTS[layout]
    overrides, _ = writer(tmp_path / "tree", TRAIN, TEST)
    plain = as_read(overrides)
    files = annotation_files(tmp_path / "tree")
    assert any("é" in path.read_text(encoding="utf-8") for path in files)  # not only ASCII
    for path in files:
        path.write_bytes(ENCODINGS[encoding](path.read_text(encoding="utf-8")))
    assert as_read(overrides) == plain


LATIN1_FILES = {  # layout -> its annotation files that hold an "é"
    "ucf101": ["classInd.txt", "trainlist01.txt", "testlist01.txt"],  # the test list: CRLF
    "hmdb51": ["délta_test_split1.txt"],
    "diving48": ["Diving48_vocab.json", "Diving48_V2_train.json"],
    "diving48-no-vocabulary": ["Diving48_V2_test.json"],
    "ssv2": ["labels.json", "train.json"],
    "k400": ["train.csv", "validate.csv"],
    "csv-names": ["test.csv"],
    "csv-numbers": ["train.csv"],
}


@pytest.mark.parametrize("subset", ["train", "test"])
@pytest.mark.parametrize(
    "layout, name", [(layout, name) for layout, names in LATIN1_FILES.items() for name in names]
)
def test_a_latin1_byte_is_refused_at_its_line_and_offset(tmp_path, layout, name, subset):
    writer, _ = LAYOUTS[layout]
    overrides, _ = writer(tmp_path / "tree", TRAIN, TEST)
    (path,) = [p for p in annotation_files(tmp_path / "tree") if p.name == name]
    text = path.read_text(encoding="utf-8")
    path.write_bytes(text.encode("latin-1"))
    line = text[: text.index("é")].count("\n") + 1
    offset = text.encode("latin-1").index(b"\xe9")
    with pytest.raises(AnnotationError) as caught:
        read_split(load_config("demo", overrides).data, subset)
    assert (caught.value.file, caught.value.line) == (str(path), line)
    assert str(caught.value) == (
        f"{path}:{line}: not UTF-8 text: byte 0xe9 at byte offset {offset} cannot be decoded; "
        "save the file as UTF-8 (UTF-16 is read too, with a byte-order mark)"
    )


@pytest.mark.parametrize(
    "data, line, problem",
    [
        (b"a 1\r\nb 2\r\nc\xe9 3\r\n", 3, "not UTF-8 text: byte 0xe9 at byte offset 11"),
        (b"a 1\rb\x92 2\r", 2, "byte 0x92 at byte offset 5"),  # old Mac line ends
        (codecs.BOM_UTF8 + b"a\nb\n\xff\n", 3, "not UTF-8 text: byte 0xff at byte offset 7"),
        ("a 1\nb 2".encode("utf-16-le"), 1, "NUL character at byte offset 1 (UTF-16 without"),
        (codecs.BOM_UTF16_LE + "a\nb\nc".encode("utf-16-le") + b"\x00\xd8", 3, "offset 12"),
        (codecs.BOM_UTF16_BE + "a\nb\n".encode("utf-16-be") + b"x", 3, "byte 0x78 at byte"),
        (b"ok\nnul\x00here\n", 2, "NUL character at byte offset 6"),
    ],
)
def test_read_annotation_text_names_the_line_and_offset(tmp_path, data, line, problem):
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    with pytest.raises(AnnotationError) as caught:
        read_annotation_text(path)
    assert (caught.value.file, caught.value.line) == (str(path), line)
    assert problem in caught.value.problem and "save the file as UTF-8" in caught.value.problem


@pytest.mark.parametrize(
    "data",
    [
        "ä 1\r\nb 2\n".encode(),
        "ä 1\r\nb 2\n".encode("utf-8-sig"),
        "ä 1\r\nb 2\n".encode("utf-16"),  # native order, with its mark
        codecs.BOM_UTF16_BE + "ä 1\r\nb 2\n".encode("utf-16-be"),
    ],
)
def test_read_annotation_text_drops_the_mark(tmp_path, data):
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    assert read_annotation_text(path) == "ä 1\r\nb 2\n"
    assert read_annotation_text(str(path)) == "ä 1\r\nb 2\n"


def test_a_missing_file_is_refused_at_line_0(tmp_path):
    with pytest.raises(AnnotationError, match=r"list\.txt:0: annotation file not found"):
        read_annotation_text(tmp_path / "list.txt")


def test_the_cli_stops_a_latin1_list_with_exit_2_before_any_work(tmp_path, capsys):
    writer, _ = LAYOUTS["ucf101"]
    overrides, _ = writer(tmp_path / "tree", TRAIN, TEST)
    train_list = tmp_path / "tree" / "trainlist01.txt"
    text = train_list.read_text(encoding="utf-8").replace("\n", "\r\n")
    train_list.write_bytes(text.encode("latin-1"))  # as a Windows tool may save it
    assert "é" not in "".join(text.splitlines()[:2]) and "é" in text.splitlines()[2]
    offset = text.encode("latin-1").index(b"\xe9")
    data = {key.split(".")[1]: value for key, value in overrides.items()}
    config = tiny_config(tmp_path / "c.yaml", data=data)
    code = main(["check-data", "--config", str(config), "--out", str(tmp_path / "check")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err == (
        f"advise: error: {train_list}:3: not UTF-8 text: byte 0xe9 at byte offset {offset} "
        "cannot be decoded; save the file as UTF-8 (UTF-16 is read too, with a byte-order mark)"
    )
    assert not (tmp_path / "check").exists()


@pytest.mark.parametrize("ascii_only", [False, True])
def test_a_bad_ssv2_label_is_located_whether_or_not_accents_are_escaped(tmp_path, ascii_only):
    labels = tmp_path / "labels.json"
    body = ",\n".join(
        json.dumps(key, ensure_ascii=ascii_only) + f': "{value}"'
        for key, value in (("Bravo something", 0), ("Délta something", "x"), ("Echo", 1))
    )
    labels.write_text("{\n" + body + "\n}\n", encoding="utf-16")
    (tmp_path / "train.json").write_text("[]\n")
    with pytest.raises(AnnotationError) as caught:
        read_ssv2(tmp_path, tmp_path / "train.json", labels_file=labels)
    assert caught.value.line == 3 and "class id of 'Délta something'" in caught.value.problem


def test_a_csv_field_over_the_csv_module_limit_is_refused_at_its_line(tmp_path):
    """Python's csv stops at 128 KiB per field with a message naming no file."""
    from advise.data.formats import read_csv_annotations

    listing = tmp_path / "train.csv"
    listing.write_text("path,label\na.mp4,run\n" + "b" * 200_000 + ".mp4,walk\n")
    with pytest.raises(AnnotationError, match=r"train.csv:3: not a CSV row \(field larger"):
        read_csv_annotations(listing, check_files=False)
