"""What each command does: build the parts from a config, call the loop, write the run folder.

`cli.py` only parses arguments and calls these; the demo calls them too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from advise import __version__
from advise.config import Config, ConfigError, from_dict, parse_override, save_config
from advise.data import loaders
from advise.data.check import read_quarantine
from advise.data.datasets import collate_clips
from advise.data.formats import SSV2_LABEL_FILES, AnnotatedSplit
from advise.data.transforms import Preprocessing
from advise.models.advise import AdViSe
from advise.models.build import build_frozen_ifm, build_model, resolve_precision
from advise.models.cost import count_macs, count_params
from advise.models.ifm import FrozenIFM, build_ifm
from advise.report import plot_confusion
from advise.train.checkpoint import CheckpointError, load_checkpoint
from advise.train.engine import TrainResult, evaluate, resolve_device, train
from advise.train.metrics import (
    AccuracyMeter,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
)
from advise.train.tasks import ActionTask, PlaybackRateTask

CHECKPOINT = Path("checkpoints") / "last"


@dataclass
class Setup:
    """What every command needs before it starts: device, frozen IFM, input size."""

    config: Config
    device: torch.device
    ifm: FrozenIFM

    @property
    def img_size(self) -> int:
        return self.ifm.img_size

    @property
    def preprocessing(self) -> Preprocessing:
        """Size, mean/std and interpolation of the IFM's own preprocessing."""
        return Preprocessing(self.ifm.img_size, self.ifm.mean, self.ifm.std, self.ifm.interpolation)


def setup(config: Config, ifm: FrozenIFM | None = None) -> Setup:
    """Threads, seeds (the trainable modules' initialisation follows `train.seed`), device, IFM."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    device = resolve_device(config.train.device)
    ifm = ifm or build_frozen_ifm(config.ifm, device)
    if config.ifm.random_init:
        warnings.warn(
            f"IFM {config.ifm.name!r} is randomly initialised (ifm.random_init=true): its "
            f"tokens mean nothing, and every result file of this run records random_init",
            RandomInitWarning,
            stacklevel=2,
        )
    return Setup(config, device, ifm.to(device))


class RandomInitWarning(UserWarning):
    """The run uses a randomly initialised IFM (only ever on explicit request)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ifm_record(ifm: FrozenIFM, config: Config, device: torch.device) -> dict[str, Any]:
    return {
        "name": ifm.name,
        "weights_hash": ifm.weights_hash(),
        "random_init": config.ifm.random_init,
        "precision": resolve_precision(config.ifm.precision, device),
        "img_size": ifm.img_size,
    }


def _meta(run: Setup, stage: str, class_names: list[str], split: AnnotatedSplit) -> dict:
    return {
        "stage": stage,
        "class_names": class_names,
        "ifm": ifm_record(run.ifm, run.config, run.device),
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
    if resume and not checkpoint.with_suffix(".json").exists():
        raise ConfigError(f"--resume: no checkpoint at {checkpoint}.json to resume from")
    if not resume and checkpoint.with_suffix(".json").exists():
        raise ConfigError(
            f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")


def _check_same_data(checkpoint: Path, manifest: dict[str, Any]) -> None:
    """--resume continues on the data the run started with, or not at all."""
    _, state = load_checkpoint(checkpoint)
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
    (out_dir / "run.json").write_text(json.dumps(record, indent=2))


def speed_names(config: Config) -> list[str]:
    names = [f"speed {speed}" for speed in config.pretext.speeds]
    if config.pretext.reverse:
        names += [f"speed -{speed}" for speed in config.pretext.speeds]
    return names


def pretrain(
    config: Config, out_dir: Path, resume: bool = False, ifm: FrozenIFM | None = None
) -> TrainResult:
    """Playback-rate perception: only the TMM and head train; the IFM stays frozen."""
    split = loaders.read_split(config.data, "train")  # bad annotations stop us before any work
    print(f"pretrain on {split.summary()}")
    run = setup(config, ifm)
    _prepare_out(config, out_dir, resume)
    dataset = loaders.pretrain_dataset(config, split, run.preprocessing)
    class_names = speed_names(config)
    model = build_model(config, len(class_names), run.ifm).to(run.device)
    task = PlaybackRateTask(label_smoothing=config.pretext.label_smoothing)
    meta = _meta(run, "pretrain", class_names, split)
    if resume:
        _check_same_data(out_dir / CHECKPOINT, meta["data"])
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


def _check_ifm(state: dict, run: Setup, path: Path) -> None:
    recorded = state.get("ifm", {})
    current = ifm_record(run.ifm, run.config, run.device)
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
    _check_ifm(state, run, path)
    inherited = {
        key[len("model.") :]: value
        for key, value in tensors.items()
        if key.startswith(("model.tmm.", "model.sfu."))
    }
    own = {k: v for k, v in model.trainable_state_dict().items() if k.startswith(("tmm.", "sfu."))}
    if set(inherited) != set(own):
        raise CheckpointError(
            f"{path}: its temporal module does not match this config's "
            f"(missing {sorted(set(own) - set(inherited))[:3]}, "
            f"unexpected {sorted(set(inherited) - set(own))[:3]})"
        )
    for key, value in inherited.items():
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"{path}: {key} has shape {list(value.shape)}, this config builds "
                f"{list(own[key].shape)} (check tmm.* settings)"
            )
    model.load_trainable_state_dict({**model.trainable_state_dict(), **inherited})


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
    print(f"finetune on {split.summary()}")
    run = setup(config, ifm)
    if resume:
        _, state = load_checkpoint(out_dir / CHECKPOINT)
        _check_classes(state, split.class_names, out_dir / CHECKPOINT)
    _prepare_out(config, out_dir, resume)
    dataset = loaders.finetune_dataset(config, split, run.preprocessing)
    model = build_model(config, len(split.class_names), run.ifm).to(run.device)
    if init is not None and not resume:
        load_init(model, init, run)
    meta = _meta(run, "finetune", split.class_names, split)
    meta["init"] = str(init) if init else None
    if resume:
        _check_same_data(out_dir / CHECKPOINT, meta["data"])
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
    print(f"evaluate on {split.summary()}")
    run = setup(config, ifm)
    _check_ifm(state, run, checkpoint)
    _check_classes(state, split.class_names, checkpoint)
    model = build_model(config, len(split.class_names), run.ifm).to(run.device)
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_trainable_state_dict(weights)
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{checkpoint} does not fit the model this config builds: {str(error)[:300]}"
        ) from None
    num_clips, num_crops = views or (config.eval.num_clips, config.eval.num_crops)
    dataset = loaders.eval_dataset(config, split, run.preprocessing, num_clips, num_crops)
    started = time.perf_counter()
    meter = AccuracyMeter()
    result = evaluate(
        model,
        dataset,
        batch_size=config.eval.batch_size,
        num_workers=config.data.num_workers,
        meter=meter,
        precision=config.train.precision,
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
        ifm=ifm_record(run.ifm, config, run.device),
        data=data_manifest(config, split),
        config=config.to_dict(),
        environment=environment(),
        seconds=round(time.perf_counter() - started, 2),
    )
    if out_file is not None:
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
    multi-view protocol (or `views`), softmax averaged over views. Returns the `top` classes.
    """
    from advise.data.datasets import MultiViewDataset, SkippedVideo
    from advise.data.formats import VideoRecord
    from advise.data.video import VideoDecodeError

    tensors, state = load_checkpoint(checkpoint)
    if state.get("stage") != "finetune":
        raise CheckpointError(
            f"{checkpoint} is a {state.get('stage')} checkpoint; predict needs a fine-tuned one"
        )
    if not Path(video).is_file():
        raise FileNotFoundError(2, "video not found", str(video))
    config = from_dict(state["config"]).replace(parse_overrides(overrides or []))
    class_names = state["class_names"]
    run = setup(config)
    _check_ifm(state, run, checkpoint)
    model = build_model(config, len(class_names), run.ifm).to(run.device)
    model.load_trainable_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
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
    with torch.no_grad():
        probs = model(item["clips"].to(run.device)).float().softmax(dim=1).mean(0).cpu()
    scores, indices = probs.topk(min(top, len(class_names)))
    return {
        "video": str(video),
        "views": f"{num_clips}x{num_crops}",
        "top": [
            {"class": class_names[index], "score": round(float(score), 4)}
            for score, index in zip(scores.tolist(), indices.tolist(), strict=True)
        ],
        "checkpoint": str(checkpoint),
        "ifm": ifm_record(run.ifm, config, run.device),
    }


def parse_overrides(items: list[str]) -> dict[str, Any]:
    return dict(parse_override(item) for item in items)


def summary(config: Config, num_classes: int | None = None) -> dict[str, Any]:
    """Parameter and multiply-accumulate counts for one clip, without any weights.

    The IFM's architecture is built on the meta device, so this works offline for every
    preset and costs no memory. MACs count convolutions and matrix multiplies.
    """
    num_classes = num_classes or len(speed_names(config))
    with torch.device("meta"):
        ifm = build_frozen_ifm(
            replace(config.ifm, random_init=True, weights=None), torch.device("meta")
        )
        model = build_model(config, num_classes, ifm)
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
    splits (in `workers` processes); write check_report.{json,md} and quarantine.txt."""
    from advise.data.check import check_videos, write_report
    from advise.data.formats import AnnotationError

    records = []
    for subset in ("train", "test"):
        try:
            split = loaders.read_split(replace(config.data, quarantine=""), subset)
        except (AnnotationError, ConfigError) as error:
            # a dataset may have no test list (a PRP pool): check what there is
            if subset == "train" or (isinstance(error, AnnotationError) and error.line != 0):
                raise
            print(f"test: not checked ({error})")
            continue
        print(f"{subset}: {split.summary()}")
        records += split.records
    report = check_videos(records, workers=workers)
    return report, write_report(report, out_dir)


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
    """Playback-rate accuracy of a pre-training checkpoint on `data.root`'s videos.

    Clips are drawn as in pre-training (random speed and start, fixed seed) but with the
    deterministic centre-crop test transform; every clip counts.
    """
    tensors, state = load_checkpoint(checkpoint)
    split = loaders.read_split(config.data, "train")
    run = setup(config, ifm)
    _check_ifm(state, run, checkpoint)
    class_names = speed_names(config)
    model = build_model(config, len(class_names), run.ifm).to(run.device)
    model.load_trainable_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    model.eval()
    dataset = loaders.pretext_eval_dataset(config, split, run.preprocessing)
    dataset.index_videos()
    correct = total = 0
    for batch in torch.utils.data.DataLoader(
        dataset,
        batch_size=config.eval.batch_size,
        num_workers=config.data.num_workers,
        collate_fn=collate_clips,
    ):
        if batch["labels"].numel() == 0:
            continue
        logits = model(batch["clips"].to(run.device))
        correct += (logits.argmax(1).cpu() == batch["labels"]).sum().item()
        total += batch["labels"].numel()
    return {
        "speed_acc": 100.0 * correct / max(total, 1),
        "clips": total,
        "videos": len(split.records),
    }
