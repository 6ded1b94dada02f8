"""The dataset formats are one table (`advise.data.formats.FORMATS`): the config offers exactly
its names, and what it says about a format (the files defining the labels, numbered splits)
is what a run's data manifest records."""

from __future__ import annotations

from pathlib import Path

import pytest
from fabricate import FORMATS as FABRICATED
from fabricate import dataset_tree

from advise.config import CHOICES, load_config
from advise.data.formats import FORMATS
from advise.data.loaders import read_split
from advise.provenance import data_manifest


def test_the_config_offers_exactly_the_table_formats():
    assert CHOICES["data.format"] == tuple(FORMATS)
    assert set(FABRICATED) == set(FORMATS)  # the tests below fabricate every format


# the files beside the annotations that define each format's labels, as fabricated
LABEL_FILES = {
    "ucf101": {"classInd.txt"},
    "hmdb51": set(),
    "diving48": {"Diving48_vocab.json"},
    "ssv2": {"labels.json"},
    "k400": set(),
    "csv": set(),
    "folders": set(),  # the class folders define the labels
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_the_manifest_hashes_the_files_that_define_the_labels(tmp_path, name):
    config = load_config("demo", dataset_tree(name, tmp_path / name))
    split = read_split(config.data, "train")
    manifest = data_manifest(config, split)
    read = {file for file, _ in split.origins} | {split.source}
    hashed = set(manifest["annotation_sha256"])
    assert {Path(file).name for file in hashed - read} == LABEL_FILES[name]
    assert LABEL_FILES[name] <= set(FORMATS[name].label_files)
    assert manifest["format"] == name
    assert manifest["split"] == (1 if FORMATS[name].splits else None)
