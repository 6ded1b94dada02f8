"""The feature store: extraction equals the online IFM, reads any frames, resumes to an
identical store, refuses a store that does not match, and feeds training and evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fabricate import tiny_config

from advise.cli import main
from advise.config import load_config
from advise.data import loaders
from advise.data import store as store_module
from advise.data.store import (
    FeatureStore,
    StoreError,
    TokenViews,
    TrainTokens,
    quantize_int8,
)
from advise.models.build import build_frozen_ifm
from advise.pretexts import build_pretext
from advise.runs import evaluate_checkpoint, extract, finetune, pretrain


@pytest.fixture
def config(tmp_path, tree):
    return load_config(str(tiny_config(tmp_path / "tiny.yaml", data={"root": str(tree)})))


@pytest.fixture
def ifm(config):
    return build_frozen_ifm(config.ifm, torch.device("cpu"))


def store_files(path: Path) -> dict[str, bytes]:
    return {
        str(file.relative_to(path)): file.read_bytes()
        for file in sorted(path.rglob("*"))
        if file.is_file() and not file.name.startswith("done.")
    }


def test_stored_tokens_are_the_online_tokens(tmp_path, config, ifm):
    out = extract(config, tmp_path / "store", views=3, dtype="fp32", ifm=ifm, progress=False)
    store = FeatureStore(out)
    assert len(store) == 10 and store.spec.views == 3 and store.spec.token_shape == (96, 4, 4)
    # the PRP sampling of the store and of the decoded videos pick the same frames; the
    # centre view's tokens are those the online IFM computes for the centre-crop frames
    split = loaders.read_split(config.data, "train")
    sampler = build_pretext(config).sampler()
    online = loaders.pretext_eval_dataset(config, split, _prep(ifm), None, sampler)
    stored = loaders.pretext_eval_dataset(config, split, None, store, sampler)
    for index in range(len(split.records)):
        frames, tokens = online[index], stored[index]
        assert torch.equal(frames["labels"], tokens["labels"])
        assert (frames["input_kind"], tokens["input_kind"]) == ("frames", "tokens")
        expected = ifm(frames["input"])  # [N, D, T, h, w]
        # equal up to float summation order (the IFM saw other batch sizes)
        torch.testing.assert_close(tokens["input"], expected, rtol=1e-4, atol=1e-5)


def _prep(ifm):
    from advise.data.transforms import Preprocessing

    return Preprocessing(ifm.img_size, ifm.mean, ifm.std, ifm.interpolation)


def test_any_frames_of_any_video_read_back(tmp_path, config, ifm):
    store = FeatureStore(extract(config, tmp_path / "s", dtype="fp16", ifm=ifm, progress=False))
    full = np.load(store.path / store.videos[3]["file"])  # [V, T, D, h, w] fp16
    indices = np.array([5, 0, 23, 5, 11])
    torch.testing.assert_close(store.read(3, indices), torch.from_numpy(full[:, indices]).float())
    assert store.num_frames(3) == full.shape[1] == 24


def test_frame_stride_keeps_every_kth_frame(tmp_path, config, ifm):
    every = FeatureStore(extract(config, tmp_path / "a", dtype="fp32", ifm=ifm, progress=False))
    third = extract(config, tmp_path / "b", frame_stride=3, dtype="fp32", ifm=ifm, progress=False)
    third = FeatureStore(third)
    assert third.num_frames(0) == 8  # frames 0, 3, ..., 21 of 24
    torch.testing.assert_close(third.read(0, range(8)), every.read(0, range(0, 24, 3)))


def test_int8_is_within_half_a_step_of_fp32():
    tokens = np.random.default_rng(0).normal(size=(3, 5, 8, 2, 2)).astype(np.float32)
    quantized, scales = quantize_int8(tokens)
    assert quantized.dtype == np.int8 and scales.shape == (3, 8)
    restored = quantized * scales[:, None, :, None, None]
    assert np.all(np.abs(restored - tokens) <= scales[:, None, :, None, None] / 2 + 1e-7)


def test_a_killed_extraction_resumes_to_an_identical_store(tmp_path, config, ifm, monkeypatch):
    whole = extract(config, tmp_path / "whole", dtype="int8", ifm=ifm, progress=False)
    written = []
    real_write = store_module.write_video_tokens

    def crash_after_four(store, index, tokens, dtype):
        if len(written) == 4:
            raise KeyboardInterrupt("killed")
        written.append(index)
        real_write(store, index, tokens, dtype)

    monkeypatch.setattr("advise.data.store.write_video_tokens", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        extract(config, tmp_path / "resumed", dtype="int8", ifm=ifm, progress=False)
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    with pytest.raises(StoreError, match="extraction has not finished"):
        FeatureStore(tmp_path / "resumed")
    (tmp_path / "resumed" / "videos" / ".0000004.npy.123.tmp").write_bytes(b"half")
    monkeypatch.undo()
    extract(config, tmp_path / "resumed", dtype="int8", ifm=ifm, progress=False)
    assert store_files(tmp_path / "resumed") == store_files(whole)
    with pytest.raises(StoreError, match="other settings.*dtype"):
        extract(config, tmp_path / "resumed", dtype="fp16", ifm=ifm, progress=False)


def test_token_transforms():
    tokens = torch.arange(3 * 4 * 2 * 3 * 3, dtype=torch.float32).view(3, 4, 2, 3, 3)
    views = TokenViews(3)(tokens)
    assert views.shape == (3, 2, 4, 3, 3) and torch.equal(views[1], tokens[1].transpose(0, 1))
    assert torch.equal(TokenViews(1)(tokens)[0], tokens[1].transpose(0, 1))  # the centre view
    torch.manual_seed(0)
    flipped = {bool(torch.equal(TrainTokens(flip=True)(tokens[:1]), tokens[0].transpose(0, 1)))
               for _ in range(20)}  # fmt: skip
    assert flipped == {True, False}  # flips about half the time
    cropped = TrainTokens(flip=False, scale_min=0.3)(tokens)
    assert cropped.shape == (2, 4, 3, 3)


def test_training_and_evaluation_from_the_store(tmp_path, config, ifm, capsys):
    out = extract(config, tmp_path / "store", views=3, dtype="fp16", ifm=ifm, progress=False)
    from_store = config.replace({"data.source": f"store:{out}"})
    prp = pretrain(from_store, tmp_path / "prp")
    ft = finetune(from_store, tmp_path / "ft", init=prp.checkpoint)
    stored = evaluate_checkpoint(from_store, ft.checkpoint, views=(2, 3))
    online = evaluate_checkpoint(config, ft.checkpoint, views=(2, 3), ifm=ifm)  # same IFM hash
    assert stored["ifm"]["features"] == f"store:{out}" and online["ifm"]["features"] == "online"
    assert stored["num_videos"] == online["num_videos"] == 4
    assert abs(stored["top1"] - online["top1"]) <= 25.0  # fp16 tokens: at most one video apart
    _, state = __import__("advise.train.checkpoint", fromlist=["x"]).load_checkpoint(ft.checkpoint)
    assert state["ifm"]["weights_hash"] == ifm.weights_hash()


def test_a_store_that_does_not_match_is_refused(tmp_path, config, ifm, capsys):
    out = extract(config, tmp_path / "store", views=1, ifm=ifm, progress=False)
    from_store = config.replace({"data.source": f"store:{out}"})
    prp = pretrain(from_store, tmp_path / "prp")
    ft = finetune(from_store, tmp_path / "ft", init=prp.checkpoint)
    with pytest.raises(StoreError, match="views: store 1, the config needs 3"):
        evaluate_checkpoint(from_store, ft.checkpoint, views=(1, 3))
    with pytest.raises(StoreError, match="img_size: store 32, the config 64"):
        pretrain(from_store.replace({"ifm.img_size": 64}), tmp_path / "other")
    pooled = extract(config.replace({"sfu.spatial": 2}), tmp_path / "pooled", pool=True, ifm=ifm,
                     progress=False)  # fmt: skip
    assert FeatureStore(pooled).spec.token_shape == (96, 2, 2)
    with pytest.raises(StoreError, match="spatial: store 2, the config None"):
        pretrain(config.replace({"data.source": f"store:{pooled}"}), tmp_path / "p2")
    with pytest.raises(StoreError, match="not a feature store"):
        pretrain(config.replace({"data.source": f"store:{tmp_path}"}), tmp_path / "p3")
    # through the command line: exit 2 with the message
    cfg_file = tiny_config(tmp_path / "c.yaml", data={"root": config.data.root,
                           "source": f"store:{out}"}, ifm={"img_size": 64})  # fmt: skip
    assert main(["pretrain", "--config", str(cfg_file), "--out", str(tmp_path / "p4")]) == 2
    assert "does not match the config" in capsys.readouterr().err


def test_extract_command(tmp_path, tree, capsys):
    cfg = tiny_config(tmp_path / "tiny.yaml", data={"root": str(tree)})
    out = tmp_path / "store"
    assert main(["extract", "--config", str(cfg), "--out", str(out), "--dtype", "int8"]) == 0
    assert f"data.source=store:{out}" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["dtype"] == "int8" and len(manifest["videos"]) == 10
    assert (out / manifest["videos"][0]["file"]).with_suffix(".scale.npy").is_file()


def test_a_store_moves_with_its_tree_and_refuses_a_split_it_lacks(
    tmp_path, tree, ifm, monkeypatch, capsys
):
    # extracted with a relative data root: the store records it absolute
    shutil.copytree(tree, tmp_path / "a" / "tree")
    monkeypatch.chdir(tmp_path / "a")
    relative = load_config(str(tiny_config(tmp_path / "rel.yaml", data={"root": "tree"})))
    extract(relative, Path("store"), subset="train", ifm=ifm, progress=False)
    manifest = json.loads((tmp_path / "a" / "store" / "manifest.json").read_text())
    assert manifest["data_root"] == str(tmp_path / "a" / "tree")
    # the tree and its store move together, and are used from another working directory
    (tmp_path / "a").rename(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    root, out = tmp_path / "b" / "tree", tmp_path / "b" / "store"
    moved = relative.replace({"data.root": str(root), "data.source": f"store:{out}"})
    prp = pretrain(moved, tmp_path / "prp")
    ft = finetune(moved, tmp_path / "ft", init=prp.checkpoint)
    # the test split was never extracted: refused at start, not evaluated as 0 videos
    with pytest.raises(StoreError, match="lacks 4 of the 4 videos"):
        evaluate_checkpoint(moved, ft.checkpoint)
    config_file = tiny_config(tmp_path / "moved.yaml", data={"root": str(root),
                              "source": f"store:{out}"})  # fmt: skip
    assert main(["evaluate", "--config", str(config_file), "--ckpt", str(ft.checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "lacks 4 of the 4 videos" in err and "advise extract --subset" in err


def _all_tokens(store: Path) -> list[np.ndarray]:
    opened = FeatureStore(store)
    return [np.load(store / entry["file"]) for entry in opened.videos]


def test_a_pairs_store_joins_its_parts_stores_bit_for_bit(tmp_path, config, monkeypatch):
    """A concatenated IFM's store made from its parts' stores holds, bit for bit, what
    running the pair gives (the parts see the same frames on the same grid); where a part
    store does not fit (another dtype here), the pair runs as ever."""
    import advise.runs as runs

    pair_config = config.replace({"ifm.name": "mini+mini-vit"})
    pair = build_frozen_ifm(pair_config.ifm, torch.device("cpu"))
    parts = []
    for part in pair.parts:
        part_config = config.replace({"ifm.name": part.name})
        parts.append(extract(part_config, tmp_path / part.name, dtype="fp32", ifm=part,
                             progress=False))  # fmt: skip
    direct = extract(pair_config, tmp_path / "direct", dtype="fp32", ifm=pair, progress=False)
    ran = []
    store_videos = runs._store_videos
    monkeypatch.setattr(runs, "_store_videos", lambda *a: ran.append(len(a[3])) or store_videos(*a))
    joined = extract(pair_config, tmp_path / "joined", dtype="fp32", ifm=pair, progress=False,
                     parts=parts)  # fmt: skip
    assert ran == [0]  # the IFM encoded nothing
    assert FeatureStore(joined).spec == FeatureStore(direct).spec
    assert FeatureStore(joined).videos == FeatureStore(direct).videos
    for a, b in zip(_all_tokens(joined), _all_tokens(direct), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    damaged = parts[1] / FeatureStore(parts[1]).videos[0]["file"]  # a part's video damaged:
    tokens = np.load(damaged)  # the IFM encodes that one, the rest are joined
    tokens[0, 0, 0, 0, 0] = np.nan
    np.save(damaged, tokens)
    mended = extract(pair_config, tmp_path / "mended", dtype="fp32", ifm=pair, progress=False,
                     parts=parts)  # fmt: skip
    assert ran[-1] == 1 and FeatureStore(mended).videos == FeatureStore(direct).videos
    for a, b in zip(_all_tokens(mended), _all_tokens(direct), strict=True):
        assert np.array_equal(a, b)
    fp16 = extract(config.replace({"ifm.name": pair.parts[1].name}), tmp_path / "fp16",
                   dtype="fp16", ifm=pair.parts[1], progress=False)  # fmt: skip
    extract(pair_config, tmp_path / "ran", dtype="fp32", ifm=pair, progress=False,
            parts=[parts[0], fp16])  # fmt: skip
    assert ran[-1] == len(FeatureStore(direct).videos)  # every video encoded


def test_two_frame_ranges_of_one_file_are_two_videos_of_a_store(tmp_path, monkeypatch):
    """A store finds a video by its file and frame range: two ranges of one file are stored
    and read as two videos (each its own frames), a range never extracted is missing (also
    the whole file), and a pair's part store of other ranges is not joined."""
    from fabricate import dataset_tree

    import advise.runs as runs
    from advise.data.formats import VideoRecord
    from advise.data.sources import StoreSource

    overrides = dataset_tree("diving48", tmp_path / "tree")
    annotations = Path(str(overrides["data.annotations"]))
    entries = json.loads(annotations.read_text())
    name = entries[0]["vid_name"]
    entries[0].update(start_frame=0, end_frame=9)  # (inclusive ends) frames [0, 10)
    entries.append({"vid_name": name, "label": 1, "start_frame": 10, "end_frame": 19})
    annotations.write_text(json.dumps(entries))
    config = load_config(str(tiny_config(tmp_path / "tiny.yaml")), overrides)
    ifm = build_frozen_ifm(config.ifm, torch.device("cpu"))
    path = extract(config, tmp_path / "store", dtype="fp32", ifm=ifm, progress=False)
    store = FeatureStore(path)
    records = loaders.read_split(config.data, "train").records
    first, second = records[0], records[-1]
    assert first.path == second.path and (first.start_frame, second.start_frame) == (0, 10)
    indices = [store.index_of_record(record) for record in records]
    assert None not in indices and len(set(indices)) == len(records)
    assert store.num_frames(indices[0]) == store.num_frames(indices[-1]) == 10
    source = StoreSource(store, [first, second])
    frames = [np.arange(10)]
    assert not torch.equal(source.read(0, frames)[0], source.read(1, frames)[0])
    for other in (VideoRecord(first.path, 0), VideoRecord(first.path, 0, 0, 5)):
        assert store.index_of_record(other) is None
    store.check_covers(records, 0.0)  # every record found
    with pytest.raises(StoreError, match=r"lacks 1 of the.*1 of them are stored with other"):
        store.check_covers([*records, VideoRecord(first.path, 0, 0, 5)], 0.0)

    pair_config = config.replace({"ifm.name": "mini+mini-vit", "ifm.img_size": 64})
    pair = build_frozen_ifm(pair_config.ifm, torch.device("cpu"))
    parts = [extract(pair_config.replace({"ifm.name": part.name}), tmp_path / part.name,
                     dtype="fp32", ifm=part, progress=False) for part in pair.parts]  # fmt: skip
    entries[-1].update(start_frame=11)  # the pair's records: another range of the file
    annotations.write_text(json.dumps(entries))
    ran = []
    store_videos = runs._store_videos
    monkeypatch.setattr(runs, "_store_videos", lambda *a: ran.append(len(a[3])) or store_videos(*a))
    extract(pair_config, tmp_path / "pair", dtype="fp32", ifm=pair, progress=False, parts=parts)
    assert ran == [len(FeatureStore(tmp_path / "pair").videos)]  # not joined: every video encoded


def _killed(*args):
    raise KeyboardInterrupt


def test_a_store_extracted_again_with_other_videos_never_lists_a_file_under_another(
    tmp_path, config, ifm, monkeypatch
):
    """Extracting into a store again with another list of videos (another subset first, an
    edited annotation list) keeps the files of videos still at their index and extracts
    the rest again: every video's tokens are those of a store extracted in one go (a test
    subset extracted first used to leave its tokens listed under train videos' names)."""
    import advise.runs as runs

    encoded = []
    store_videos = runs._store_videos
    monkeypatch.setattr(
        runs, "_store_videos", lambda *a: encoded.append(len(a[3])) or store_videos(*a)
    )

    def tokens_by_video(path: Path) -> dict[str, np.ndarray]:
        opened = FeatureStore(path)
        return {entry["path"]: np.load(path / entry["file"]) for entry in opened.videos}

    fresh = tokens_by_video(extract(config, tmp_path / "fresh", dtype="fp32", ifm=ifm,
                                    progress=False))  # fmt: skip
    tests = len(loaders.read_split(config.data, "test").records)
    for first, again in (("train", tests), ("test", len(fresh))):  # train videos come first
        out = tmp_path / f"{first}-first"
        extract(config, out, dtype="fp32", ifm=ifm, progress=False, subset=first)
        monkeypatch.setattr(runs, "_store_videos", _killed)  # (before encoding: killed)
        with pytest.raises(KeyboardInterrupt):
            extract(config, out, dtype="fp32", ifm=ifm, progress=False)
        if first == "test":  # no manifest lists a moved video's file under its old name
            with pytest.raises(StoreError, match="not finished"):
                FeatureStore(out)
        monkeypatch.setattr(
            runs, "_store_videos", lambda *a: encoded.append(len(a[3])) or store_videos(*a)
        )
        extract(config, out, dtype="fp32", ifm=ifm, progress=False)
        assert encoded[-1] == again  # train first: the train videos kept their files
        resumed = tokens_by_video(out)
        assert resumed.keys() == fresh.keys()
        for video, tokens in fresh.items():
            assert np.array_equal(resumed[video], tokens), video
