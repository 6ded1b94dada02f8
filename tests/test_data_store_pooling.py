"""SFU pooling of stored tokens as they are read: a store extracted without --pool serves every
`sfu.spatial` / `sfu.channels`, with the tokens (fp32: bit for bit) and the training a store
extracted with that pooling gives; a store extracted with --pool serves only its own pooling."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fabricate import tiny_config

from advise.cli import main
from advise.config import load_config
from advise.data import loaders
from advise.data.datasets import SkippedVideoWarning, collate_clips
from advise.data.sources import StoreSource
from advise.data.store import FeatureStore, StoreError
from advise.models.build import build_frozen_ifm
from advise.models.sfu import SFU
from advise.pretexts import build_pretext
from advise.runs import evaluate_checkpoint, extract, finetune
from advise.train.checkpoint import load_checkpoint


@pytest.fixture
def config(tmp_path, tree):
    return load_config(str(tiny_config(tmp_path / "tiny.yaml", data={"root": str(tree)})))


@pytest.fixture
def ifm(config):
    return build_frozen_ifm(config.ifm, torch.device("cpu"))


def _pooled(config, spatial: int | None, channels: int | None):
    return config.replace({"sfu.spatial": spatial, "sfu.channels": channels})


def _test_inputs(config, store: Path, in_memory: bool = False) -> list[torch.Tensor]:
    """Every test clip's tokens [S, D, T, h, w], as an evaluation from `store` reads them."""
    from_store = config.replace({"data.source": f"store:{store}", "data.in_memory": in_memory})
    split = loaders.read_split(from_store.data, "test")
    dataset = loaders.eval_dataset(from_store, split, None, 2, 3, FeatureStore(store))
    return [dataset[index]["input"] for index in range(len(dataset))]


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ((None, None), (2, None)),
        ((None, None), (None, 48)),
        ((None, None), (2, 32)),
        ((None, None), (3, 48)),  # 3 does not divide the 4 x 4 grid: overlapping windows
        ((2, None), (2, 48)),  # the store pooled space, the reader pools channels
    ],
)
@pytest.mark.parametrize("in_memory", [False, True])
def test_pooling_as_read_gives_the_tokens_of_pooling_before_storing(
    tmp_path, config, ifm, stored, asked, in_memory
):
    """Also when held in memory: each video pooled whole once, clips cut from it."""
    source = extract(_pooled(config, *stored), tmp_path / "source", views=3, dtype="fp32",
                     pool=stored != (None, None), ifm=ifm, progress=False)  # fmt: skip
    wanted = _pooled(config, *asked)
    reference = extract(wanted, tmp_path / "ref", views=3, dtype="fp32", pool=True, ifm=ifm,
                        progress=False)  # fmt: skip
    pooled_as_read = _test_inputs(wanted, source, in_memory)
    pooled_before = _test_inputs(wanted, reference)
    dim, size = asked[1] or 96, asked[0] or 4
    assert pooled_as_read[0].shape == (6, dim, 4, size, size)  # 2 clips x 3 crops, c, T, s, s
    for read, before in zip(pooled_as_read, pooled_before, strict=True):
        assert torch.equal(read, before)  # fp32: the same sums in the same order
        assert read.is_contiguous(memory_format=torch.channels_last_3d)  # the TMM's CPU layout


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_tokens_held_in_memory_train_on_the_clips_read_from_disk_in_the_tmm_layout(
    tmp_path, config, ifm, stage
):
    """Every training clip held in memory equals its read from the store's files, epoch after
    epoch; batches come channels last (the TMM's layout on a CPU: no copy a step) and never
    share memory with the tokens kept, so changing a batch changes no later read."""
    store = extract(config, tmp_path / "store", views=3, dtype="fp32", ifm=ifm, progress=False)
    opened = FeatureStore(store)

    def dataset(in_memory: bool):
        configured = config.replace(
            {"data.source": f"store:{store}", "data.in_memory": in_memory, "sfu.channels": 48}
        )
        split = loaders.read_split(configured.data, "train")
        if stage == "finetune":
            return loaders.finetune_dataset(configured, split, None, opened)
        sampler = build_pretext(configured).sampler()
        return loaders.pretrain_dataset(configured, split, None, opened, sampler)

    from_disk, in_memory = dataset(False), dataset(True)
    batches = []
    for epoch in range(2):
        for each in (from_disk, in_memory):
            each.set_epoch(epoch)
        items = [in_memory[index] for index in range(len(in_memory))]
        for index, item in enumerate(items):
            assert torch.equal(item["input"], from_disk[index]["input"])
            assert torch.equal(item["labels"], from_disk[index]["labels"])
        batch = collate_clips(items)
        assert batch["input"].shape[1] == 48
        assert batch["input"].is_contiguous(memory_format=torch.channels_last_3d)
        batches.append(batch["input"].clone())
        batch["input"].zero_()
        for item in items:
            item["input"].zero_()
    in_memory.set_epoch(0)
    again = collate_clips([in_memory[index] for index in range(len(in_memory))])["input"]
    assert torch.equal(again, batches[0])


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_a_rounded_store_pools_within_one_step_of_pooling_before_storing(
    tmp_path, config, ifm, dtype
):
    """fp16 and int8 stores round before pooling instead of after: |difference| <= one step
    (fp16: the spacing at the pooled block's largest |value|; int8: half the largest scale
    of the block's channels in the whole store plus half the pooled store's scale)."""
    wanted = _pooled(config, 2, 48)
    full = FeatureStore(extract(config, tmp_path / "full", dtype=dtype, ifm=ifm, progress=False))
    reference = FeatureStore(extract(wanted, tmp_path / "ref", dtype=dtype, pool=True, ifm=ifm,
                                     progress=False))  # fmt: skip
    records = [record for subset in ("train", "test")
               for record in loaders.read_split(config.data, subset).records]  # fmt: skip
    source = StoreSource(full, records, pool=SFU(2, 48))  # what a run with sfu (2, 48) reads
    differences = []
    for position, record in enumerate(records):
        index = full.index_of(record.path)
        frames = np.arange(full.num_frames(index))
        tokens = full.read(index, frames)  # [V, T, D, h, w]
        read = source.read(position, [frames])[0]  # [V, T, c, s, s]
        before = reference.read(reference.index_of(record.path), frames)
        if dtype == "fp16":  # the spacing at each pooled block's largest |value|
            blocks = tokens.abs().reshape(*tokens.shape[:2], 48, 2, 2, 2, 2, 2)
            peak = blocks.amax(dim=(3, 5, 7))  # [V, T, 48, 2, 2]
            step = torch.from_numpy(np.spacing(peak.half().numpy()).astype(np.float32))
        else:
            whole_scales, pooled_scales = (
                torch.from_numpy(np.load(store.path / f"videos/{index:07d}.scale.npy"))
                for store in (full, reference)
            )  # [V, 96], [V, 48]
            block_scales = whole_scales.reshape(-1, 48, 2).amax(dim=2)  # [V, 48]
            step = ((block_scales + pooled_scales) / 2)[:, None, :, None, None]
        assert torch.all((read - before).abs() <= step * 1.0001)
        differences.append(float((read - before).abs().max()))
    assert max(differences) > 0  # rounded stores do differ: not bit for bit


@pytest.mark.parametrize("in_memory", [False, True])
def test_finetuning_from_a_whole_store_equals_finetuning_from_a_pooled_one(
    tmp_path, config, ifm, in_memory
):
    """Bit-identical checkpoints: with the grid crop and flip on (they act on the pooled grid
    in both runs, so pooling must happen before them) and three stored views; and with the
    whole store held in memory (read in this process, no data workers)."""
    augmented = config.replace({"data.flip": True, "data.scale_min": 0.5})
    wanted = _pooled(augmented, 2, 48)
    whole = extract(augmented, tmp_path / "whole", views=3, dtype="fp32", ifm=ifm, progress=False)
    pooled = extract(wanted, tmp_path / "pooled", views=3, dtype="fp32", pool=True, ifm=ifm,
                     progress=False)  # fmt: skip
    assert FeatureStore(whole).spec.token_shape == (96, 4, 4)
    assert FeatureStore(pooled).spec.token_shape == (48, 2, 2)
    runs = {}
    for name, store in (("whole", whole), ("pooled", pooled)):
        kept = in_memory and name == "whole"
        from_store = wanted.replace({"data.source": f"store:{store}", "data.in_memory": kept})
        result = finetune(from_store, tmp_path / f"ft-{name}")
        tensors, _ = load_checkpoint(result.checkpoint)
        scores = evaluate_checkpoint(from_store, result.checkpoint, views=(2, 3))
        runs[name] = tensors, scores
    (whole_tensors, whole_scores), (pooled_tensors, pooled_scores) = runs["whole"], runs["pooled"]
    assert whole_tensors.keys() == pooled_tensors.keys() and len(whole_tensors) > 0
    for key, value in whole_tensors.items():
        assert torch.equal(value, pooled_tensors[key]), key
    assert whole_tensors["model.tmm.blocks.0.temporal.0.weight"].shape[1] == 48  # 48 channels in
    assert (whole_scores["top1"], whole_scores["num_videos"]) == (
        pooled_scores["top1"], pooled_scores["num_videos"]
    )  # fmt: skip


def test_a_pooled_store_is_refused_for_another_pooling(tmp_path, config, ifm, capsys):
    pooled = extract(_pooled(config, 2, None), tmp_path / "pooled", pool=True, ifm=ifm,
                     progress=False)  # fmt: skip
    for spatial, channels in ((None, None), (1, None), (1, 48)):
        asked = _pooled(config, spatial, channels).replace({"data.source": f"store:{pooled}"})
        with pytest.raises(StoreError) as refused:
            finetune(asked, tmp_path / f"ft-{spatial}-{channels}")
        message = str(refused.value)
        assert f"sfu.spatial: store 2, the config {spatial}" in message
        assert "extracted with --pool: its tokens are pooled to sfu.spatial=2" in message
        assert "a store extracted without --pool serves any sfu.spatial" in message
        assert "sfu.channels" not in message  # the store kept channels whole: pooled as read
    # a whole store serves any pooling that fits its 4 x 4 grid and 96 channels
    whole = extract(config, tmp_path / "whole", ifm=ifm, progress=False)
    for override, expected in (("sfu.spatial", "sfu.spatial: the config 5 exceeds the store's "
                                "4x4 token grid"),
                               ("sfu.channels", "sfu.channels: the config 97 exceeds the "
                                "store's 96 channels")):  # fmt: skip
        value = 5 if override == "sfu.spatial" else 97
        asked = config.replace({override: value, "data.source": f"store:{whole}"})
        with pytest.raises(StoreError, match=expected):
            finetune(asked, tmp_path / f"ft-{override}")
    # through the command line: exit 2 with the message
    cfg_file = tiny_config(tmp_path / "c.yaml", data={"root": config.data.root,
                           "source": f"store:{pooled}"}, sfu={"spatial": 1})  # fmt: skip
    assert main(["finetune", "--config", str(cfg_file), "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err
    assert "does not match the config" in err and "sfu.spatial: store 2, the config 1" in err


def test_a_damaged_video_held_in_memory_is_refused_at_every_read(tmp_path, config, ifm):
    """A video whose stored tokens turn out non-finite is never kept: every read of it raises,
    as it does without in_memory, and the other videos are read and kept."""
    from advise.data.video import VideoDecodeError

    store = FeatureStore(extract(config, tmp_path / "store", dtype="fp32", ifm=ifm, progress=False))
    records = loaders.read_split(config.data, "train").records
    broken = store.path / "videos" / f"{store.index_of(records[0].path):07d}.npy"
    tokens = np.load(broken)
    tokens[0, 1, 0, 0, 0] = np.nan
    np.save(broken, tokens)
    source = StoreSource(FeatureStore(store.path), records, pool=SFU(2, None), in_memory=True)
    for _ in range(2):
        with pytest.raises(VideoDecodeError, match="non-finite"):
            source.read(0, [np.arange(2)])
    clip = source.read(1, [np.array([0, 2])])[0]
    assert clip.shape[1:3] == (2, 96) and list(source.kept) == [store.index_of(records[1].path)]


@pytest.mark.parametrize(
    ("stage", "views", "augment"),
    [
        ("pretrain", 3, False),
        ("pretrain", 1, False),
        ("finetune", 3, False),
        ("finetune", 3, True),  # crops and flips, applied after gathering the views drawn
        ("finetune", 1, True),
        ("test-centre", 3, False),
        ("test-all", 3, False),
        ("pretext-measure", 3, False),
    ],
)
def test_a_batch_gathered_from_memory_is_the_batch_of_its_items(
    tmp_path, config, ifm, stage, views, augment
):
    """Tokens held in memory come as one batch, the views drawn gathered in one copy (then
    cropped and flipped as drawn): bit for bit the batch `collate_clips` makes of the items one
    by one (the same draws, the same layout), sharing no memory with the tokens kept."""
    store = extract(config, tmp_path / "store", views=views, dtype="fp32", ifm=ifm,
                    progress=False)  # fmt: skip
    for file in (store / "videos").glob("*.npy"):  # views that differ (square frames give
        tokens = np.load(file)  # the same three crops), so picking the wrong one shows
        np.save(file, tokens + np.arange(views, dtype=tokens.dtype)[:, None, None, None, None])
    configured = config.replace(
        {"data.source": f"store:{store}", "data.in_memory": True, "sfu.channels": 48,
         "data.flip": augment, "data.scale_min": 0.5 if augment else 1.0}
    )  # fmt: skip
    opened = FeatureStore(store)
    subset = "test" if stage.startswith("test") else "train"
    split = loaders.read_split(configured.data, subset)
    sampler = build_pretext(configured).sampler()
    if stage == "pretrain":
        dataset = loaders.pretrain_dataset(configured, split, None, opened, sampler)
    elif stage == "pretext-measure":
        dataset = loaders.pretext_eval_dataset(configured, split, None, opened, sampler)
    elif stage == "finetune":
        dataset = loaders.finetune_dataset(configured, split, None, opened)
    else:
        crops = 1 if stage == "test-centre" else views
        dataset = loaders.eval_dataset(configured, split, None, 2, crops, opened)
    indices = [2, 0, 3, 1]
    for epoch in range(2):
        dataset.set_epoch(epoch)
        gathered = dataset.__getitems__(indices)
        assert len(gathered) == 1  # one batch gathered whole
        batch = collate_clips(gathered)
        _assert_same_batch(batch, collate_clips([dataset[index] for index in indices]), True)
        assert batch["input"].is_contiguous(memory_format=torch.channels_last_3d)
        kept = batch["input"].clone()
        batch["input"].zero_()
        assert torch.equal(collate_clips(dataset.__getitems__(indices))["input"], kept)


def _second_video_elsewhere(split, tmp_path: Path):
    """The split with its second video's file moved out of the store's reach."""
    records = list(split.records)
    records[1] = replace(records[1], path=tmp_path / "elsewhere.mp4")
    return replace(split, records=records)


def _assert_same_batch(batch: dict, reference: dict, strides: bool = False) -> None:
    assert batch.keys() == reference.keys()
    for key, value in reference.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(batch[key], value), key
            assert not strides or batch[key].stride() == value.stride(), key
        else:
            assert batch[key] == value, key


def test_a_batch_with_a_video_the_store_lacks_skips_it_as_the_items_do(tmp_path, config, ifm):
    store = extract(config, tmp_path / "store", views=1, dtype="fp32", ifm=ifm, progress=False)
    configured = config.replace(
        {"data.source": f"store:{store}", "data.in_memory": True, "data.flip": False,
         "data.scale_min": 1.0, "data.max_bad_fraction": 0.5}
    )  # fmt: skip
    split = _second_video_elsewhere(loaders.read_split(configured.data, "train"), tmp_path)
    dataset = loaders.finetune_dataset(configured, split, None, FeatureStore(store))
    with pytest.warns(SkippedVideoWarning, match="not in the feature store"):
        batch = collate_clips(dataset.__getitems__([0, 1, 2]))
    assert batch["skipped"] == 1 and batch["index"].tolist() == [0, 2]
    assert torch.equal(batch["input"], collate_clips([dataset[0], dataset[2]])["input"])


@pytest.mark.parametrize("lacking", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_prefetched_batches_are_the_dataloaders_batch_for_batch(
    tmp_path, config, ifm, monkeypatch, lacking, drop_last
):
    """Training batches of tokens held in memory are gathered in a thread, one batch ahead:
    the very batches a DataLoader without workers makes (same chunks of the sampler's order,
    same draws, crops and flips), epoch after epoch. A batch with a video the store lacks is
    made item by item in the caller's thread (items seed torch's global generator), which
    ends as it began."""
    import threading
    import warnings

    from advise.data.datasets import ClipDataset, PrefetchedBatches, loader_batches
    from advise.train.engine import EpochSampler

    store = extract(config, tmp_path / "store", views=3, dtype="fp32", ifm=ifm, progress=False)
    configured = config.replace(
        {"data.source": f"store:{store}", "data.in_memory": True, "data.flip": True,
         "data.scale_min": 0.5, "data.max_bad_fraction": 0.5}
    )  # fmt: skip
    split = loaders.read_split(configured.data, "train")
    if lacking:
        split = _second_video_elsewhere(split, tmp_path)
    dataset = loaders.finetune_dataset(configured, split, None, FeatureStore(store))
    threads: dict[str, set[str]] = {"gather": set(), "item": set()}
    gather, item = ClipDataset.gather, ClipDataset.__getitem__

    def noting(kind, method):
        def noted(self, argument):
            threads[kind].add(threading.current_thread().name)
            return method(self, argument)

        return noted

    monkeypatch.setattr(ClipDataset, "gather", noting("gather", gather))
    monkeypatch.setattr(ClipDataset, "__getitem__", noting("item", item))
    sampler = EpochSampler(len(dataset), seed=3)
    batch_size = 4  # 6 videos: a last batch of 2, dropped with drop_last
    fell_back = False
    for epoch in range(3):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SkippedVideoWarning)
            reference = list(
                torch.utils.data.DataLoader(
                    dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                    collate_fn=collate_clips,
                )
            )  # fmt: skip
            threads["gather"].clear()
            state = torch.get_rng_state()
            batches = loader_batches(dataset, sampler, batch_size, drop_last)
            assert isinstance(batches, PrefetchedBatches)
            prefetched = list(batches)
        assert torch.equal(torch.get_rng_state(), state)
        assert len(prefetched) == len(reference) == len(batches) == (1 if drop_last else 2)
        for batch, expected in zip(prefetched, reference, strict=True):
            _assert_same_batch(batch, expected)
        fell_back |= any(batch["skipped"] for batch in reference)
        main = threading.current_thread().name
        assert threads["gather"] and main not in threads["gather"]
    assert fell_back == lacking  # (video 1 is in a batch kept in some epoch)
    assert threads["item"] == ({threading.current_thread().name} if lacking else set())
