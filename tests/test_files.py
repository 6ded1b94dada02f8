"""`atomic_write`: the one way advise replaces a file that must never be read half-written."""

from __future__ import annotations

import os

import pytest

from advise.files import atomic_write


def test_writes_text_and_bytes_and_replaces(tmp_path):
    path = tmp_path / "record.json"
    atomic_write(path, '{"é": 1}')
    assert path.read_text(encoding="utf-8") == '{"é": 1}'
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_write(path, memoryview(b"view"))
    assert path.read_bytes() == b"view"
    assert os.listdir(tmp_path) == ["record.json"]  # no temporary file left


def test_a_failed_rename_keeps_the_old_content_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    atomic_write(path, "old")

    def crash(source, target):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_permissions_are_those_of_a_plain_write(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "atomic", "x")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(umask)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in ("atomic", "plain")}
    assert modes["atomic"] == modes["plain"] == 0o644
