"""What each command does: build the parts from a config, call the loop, write the run folder.

`cli.py` only parses arguments and calls these; the demo calls them too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advise import __version__
from advise.config import Config, ConfigError, from_dict, parse_override, save_config
from advise.data import loaders
from advise.data.check import read_quarantine
from advise.data.formats import SSV2_LABEL_FILES, AnnotatedSplit
from advise.data.store import FeatureStore, StoreError, StoreSpec, encode_views
from advise.data.transforms import Preprocessing
from advise.models.advise import AdViSe
from advise.models.build import build_frozen_ifm, build_model, resolve_precision
from advise.models.cost import count_macs, count_params
from advise.models.ifm import CombinedIFM, FrozenIFM, build_ifm
from advise.pretexts import Pretext, build_pretext
from advise.report import plot_confusion
from advise.train import distributed
from advise.train.checkpoint import (
    CheckpointError,
    check_architecture,
    load_checkpoint,
    model_tensors,
)
from advise.train.engine import TrainResult, evaluate, resolve_device, train
from advise.train.metrics import (
    AccuracyMeter,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
)
from advise.train.tasks import ActionTask, forward_batch

CHECKPOINT = Path("checkpoints") / "last"


@dataclass
class Setup:
    """What every command needs before it starts: device, and where tokens come from: the
    frozen IFM (online) or a feature store (`data.source=store:PATH`, no IFM built)."""

    config: Config
    device: torch.device
    ifm: FrozenIFM | CombinedIFM | None
    store: FeatureStore | None = None

    @property
    def preprocessing(self) -> Preprocessing:
        """Size, mean/std and interpolation of the IFM's own preprocessing."""
        if self.ifm is None:
            raise RuntimeError("a run from a feature store has no frame preprocessing")
        return Preprocessing(self.ifm.img_size, self.ifm.mean, self.ifm.std, self.ifm.interpolation)

    @property
    def frame_preprocessing(self) -> Preprocessing | None:
        """The IFM's preprocessing, or None when tokens come from a store."""
        return None if self.ifm is None else self.preprocessing

    @property
    def token_dim(self) -> int:
        """Channels of the tokens the model receives (before its SFU)."""
        return self.store.spec.token_shape[0] if self.store else self.ifm.embed_dim

    def ifm_record(self) -> dict[str, Any]:
        """The IFM behind this run's tokens, and whether they were stored or computed online
        (stored views are fixed, which can change an evaluation)."""
        if self.store is not None:
            spec = self.store.spec
            return {
                "name": spec.ifm,
                "weights_hash": spec.weights_hash,
                "random_init": spec.random_init,
                "precision": spec.precision,
                "img_size": spec.img_size,
                "features": f"store:{self.store.path}",
                "store": {"views": spec.views, "frame_stride": spec.frame_stride,
                          "dtype": spec.dtype, "spatial": spec.spatial,
                          "channels": spec.channels},
            }  # fmt: skip
        return {
            "name": self.ifm.name,
            "weights_hash": self.ifm.weights_hash(),
            "random_init": self.config.ifm.random_init,
            "precision": resolve_precision(self.config.ifm.precision, self.device),
            "img_size": self.ifm.img_size,
            "features": "online",
        }


def setup(config: Config, ifm: FrozenIFM | None = None, views: int = 1) -> Setup:
    """Threads, seeds (the trainable modules' initialisation follows `train.seed`), device, and
    the IFM, or the feature store (checked against the config; `views` it must offer)."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    device = distributed.local_device(resolve_device(config.train.device))
    store_path = store_source(config)
    if store_path is not None:
        store = FeatureStore(store_path, data_root=config.data.root)
        store.check_matches(expected_store_spec(config, store.spec, views), "the config")
        _check_store_weights(config, store)
        return Setup(config, device, None, store)
    ifm = ifm or build_frozen_ifm(config.ifm, device)
    if config.ifm.random_init:
        warnings.warn(
            f"IFM {config.ifm.name!r} is randomly initialised (ifm.random_init=true): its "
            f"tokens mean nothing, and every result file of this run records random_init",
            RandomInitWarning,
            stacklevel=2,
        )
    return Setup(config, device, ifm.to(device))


def _check_store_weights(config: Config, store: FeatureStore) -> None:
    """Refuse a store whose tokens came from other IFM weights than the config asks for:
    `ifm.weights` (a file: its weights are loaded and hashed) or `ifm.random_init`."""
    spec = store.spec
    if config.ifm.weights:
        wanted = build_frozen_ifm(config.ifm, torch.device("cpu")).weights_hash()
        if wanted != spec.weights_hash:
            raise StoreError(
                f"feature store {store.path} holds tokens of IFM weights {spec.weights_hash[:12]}, "
                f"but ifm.weights={config.ifm.weights} has weights {wanted[:12]}; extract a store "
                "with these weights or drop ifm.weights"
            )
    if config.ifm.random_init != spec.random_init:
        raise StoreError(
            f"feature store {store.path} holds tokens of a "
            f"{'randomly initialised' if spec.random_init else 'pretrained'} IFM, but "
            f"ifm.random_init={str(config.ifm.random_init).lower()}"
        )


def store_source(config: Config) -> Path | None:
    """The feature store `data.source` names, or None for decoded videos."""
    source = config.data.source
    return Path(source[len("store:") :]).expanduser() if source.startswith("store:") else None


def expected_store_spec(config: Config, stored: StoreSpec, views: int) -> StoreSpec:
    """The spec a store must have to serve `config`: its IFM, input size and blocks read
    (ifm.layers and ifm.layer_merge, compared as written), the pooling the store applied must
    be the config's SFU, and at least `views` views. Fields a config does not decide (weights
    hash, dtype, frame stride, token shape) are taken from the store."""
    from advise.models.ifm import IFM_REGISTRY

    first = config.ifm.name.split("+")[0]
    default_size = IFM_REGISTRY[first].img_size if first in IFM_REGISTRY else None
    return replace(
        stored,
        ifm=config.ifm.name,
        img_size=config.ifm.img_size or default_size,
        views=views,
        spatial=config.sfu.spatial if stored.spatial is not None else None,
        channels=config.sfu.channels if stored.channels is not None else None,
        layers=config.ifm.layers,
        layer_merge=config.ifm.layer_merge,
    )


class RandomInitWarning(UserWarning):
    """The run uses a randomly initialised IFM (only ever on explicit request)."""


def say(message: str) -> None:
    """Print once per run (rank 0 of a distributed run)."""
    if distributed.is_main():
        print(message, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _meta(run: Setup, stage: str, class_names: list[str], split: AnnotatedSplit) -> dict:
    return {
        "stage": stage,
        "class_names": class_names,
        "ifm": run.ifm_record(),
        "data": data_manifest(run.config, split),
        "config": run.config.to_dict(),
        "environment": environment(),
        "advise_version": __version__,
        "torch_version": torch.__version__,
    }


def data_manifest(config: Config, split: AnnotatedSplit) -> dict[str, Any]:
    """What a number was computed on: format, root, counts per class, missing videos, the
    quarantine list (hash, entries), and a sha256 of every annotation file the split was read
    from, the files that define the class labels included."""
    counts = split.counts()
    files = {file for file, _ in split.origins} | {split.source}
    folder = Path(split.source).parent  # where the files that define the labels sit
    label_files = {
        "ucf101": ["classInd.txt"],
        "diving48": ["Diving48_vocab.json"],
        "ssv2": list(SSV2_LABEL_FILES),
    }.get(config.data.format, [])
    files |= {str(folder / name) for name in label_files if (folder / name).is_file()}
    quarantine = None
    if config.data.quarantine:
        path = Path(config.data.quarantine).expanduser()
        quarantine = {
            "file": str(path),
            "sha256": _sha256(path),
            "listed": len(read_quarantine(path)),
        }
    return {
        "format": config.data.format,
        "root": config.data.root,
        "split": config.data.split if config.data.format in ("ucf101", "hmdb51") else None,
        "source": split.source,
        "videos": counts.videos,
        "classes": counts.classes,
        "per_class": counts.per_class,
        "missing": counts.missing,
        "quarantine": quarantine,
        "annotation_sha256": {
            file: _sha256(Path(file)) for file in sorted(files) if Path(file).is_file()
        },
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    """Package versions and the machine, so a result can be traced to what produced it."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("torch", "torchvision", "timm", "av", "numpy", "safetensors"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "advise": __version__,
        "python": platform.python_version(),
        "packages": packages,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _prepare_out(config: Config, out_dir: Path, resume: bool) -> None:
    checkpoint = out_dir / CHECKPOINT
    if not resume and checkpoint.with_suffix(".json").exists():
        raise ConfigError(
            f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    distributed.barrier()


def _check_resumable(checkpoint: Path, meta: dict[str, Any]) -> None:
    """--resume continues the run it finds, on the same classes and data, or not at all."""
    if not checkpoint.with_suffix(".json").exists():
        raise ConfigError(f"--resume: no checkpoint at {checkpoint}.json to resume from")
    _, state = load_checkpoint(checkpoint)
    check_architecture(state.get("config"), meta["config"], checkpoint, "--resume: ")
    _check_classes(state, meta["class_names"], checkpoint)
    manifest = meta["data"]
    recorded = state.get("data") or {}
    for key in ("annotation_sha256", "videos", "quarantine"):
        if key in recorded and recorded[key] != manifest[key]:
            raise ConfigError(
                f"--resume: the data changed since {checkpoint} was written ({key} differs: "
                f"annotation files edited, videos added or removed, or another quarantine "
                f"list); start a new run with another --out"
            )


def _write_run_record(out_dir: Path, meta: dict[str, Any]) -> None:
    """run.json: what this run is made of (IFM, data manifest, environment), for people;
    checkpoints carry the same record."""
    record = {key: value for key, value in meta.items() if key != "config"}
    if distributed.is_main():
        (out_dir / "run.json").write_text(json.dumps(record, indent=2))


def pretrain(
    config: Config, out_dir: Path, resume: bool = False, ifm: FrozenIFM | None = None
) -> TrainResult:
    """The pretext task (`pretext.kind`): only the TMM and head train; the IFM stays frozen."""
    split = loaders.read_split(config.data, "train")  # bad annotations stop us before any work
    say(f"pretrain ({config.pretext.kind}) on {split.summary()}")
    run = setup(config, ifm)
    pretext = build_pretext(config)
    dataset = loaders.pretrain_dataset(
        config, split, run.frame_preprocessing, run.store, pretext.sampler()
    )
    model = pretext_model(config, pretext, run)
    task = pretext.task()
    meta = _meta(run, "pretrain", pretext.class_names, split)
    if resume:  # before anything in the run folder is written
        _check_resumable(out_dir / CHECKPOINT, meta)
    _prepare_out(config, out_dir, resume)
    _write_run_record(out_dir, meta)
    return train(
        model,
        task,
        dataset,
        optim=config.optim,
        train_config=config.train,
        out_dir=out_dir,
        meta=meta,
        resume=resume,
        num_workers=config.data.num_workers,
        max_bad_fraction=config.data.max_bad_fraction,
        description="pretrain",
    )


def pretext_model(config: Config, pretext: Pretext, run: Setup) -> AdViSe:
    """The model a pretext trains: the config's SFU and TMM, and the pretext's head (or the
    config's head with one output per pretext class)."""
    model = build_model(config, len(pretext.class_names), run.ifm, run.token_dim, head=pretext.head)
    return model.to(run.device)


def _check_fits(
    state: dict, run: Setup, path: Path, parts: tuple[str, ...] = ("sfu", "tmm", "head")
) -> None:
    """The checkpoint at `path` was made with this run's IFM and model settings (`parts`)."""
    _check_ifm(state, run, path)
    check_architecture(state.get("config"), run.config, path, parts=parts)


def _check_ifm(state: dict, run: Setup, path: Path) -> None:
    recorded = state.get("ifm", {})
    current = run.ifm_record()
    for key in ("name", "weights_hash"):
        if recorded.get(key) != current[key]:
            raise CheckpointError(
                f"{path} was trained on IFM {recorded.get('name')!r} (weights "
                f"{str(recorded.get('weights_hash'))[:12]}), but this run uses {current['name']!r} "
                f"(weights {current['weights_hash'][:12]})"
            )


def load_init(model: AdViSe, path: Path, run: Setup) -> None:
    """Inherit SFU + TMM weights from a pre-training checkpoint; the head stays new."""
    tensors, state = load_checkpoint(path)
    _check_fits(state, run, path, parts=("sfu", "tmm"))
    inherited = {
        key: value
        for key, value in model_tensors(tensors).items()
        if key.startswith(("tmm.", "sfu."))
    }
    try:
        model.load_trainable_state_dict(inherited, parts=("sfu", "tmm"))
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def finetune(
    config: Config,
    out_dir: Path,
    init: Path | None = None,
    resume: bool = False,
    ifm: FrozenIFM | None = None,
) -> TrainResult:
    """Action recognition: the TMM is inherited from `init` (or random), the head is new."""
    if config.tmm.frozen and init is None and not resume:
        raise ConfigError(
            "tmm.frozen=true (linear probing) needs --init PRETRAIN_CKPT: a frozen random "
            "temporal module would be probed"
        )
    split = loaders.read_split(config.data, "train")
    say(f"finetune on {split.summary()}")
    run = setup(config, ifm)
    dataset = loaders.finetune_dataset(config, split, run.frame_preprocessing, run.store)
    model = build_model(config, len(split.class_names), run.ifm, run.token_dim).to(run.device)
    if init is not None and not resume:
        load_init(model, init, run)
    meta = _meta(run, "finetune", split.class_names, split)
    meta["init"] = str(init) if init else None
    if resume:  # before anything in the run folder is written
        _check_resumable(out_dir / CHECKPOINT, meta)
    _prepare_out(config, out_dir, resume)
    _write_run_record(out_dir, meta)
    return train(
        model,
        ActionTask(label_smoothing=config.optim.label_smoothing),
        dataset,
        optim=config.optim,
        train_config=config.train,
        out_dir=out_dir,
        meta=meta,
        resume=resume,
        num_workers=config.data.num_workers,
        max_bad_fraction=config.data.max_bad_fraction,
        description="finetune",
    )


def _check_classes(state: dict, class_names: list[str], path: Path) -> None:
    recorded = state.get("class_names")
    if recorded != class_names:
        raise CheckpointError(
            f"{path} was trained on {len(recorded or [])} classes "
            f"({', '.join((recorded or [])[:3])}, ...) but the dataset has {len(class_names)} "
            f"({', '.join(class_names[:3])}, ...): class names must match in order"
        )


def parse_views(text: str) -> tuple[int, int]:
    """'2x3' -> (2 temporal clips, 3 spatial crops)."""
    try:
        clips, crops = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--views must look like CLIPSxCROPS (e.g. 2x3), got {text!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise ConfigError(f"--views {text!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


def evaluate_checkpoint(
    config: Config,
    checkpoint: Path,
    views: tuple[int, int] | None = None,
    out_file: Path | None = None,
    ifm: FrozenIFM | None = None,
) -> dict[str, Any]:
    """Multi-view top-1/top-5 of a fine-tuned checkpoint on the test split."""
    tensors, state = load_checkpoint(checkpoint)
    if state.get("stage") != "finetune":
        raise CheckpointError(
            f"{checkpoint} is a {state.get('stage')} checkpoint; evaluate a fine-tuned one"
        )
    split = loaders.read_split(config.data, "test")
    say(f"evaluate on {split.summary()}")
    num_clips, num_crops = views or (config.eval.num_clips, config.eval.num_crops)
    run = setup(config, ifm, views=num_crops)
    _check_fits(state, run, checkpoint)
    _check_classes(state, split.class_names, checkpoint)
    model = build_model(config, len(split.class_names), run.ifm, run.token_dim).to(run.device)
    weights = model_tensors(tensors)
    try:
        model.load_trainable_state_dict(weights)
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{checkpoint} does not fit the model this config builds: {str(error)[:300]}"
        ) from None
    dataset = loaders.eval_dataset(
        config, split, run.frame_preprocessing, num_clips, num_crops, run.store
    )
    started = time.perf_counter()
    meter = AccuracyMeter()
    result = evaluate(
        model,
        dataset,
        batch_size=config.eval.batch_size,
        num_workers=config.data.num_workers,
        meter=meter,
        precision=config.train.precision,
        max_bad_fraction=config.data.max_bad_fraction,
    )
    video_ids, labels, probs = meter.video_scores()
    predictions = probs.argmax(dim=1) if len(video_ids) else labels
    confusion = confusion_matrix(labels, predictions, len(split.class_names))
    per_class = per_class_accuracy(confusion)
    result.update(
        views=f"{num_clips}x{num_crops}",
        num_clips=num_clips,
        num_crops=num_crops,
        mean_class_top1=mean_class_accuracy(confusion),
        per_class=[
            {"class": name, "videos": int(confusion[index].sum()), "top1": per_class[index]}
            for index, name in enumerate(split.class_names)
        ],
        confusion_matrix=confusion.tolist(),
        checkpoint=str(checkpoint),
        ifm=run.ifm_record(),
        data=data_manifest(config, split),
        config=config.to_dict(),
        environment=environment(),
        seconds=round(time.perf_counter() - started, 2),
    )
    if out_file is not None and distributed.is_main():
        out_file.parent.mkdir(parents=True, exist_ok=True)
        figure = out_file.with_name(out_file.stem + "_confusion.png")
        predictions_file = out_file.with_name(out_file.stem + "_predictions.csv")
        result["files"] = {"confusion": str(figure), "predictions": str(predictions_file)}
        title = (
            f"{len(video_ids)} videos, {result['views']} views: top-1 {result['top1']:.1f}, "
            f"mean class {result['mean_class_top1']:.1f}"
        )
        plot_confusion(result["confusion_matrix"], split.class_names, figure, title)
        write_predictions(
            predictions_file,
            [split.records[index].path for index in video_ids.tolist()],
            labels,
            probs,
            split.class_names,
        )
        out_file.write_text(json.dumps(result, indent=2))  # last: its files exist when it does
    return result


def write_predictions(
    path: Path, videos: list[Path], labels: Tensor, probs: Tensor, class_names: list[str]
) -> None:
    """One CSV row per test video: file, true class, predicted class, its score, and the top-5
    class names separated by " | " (Kinetics and SSv2 names contain spaces)."""
    top = probs.topk(min(5, probs.shape[1]), dim=1) if len(videos) else None
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "label", "predicted", "score", "top5"])
        for row, video in enumerate(videos):
            indices = top.indices[row].tolist()
            writer.writerow(
                [
                    str(video),
                    class_names[int(labels[row])],
                    class_names[indices[0]],
                    f"{float(top.values[row, 0]):.4f}",
                    " | ".join(class_names[index] for index in indices),
                ]
            )


def predict(
    video: Path,
    checkpoint: Path,
    overrides: list[str] | None = None,
    views: tuple[int, int] | None = None,
    top: int = 5,
) -> dict[str, Any]:
    """Class scores of one video file from a fine-tuned checkpoint.

    The model is rebuilt from the config saved in the checkpoint (`overrides` as in --set,
    e.g. ifm.weights on another machine); the video is tested with the checkpoint's
    multi-view protocol (or `views`), softmax averaged over views. Returns the `top` classes,
    and a `warning` (None when there is none) when the video was cut short.
    """
    from advise.data.check import cut_short
    from advise.data.datasets import MultiViewDataset, SkippedVideo, collate_clips
    from advise.data.formats import VideoRecord
    from advise.data.video import VideoDecodeError, probe_video

    tensors, state = load_checkpoint(checkpoint)
    if state.get("stage") != "finetune":
        raise CheckpointError(
            f"{checkpoint} is a {state.get('stage')} checkpoint; predict needs a fine-tuned one"
        )
    if not Path(video).is_file():
        raise FileNotFoundError(2, "video not found", str(video))
    config = from_dict(state["config"]).replace(parse_overrides(overrides or []))
    config = config.replace({"data.source": "video"})  # a new video: never in a store
    class_names = state["class_names"]
    run = setup(config)
    _check_fits(state, run, checkpoint)
    model = build_model(config, len(class_names), run.ifm, run.token_dim).to(run.device)
    model.load_trainable_state_dict(model_tensors(tensors))
    model.eval()
    num_clips, num_crops = views or (config.eval.num_clips, config.eval.num_crops)
    dataset = MultiViewDataset(
        [VideoRecord(Path(video), 0)],
        config.data.num_frames,
        num_clips,
        loaders.views_transform(run.preprocessing, num_crops),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bad video is this command's error, not a warning
        item = dataset[0]
    if isinstance(item, SkippedVideo) or item is None:
        reason = item.reason if isinstance(item, SkippedVideo) else "unreadable"
        raise VideoDecodeError(video, f"cannot test it: {reason}")
    damage = cut_short(probe_video(video))  # probed already: cached
    with torch.no_grad():
        logits = forward_batch(model, collate_clips([item]), run.device)
        probs = logits.float().softmax(dim=1).mean(0).cpu()
    scores, indices = probs.topk(min(top, len(class_names)))
    return {
        "video": str(video),
        "views": f"{num_clips}x{num_crops}",
        "top": [
            {"class": class_names[index], "score": round(float(score), 4)}
            for score, index in zip(scores.tolist(), indices.tolist(), strict=True)
        ],
        "checkpoint": str(checkpoint),
        "ifm": run.ifm_record(),
        "warning": damage and f"{video}: {damage}; scored on the frames that decode",
    }


def parse_overrides(items: list[str]) -> dict[str, Any]:
    return dict(parse_override(item) for item in items)


def summary(config: Config, num_classes: int | None = None) -> dict[str, Any]:
    """Parameter and multiply-accumulate counts for one clip, without any weights.

    The IFM's architecture is built on the meta device, so this works offline for every
    preset and costs no memory. MACs count convolutions and matrix multiplies.
    """
    pretext = build_pretext(config)  # without num_classes: the pre-training model
    head = pretext.head if num_classes is None else None
    num_classes = num_classes or len(pretext.class_names)
    with torch.device("meta"):
        ifm = build_frozen_ifm(
            replace(config.ifm, random_init=True, weights=None), torch.device("meta")
        )
        model = build_model(config, num_classes, ifm, head=head)
        size = ifm.img_size
        frames = torch.empty(1, config.data.num_frames, 3, size, size)
        tokens = ifm(frames)  # [1, D, T, h, w]
        pooled = model.sfu(tokens)
        ifm_macs = count_macs(ifm, frames)
        tmm_macs = count_macs(model.tmm, pooled)
        total_macs = count_macs(model, frames)
    return {
        "ifm": config.ifm.name,
        "img_size": size,
        "num_frames": config.data.num_frames,
        "token_grid": list(tokens.shape[1:]),
        "tmm_input": list(pooled.shape[1:]),
        "head_classes": num_classes,
        "tmm_params": count_params(model.tmm),
        "head_params": count_params(model.head),
        "trainable_params": count_params(model, trainable_only=True),
        "frozen_params": count_params(ifm),
        "ifm_macs": ifm_macs,
        "tmm_macs": tmm_macs,
        "total_macs": total_macs,
    }


def check_data(config: Config, out_dir: Path, workers: int) -> tuple[Any, dict[str, Path]]:
    """Decode the first, last and a few random frames of every video of the train and test
    splits (in `workers` processes); write check_report.{json,md} and quarantine.txt. A video
    cut short to fewer frames than one clip spans at playback rate 1 fails."""
    from advise.data.check import check_videos, write_report

    # every video, the quarantined ones included (the check decides afresh)
    records = _records_of(config.replace({"data.quarantine": ""}), ["train", "test"])
    clip_frames = config.data.num_frames * config.data.stride
    report = check_videos(records, workers=workers, clip_frames=clip_frames)
    return report, write_report(report, out_dir)


def extract(
    config: Config,
    out_dir: Path,
    subset: str = "all",
    views: int = 1,
    frame_stride: int = 1,
    dtype: str = "fp16",
    pool: bool = False,
    ifm: FrozenIFM | CombinedIFM | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    chunk_frames: int = 32,
    progress: bool | None = None,
) -> Path:
    """Run the frozen IFM once over every video of `subset` ("train", "test" or "all") and
    store its tokens in `out_dir` (see `advise.data.store`). Resumable: videos already stored
    are skipped. `pool=True` applies the config's SFU before storing. With several processes,
    process `rank` of `world_size` takes every world_size-th video; the last to finish its
    share and find every other share done writes the manifest."""
    from tqdm import tqdm

    from advise.data.store import DTYPES, FrameViewsDataset, video_problem, write_video_tokens
    from advise.models.sfu import SFU

    if views not in (1, 3):
        raise ConfigError(f"--views must be 1 or 3 (centre, or three crops), got {views}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if frame_stride < 1:
        raise ConfigError(f"--frame-stride must be >= 1, got {frame_stride}")
    rank = distributed.rank() if rank is None else rank
    world_size = distributed.world_size() if world_size is None else world_size
    config = config.replace({"data.source": "video"})
    records = _records_of(config, ["train", "test"] if subset == "all" else [subset])
    run = setup(config, ifm)
    pooled = pool and (config.sfu.spatial is not None or config.sfu.channels is not None)
    sfu = SFU(config.sfu.spatial, config.sfu.channels) if pooled else nn.Identity()
    size = run.ifm.img_size
    probe = sfu(run.ifm(torch.zeros(1, 1, 3, size, size, device=run.device)))  # [1, D, 1, h, w]
    spec = StoreSpec(
        ifm=run.ifm.name,
        weights_hash=run.ifm.weights_hash(),
        random_init=config.ifm.random_init,
        img_size=size,
        precision=resolve_precision(config.ifm.precision, run.device),
        interpolation=run.ifm.interpolation,
        views=views,
        frame_stride=frame_stride,
        dtype=dtype,
        spatial=config.sfu.spatial if pooled else None,
        channels=config.sfu.channels if pooled else None,
        token_shape=(probe.shape[1], probe.shape[3], probe.shape[4]),
        layers=run.ifm.layers,
        layer_merge=run.ifm.layer_merge,
    )
    if rank == 0:
        _start_store(out_dir, spec, config)
    distributed.barrier()
    _start_store(out_dir, spec, config)  # every rank checks what it resumes
    todo = [  # what is not stored yet, or stored damaged (a file cut by a crash of the disk)
        (index, record)
        for index, record in enumerate(records)
        if index % world_size == rank and video_problem(out_dir, index, spec) is not None
    ]
    dataset = FrameViewsDataset(
        todo, frame_stride, loaders.views_transform(run.preprocessing, views)
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=config.data.num_workers
    )
    show = sys.stderr.isatty() if progress is None else progress
    failed = 0
    for item in tqdm(loader, total=len(todo), desc="extract", disable=not show):
        if not isinstance(item, dict):
            failed += 1
            continue
        tokens = encode_views(run.ifm, sfu, item["views"], chunk_frames)
        write_video_tokens(out_dir, item["index"], tokens, dtype)
    (out_dir / f"done.{rank}-of-{world_size}").write_text(f"{len(todo) - failed}\n")
    distributed.barrier()
    if rank == 0 and all(
        (out_dir / f"done.{r}-of-{world_size}").is_file() for r in range(world_size)
    ):
        _write_manifest(out_dir, spec, config, records)
    distributed.barrier()
    return out_dir


def _records_of(config: Config, subsets: list[str]) -> list:
    """The videos of the subsets, each once, in a stable order (train first). A missing or
    empty test list is skipped (a PRP pool has none); a malformed one is an error."""
    from advise.data.formats import AnnotationError

    records, seen = [], set()
    for subset in subsets:
        try:
            split = loaders.read_split(config.data, subset)
        except (AnnotationError, ConfigError) as error:
            if subset == "train" or (isinstance(error, AnnotationError) and error.line != 0):
                raise
            say(f"test: no videos ({error})")
            continue
        say(f"{subset}: {split.summary()}")
        for record in split.records:
            if (record.path, record.start_frame, record.end_frame) not in seen:
                seen.add((record.path, record.start_frame, record.end_frame))
                records.append(record)
    return records


def _start_store(out_dir: Path, spec: StoreSpec, config: Config) -> None:
    """Write store.json, or check that a store being resumed was started with this spec (one
    started before a spec field existed holds that field's default, `SPEC_DEFAULTS`)."""
    from advise.data.store import SPEC_DEFAULTS

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "videos").mkdir(exist_ok=True)
    for stale in (out_dir / "videos").glob(".*.tmp"):  # half-written by a killed extraction
        stale.unlink(missing_ok=True)
    path = out_dir / "store.json"
    record = {"spec": spec.to_dict(), "data_root": _absolute(config.data.root)}
    if path.is_file():
        try:
            started = json.loads(path.read_bytes())
        except ValueError as error:
            finished = _manifest_record(out_dir)
            if finished is not None and isinstance(finished["spec"], dict):
                finished["spec"] = {**SPEC_DEFAULTS, **finished["spec"]}
            if finished != record:
                raise StoreError(
                    f"{path} is damaged ({error}): the settings of the store in {out_dir} are "
                    "unknown; extract into another --out (or delete that folder)"
                ) from None
            started = record  # a finished store's manifest says what it was: repair it
            path.write_text(json.dumps(record, indent=2))
        if not isinstance(started, dict) or not isinstance(started.get("spec"), dict):
            started = {"spec": {}}
        started = {**started, "spec": {**SPEC_DEFAULTS, **started["spec"]}}
        if started != record:
            differences = [
                key for key in record["spec"] if started["spec"].get(key) != record["spec"][key]
            ] + (["data_root"] if started.get("data_root") != record["data_root"] else [])
            raise StoreError(
                f"{out_dir} holds a store started with other settings ({', '.join(differences)} "
                f"differ); resume with the same ones or choose another --out"
            )
        return
    path.write_text(json.dumps(record, indent=2))


def _manifest_record(out_dir: Path) -> dict[str, Any] | None:
    """What store.json held, as an intact manifest records it; None without one."""
    from advise.data.store import read_manifest

    try:
        manifest = read_manifest(out_dir)
        return {"spec": manifest["spec"], "data_root": manifest["data_root"]}
    except (StoreError, KeyError):
        return None


def _absolute(root: str) -> str:
    """A store records its data root absolute: a relative one would mean another folder as
    soon as the store is used from another working directory."""
    return os.path.abspath(os.path.expanduser(root))


def _write_manifest(out_dir: Path, spec: StoreSpec, config: Config, records: list) -> None:
    from advise.data.store import (
        STORE_VERSION,
        _relative_key,
        manifest_checksum,
        video_file,
        video_problem,
    )

    videos, failed = [], []
    for index, record in enumerate(records):
        key = _relative_key(record.path, config.data.root)
        file = out_dir / video_file(index)
        if video_problem(out_dir, index, spec) is not None:  # not decodable, or damaged since
            failed.append(key)
            continue
        frames = int(np.load(file, mmap_mode="r").shape[1])
        videos.append({"path": key, "label": record.label, "frames": frames,
                       "file": video_file(index)})  # fmt: skip
    manifest = {
        "version": STORE_VERSION,
        "spec": spec.to_dict(),
        "data_root": _absolute(config.data.root),
        "videos": videos,
        "failed": failed,
    }
    manifest["sha256"] = manifest_checksum(manifest)
    temporary = out_dir / f".manifest.json.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1))
    os.replace(temporary, out_dir / "manifest.json")


def ifm_table() -> list[dict[str, Any]]:
    """One row per registry IFM: sizes read from the architecture (built on the meta device,
    so nothing is downloaded or allocated) and where its weights come from."""
    from advise.models.ifm import IFM_REGISTRY

    rows = []
    for name, spec in IFM_REGISTRY.items():
        with torch.device("meta"):
            ifm = build_ifm(name, random_init=True)
            params = count_params(ifm)
        cached = spec.cached_weights()
        rows.append(
            {
                "name": name,
                "timm_model": spec.timm_name or "advise.mini_ifm",
                "embed_dim": ifm.embed_dim,
                "patch_size": spec.patch_size,
                "img_size": ifm.img_size,
                "token_grid": list(ifm.grid_size()),
                "params": params,
                "mean": [round(value, 4) for value in ifm.mean],
                "std": [round(value, 4) for value in ifm.std],
                "interpolation": ifm.interpolation,
                "weights_source": spec.weights_source,
                "weights_cached": str(cached) if cached else None,
            }
        )
    return rows


@torch.no_grad()
def evaluate_pretext(
    config: Config, checkpoint: Path, ifm: FrozenIFM | None = None
) -> dict[str, Any]:
    """The pretext's own measure (`Pretext.evaluate`, e.g. PRP speed accuracy) of a
    pre-training checkpoint on `config.data`'s videos."""
    tensors, state = load_checkpoint(checkpoint)
    run = setup(config, ifm)
    _check_fits(state, run, checkpoint)
    pretext = build_pretext(config)
    model = pretext_model(config, pretext, run)
    model.load_trainable_state_dict(model_tensors(tensors))
    return pretext.evaluate(model, config, run)
