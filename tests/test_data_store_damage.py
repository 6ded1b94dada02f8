"""A damaged feature store: checked when opened, damaged videos skipped by name and counted
against data.max_bad_fraction, a damaged manifest is exit 2 saying how to repair it, and
`advise extract` on the same --out re-extracts exactly what is damaged."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fabricate import tiny_config, ucf_tree
from safetensors.torch import save_file

from advise.cli import main
from advise.config import load_config
from advise.data.store import DamagedStoreWarning, FeatureStore, StoreError, video_file
from advise.data.video import VideoDecodeError
from advise.models.build import build_frozen_ifm
from advise.runs import extract


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return ucf_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture
def config_file(tmp_path, tree) -> Path:
    return tiny_config(tmp_path / "tiny.yaml", data={"root": str(tree)})


@pytest.fixture
def ifm(config_file):
    return build_frozen_ifm(load_config(str(config_file)).ifm, torch.device("cpu"))


def make_store(config_file: Path, out: Path, ifm, dtype: str = "fp16") -> Path:
    return extract(load_config(str(config_file)), out, dtype=dtype, ifm=ifm, progress=False)


def file_times(store: Path) -> dict[str, int]:
    return {str(file.relative_to(store)): file.stat().st_mtime_ns for file in store.rglob("*.npy")}


def train_from(config_file: Path, store: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "--config", str(config_file), "--set", f"data.source=store:{store}",
                 *extra, "--out", str(out)])  # fmt: skip


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_a_cut_token_file_is_skipped_by_name_and_extract_repairs_exactly_it(
    tmp_path, config_file, ifm, dtype, capsys
):
    store = make_store(config_file, tmp_path / "store", ifm, dtype)
    intact = {file: path.read_bytes() for file, path in _files(store).items()}
    victim = store / video_file(2)
    victim.write_bytes(victim.read_bytes()[:-100])  # cut by a full disk or a crash
    with pytest.warns(DamagedStoreWarning, match=r"1 of 10 videos.*0000002\.npy is \d+ bytes"):
        opened = FeatureStore(store)
    assert set(opened.damaged) == {2}
    with pytest.raises(VideoDecodeError, match=r"stored tokens damaged: .*0000002\.npy"):
        opened.read(2, [0])
    assert opened.read(3, [0, 1]).shape[:2] == (1, 2)  # the others read as before

    # training skips it by name, counts it, and keeps going (1 of 6 train videos <= 0.2)
    with pytest.warns(UserWarning, match="stored tokens damaged"):
        assert train_from(config_file, store, tmp_path / "ok", "--set",
                          "data.max_bad_fraction=0.2") == 0  # fmt: skip
    epochs = [json.loads(line) for line in (tmp_path / "ok" / "metrics.jsonl").open()
              if '"kind": "epoch"' in line]  # fmt: skip
    assert epochs and all(epoch["skipped_videos"] == 1 for epoch in epochs)
    # ... unless that is more than data.max_bad_fraction allows: exit 2 at start, naming it
    capsys.readouterr()
    with pytest.warns(DamagedStoreWarning):
        assert train_from(config_file, store, tmp_path / "no", "--set",
                          "data.max_bad_fraction=0") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "0000002.npy" in err and "advise extract" in err and not (tmp_path / "no").exists()

    # extract on the same --out re-extracts that video only, and the store is whole again
    before = file_times(store)
    make_store(config_file, store, ifm, dtype)
    after = file_times(store)
    changed = {file for file in after if after[file] != before.get(file)}
    assert changed == {video_file(2)} | ({video_file(2)[:-4] + ".scale.npy"} if dtype == "int8"
                                          else set())  # fmt: skip
    assert {file: path.read_bytes() for file, path in _files(store).items()} == intact
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DamagedStoreWarning any more
        assert not FeatureStore(store).damaged


def _files(store: Path) -> dict[str, Path]:
    return {str(path.relative_to(store)): path for path in sorted(store.rglob("*.npy"))}


def test_a_manifest_that_promises_more_frames_than_a_file_holds(tmp_path, config_file, ifm):
    store = make_store(config_file, tmp_path / "store", ifm)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["videos"][0]["frames"] += 1  # numpy would say "index 21 is out of bounds"
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="manifest.json does not match its checksum"):
        FeatureStore(store)
    del manifest["sha256"]  # as a manifest of a store extracted before checksums
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(
        DamagedStoreWarning,
        match=r"0000000\.npy holds shape \[1, \d+, 96, 4, 4\], expected 1x\d+x96",
    ):
        opened = FeatureStore(store)
    with pytest.raises(VideoDecodeError, match=r"Left/v_Left_g\d+\.mp4: stored tokens damaged"):
        opened.num_frames(0)


def test_a_missing_int8_scale_file_is_damage(tmp_path, config_file, ifm):
    store = make_store(config_file, tmp_path / "store", ifm, "int8")
    (store / video_file(5)).with_suffix(".scale.npy").unlink()
    with pytest.warns(DamagedStoreWarning, match=r"0000005\.scale\.npy is missing"):
        assert set(FeatureStore(store).damaged) == {5}


def test_a_damaged_manifest_is_exit_2_saying_how_to_repair_it(tmp_path, config_file, ifm, capsys):
    store = make_store(config_file, tmp_path / "store", ifm)
    whole = (store / "manifest.json").read_bytes()
    for damage in (whole[: len(whole) // 2], b"\xff\xfe garbage", b"[1, 2]", b'{"version": 1}'):
        (store / "manifest.json").write_bytes(damage)
        assert train_from(config_file, store, tmp_path / "run") == 2
        err = capsys.readouterr().err
        assert "manifest.json" in err and "Traceback" not in err
        if damage != b"[1, 2]":
            assert "is damaged" in err and f"same --out ({store})" in err
    assert not (tmp_path / "run").exists()
    make_store(config_file, store, ifm)  # repairs it
    assert (store / "manifest.json").read_bytes() == whole
    # a damaged store.json: the intact manifest says what it held, and extract repairs it
    started = (store / "store.json").read_bytes()
    (store / "store.json").write_text("{")
    make_store(config_file, store, ifm)
    assert (store / "store.json").read_bytes() == started
    (store / "store.json").write_text("{")  # with the manifest damaged too, it cannot be known
    (store / "manifest.json").write_text("{")
    with pytest.raises(StoreError, match="store.json is damaged"):
        make_store(config_file, store, ifm)


def test_a_store_refuses_other_ifm_weights(tmp_path, config_file, ifm, capsys):
    """Online, ifm.weights=OTHER is refused by the checkpoint's weights hash; with a store
    the requested weights must be the store's too (they were silently ignored)."""
    own = tmp_path / "own.safetensors"
    save_file({key: value.contiguous() for key, value in ifm.model.state_dict().items()}, own)
    other = tmp_path / "other.safetensors"
    save_file({key: value.contiguous() + 1 for key, value in ifm.model.state_dict().items()}, other)
    from_file = ["--set", "ifm.random_init=false", "--set"]
    config = load_config(str(config_file), ["ifm.random_init=false", f"ifm.weights={own}"])
    store = extract(config, tmp_path / "store", ifm=ifm, progress=False)
    capsys.readouterr()
    assert train_from(config_file, store, tmp_path / "a", *from_file, f"ifm.weights={other}") == 2
    err = capsys.readouterr().err
    assert f"ifm.weights={other}" in err and ifm.weights_hash()[:12] in err
    assert train_from(config_file, store, tmp_path / "b", *from_file, f"ifm.weights={own}") == 0
    # a store of a randomly initialised IFM serves only ifm.random_init=true
    random_store = make_store(config_file, tmp_path / "random", ifm)
    assert train_from(config_file, random_store, tmp_path / "c", *from_file,
                      f"ifm.weights={own}") == 2  # fmt: skip
    assert "randomly initialised IFM, but ifm.random_init=false" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "ac")


def test_non_finite_tokens_are_damage_not_a_score(tmp_path, config_file, ifm):
    """Flipped bits in token data pass the header check; a NaN would train as a NaN loss and
    evaluate as a correct prediction. Reading such tokens is refused, naming the file."""
    store = make_store(config_file, tmp_path / "store", ifm)
    opened = FeatureStore(store)
    file = store / video_file(1)
    tokens = np.load(file)
    tokens[0, 0, 0, 0, 0] = np.nan
    np.save(file, tokens)
    opened = FeatureStore(store)
    with pytest.raises(VideoDecodeError, match=r"0000001\.npy holds non-finite values"):
        opened.read(1, [0, 1])
    assert set(opened.damaged) == {1} and opened.read(2, [0]).isfinite().all()


def test_a_manifest_edit_that_keeps_valid_json_is_refused(tmp_path, config_file, ifm, capsys):
    """Two videos of different classes with their paths swapped: every shape still matches,
    and each would train under the other's label."""
    store = make_store(config_file, tmp_path / "store", ifm)
    manifest = json.loads((store / "manifest.json").read_text())
    first, last = manifest["videos"][0], manifest["videos"][-1]
    assert first["label"] != last["label"]
    first["path"], last["path"] = last["path"], first["path"]
    (store / "manifest.json").write_text(json.dumps(manifest, indent=1))
    assert train_from(config_file, store, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "manifest.json does not match its checksum" in err and "advise extract" in err
