"""What each command does: build the parts from a config, call the loop, write the run folder.

`cli.py` only parses arguments and calls these; the demo calls them too.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advise.config import (
    Config,
    ConfigError,
    from_dict,
    load_config,
    migrate,
    parse_override,
    save_config,
)
from advise.data import loaders
from advise.data.formats import AnnotatedSplit
from advise.data.store import FeatureStore, StoreError, StoreSpec, StoreWriter, encode_views
from advise.data.transforms import Preprocessing
from advise.files import FolderBusy, atomic_write, locked_folder
from advise.models.advise import AdViSe
from advise.models.build import build_frozen_ifm, build_model, resolve_precision
from advise.models.cost import count_macs, count_params
from advise.models.ifm import CombinedIFM, FrozenIFM, build_ifm
from advise.pretexts import Pretext, build_pretext
from advise.provenance import (
    data_manifest,
    environment,
    online_ifm_record,
    run_meta,
    store_ifm_record,
    write_run_record,
)
from advise.report import plot_confusion
from advise.train import distributed
from advise.train.checkpoint import (
    CheckpointError,
    check_architecture,
    check_classes,
    check_ifm,
    check_resumable,
    check_stage,
    load_checkpoint,
    model_tensors,
    part_tensors,
)
from advise.train.engine import (
    TrainingDataset,
    TrainResult,
    Validate,
    evaluate,
    resolve_device,
    train,
)
from advise.train.metrics import (
    AccuracyMeter,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
)
from advise.train.tasks import ActionTask, Task

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
            return store_ifm_record(self.store)
        precision = resolve_precision(self.config.ifm.precision, self.device)
        return online_ifm_record(self.ifm, self.config.ifm.random_init, precision)


def setup(config: Config, ifm: FrozenIFM | None = None, views: int = 1) -> Setup:
    """Threads, seeds (the trainable modules' initialisation follows `train.seed`), device, and
    the IFM, or the feature store (checked against the config; `views` it must offer)."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    device = distributed.local_device(resolve_device(config.train.device))
    store_path = config.data.store_path
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


def expected_store_spec(config: Config, stored: StoreSpec, views: int) -> StoreSpec:
    """The spec a store must have to serve `config`: its IFM, input size and blocks read
    (ifm.layers and ifm.layer_merge, compared as written), at least `views` views, and the
    config's SFU pooling (`sfu.spatial`, `sfu.channels`) as asked: `check_matches` accepts a
    store that pooled an axis to that size (`--pool`) or kept it whole (then pooled as it is
    read, `advise.data.store.pooling_at_read`). Fields a config does not decide (weights hash,
    dtype, frame stride, token shape) are taken from the store."""
    from advise.models.ifm import IFM_REGISTRY

    first = config.ifm.name.split("+")[0]
    default_size = IFM_REGISTRY[first].img_size if first in IFM_REGISTRY else None
    return replace(
        stored,
        ifm=config.ifm.name,
        img_size=config.ifm.img_size or default_size,
        views=views,
        spatial=config.sfu.spatial,
        channels=config.sfu.channels,
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


def _prepare_out(config: Config, out_dir: Path, resume: bool) -> None:
    """Refuse to start a new run over a finished one, then write the run's config.yaml.
    Called with the folder's lock held, so two runs cannot both pass the check."""
    checkpoint = out_dir / CHECKPOINT
    if not resume and checkpoint.with_suffix(".json").exists():
        raise ConfigError(
            f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    distributed.barrier()


@contextlib.contextmanager
def _hold_run_folder(out_dir: Path) -> Iterator[None]:
    """The run folder's lock (`advise.files.locked_folder`) for the whole run: rank 0 takes it,
    and when another process holds it every rank stops with `FolderBusy`."""
    with contextlib.ExitStack() as stack:
        busy: FolderBusy | None = None
        if distributed.is_main():
            try:
                stack.enter_context(locked_folder(out_dir))
            except FolderBusy as error:
                busy = error
        if distributed.all_reduce_sum([1.0 if busy else 0.0])[0]:
            raise busy or FolderBusy(out_dir, "held by another process, seen by rank 0")
        yield


def resume_config(out_dir: Path, source: str | None, overrides: list[str]) -> Config:
    """The config a `--resume` of the run in `out_dir` trains with: the run's own (from its
    last checkpoint) with `overrides`, or `source` with them when one is given; either way
    checked against the run's when it starts (`check_resumable`)."""
    if source is not None:
        return load_config(source, overrides)
    checkpoint = out_dir / CHECKPOINT
    if not checkpoint.with_suffix(".json").exists():
        raise ConfigError(
            f"--resume: {out_dir} holds no run to resume (expected {checkpoint}.json); "
            "pass --config to start one"
        )
    _, state = load_checkpoint(checkpoint)
    return from_dict(migrate(state["config"])).replace(parse_overrides(overrides))


@dataclass
class _Stage:
    """What a training stage trains, built once the run is set up: what differs between
    pretrain and finetune."""

    model: AdViSe
    task: Task
    dataset: TrainingDataset
    class_names: list[str]
    record: dict[str, Any] = field(default_factory=dict)  # its own entries of the run record
    validate: Validate | None = None


def _train_stage(
    config: Config,
    out_dir: Path,
    resume: bool,
    ifm: FrozenIFM | None,
    stage: str,
    title: str,
    build: Callable[[Setup, AnnotatedSplit], _Stage],
    invocation: dict[str, Any] | None = None,
) -> TrainResult:
    """What pretrain and finetune share: read the train split, set up, `build` the stage's
    model, task and dataset, lock the run folder, check what --resume continues, record the
    run, write the run folder and train."""
    split = loaders.read_split(config.data, "train")  # bad annotations stop us before any work
    say(f"{title} on {split.summary()}")
    run = setup(config, ifm)
    parts = build(run, split)
    meta = run_meta(stage, parts.class_names, run.ifm_record(), config, split) | parts.record
    meta["invocation"] = invocation or {}
    with _hold_run_folder(out_dir):  # from here to the end: a second run is refused
        if resume:  # before anything in the run folder is written
            meta["config_changes"] = check_resumable(out_dir / CHECKPOINT, meta)
        _prepare_out(config, out_dir, resume)
        if distributed.is_main():
            write_run_record(out_dir, meta)
        return train(
            parts.model,
            parts.task,
            parts.dataset,
            optim=config.optim,
            train_config=config.train,
            out_dir=out_dir,
            meta=meta,
            resume=resume,
            num_workers=loaders.worker_count(config),
            max_bad_fraction=config.data.max_bad_fraction,
            description=stage,
            validate=parts.validate,
        )


def pretrain(
    config: Config,
    out_dir: Path,
    resume: bool = False,
    ifm: FrozenIFM | None = None,
    invocation: dict[str, Any] | None = None,
) -> TrainResult:
    """The pretext task (`pretext.kind`): only the TMM and head train; the IFM stays frozen."""

    def build(run: Setup, split: AnnotatedSplit) -> _Stage:
        pretext = build_pretext(config)
        sampler = pretext.sampler()
        dataset = loaders.pretrain_dataset(
            config, split, run.frame_preprocessing, run.store, sampler
        )
        model = pretext_model(config, pretext, run)
        return _Stage(model, pretext.task(), dataset, pretext.class_names)

    title = f"pretrain ({config.pretext.kind})"
    return _train_stage(config, out_dir, resume, ifm, "pretrain", title, build, invocation)


def pretext_model(config: Config, pretext: Pretext, run: Setup) -> AdViSe:
    """The model a pretext trains: the config's SFU and TMM, and the pretext's head (or the
    config's head with one output per pretext class)."""
    model = build_model(config, len(pretext.class_names), run.ifm, run.token_dim, head=pretext.head)
    return model.to(run.device)


def _check_fits(
    state: dict, run: Setup, path: Path, parts: tuple[str, ...] = ("sfu", "tmm", "head")
) -> None:
    """The checkpoint at `path` was made with this run's IFM and model settings (`parts`)."""
    check_ifm(state, run.ifm_record(), path)
    check_architecture(state.get("config"), run.config, path, parts=parts)


def load_init(model: AdViSe, path: Path, run: Setup, transplant: bool = False) -> dict[str, Any]:
    """Inherit SFU + TMM weights from a pre-training checkpoint; the head stays new. Returns
    the checkpoint's IFM record (name, weights hash).

    With `transplant` the checkpoint may come from another IFM: only the TMM is inherited
    (the SFU, with its `sfu.adapter` when the widths differ, starts new), and the TMM must get
    tokens of the width it was pre-trained on."""
    tensors, state = load_checkpoint(path)
    parts = ("tmm",) if transplant else ("sfu", "tmm")
    if transplant:
        check_architecture(state.get("config"), run.config, path, parts=parts, bind_ifm=False)
    else:
        _check_fits(state, run, path, parts=parts)
    inherited = part_tensors(tensors, parts)
    try:
        model.load_trainable_state_dict(inherited, parts=parts)
    except ValueError as error:
        hint = ""
        if transplant:
            given = _tmm_input_width(model, run)
            hint = (
                f". The TMM of {path} was pre-trained on tokens of another width than the "
                f"{given} this model gives it: set sfu.adapter to its width (a learned linear "
                f"map of the tokens to it)"
            )
        raise CheckpointError(f"{path}: {error}{hint}") from None
    return dict(state.get("ifm") or {})


def _tmm_input_width(model: AdViSe, run: Setup) -> int:
    """The channels this model's TMM is given: the token width after the SFU."""
    sfu = model.sfu
    return sfu.out_dim(run.token_dim) if hasattr(sfu, "out_dim") else run.token_dim


def finetune(
    config: Config,
    out_dir: Path,
    init: Path | None = None,
    resume: bool = False,
    ifm: FrozenIFM | None = None,
    invocation: dict[str, Any] | None = None,
    transplant: bool = False,
) -> TrainResult:
    """Action recognition: the TMM is inherited from `init` (or random), the head is new.
    With `train.eval_every`, validated on the test split as it trains (`checkpoints/best`).
    With `transplant`, `init` may be a pre-training on another IFM (`load_init`)."""
    if transplant and init is None:
        raise ConfigError("--transplant needs --init PRETRAIN_CKPT: the TMM to transplant")
    if config.tmm.frozen and init is None and not resume:
        raise ConfigError(
            "tmm.frozen=true (linear probing) needs --init PRETRAIN_CKPT: a frozen random "
            "temporal module would be probed"
        )

    def build(run: Setup, split: AnnotatedSplit) -> _Stage:
        dataset = loaders.finetune_dataset(config, split, run.frame_preprocessing, run.store)
        model = build_model(config, len(split.class_names), run.ifm, run.token_dim)
        model = model.to(run.device)
        record: dict[str, Any] = {"init": str(init) if init else None}
        if init is not None and not resume:
            source = load_init(model, init, run, transplant)
        elif init is not None and transplant:  # a resume: the record still names the source
            source = load_checkpoint(init)[1].get("ifm") or {}
        if init is not None and transplant:  # which IFM the TMM was pre-trained on
            record["transplant"] = {"from_ifm": source.get("name"),
                                    "weights_hash": source.get("weights_hash")}  # fmt: skip
        task = ActionTask(label_smoothing=config.optim.label_smoothing)
        validate = _validator(config, run, split.class_names)
        return _Stage(model, task, dataset, split.class_names, record, validate)

    return _train_stage(config, out_dir, resume, ifm, "finetune", "finetune", build, invocation)


def _validator(config: Config, run: Setup, class_names: list[str]) -> Validate | None:
    """With `train.eval_every`: the model -> its top-1 and top-5 on the test split, one centre
    clip per video (1x1 views; the final evaluation uses eval.*). The split is read now, so a
    bad test list stops the run before it trains."""
    if not config.train.eval_every:
        return None
    split = loaders.read_split(config.data, "test")
    if split.class_names != class_names:
        raise ConfigError("train.eval_every: the test split's classes are not the train split's")
    dataset = loaders.eval_dataset(config, split, run.frame_preprocessing, 1, 1, run.store)

    def validate(model: nn.Module) -> dict[str, Any]:
        result = evaluate(
            model, dataset, batch_size=config.eval.batch_size,
            num_workers=loaders.worker_count(config), description="validate",
            precision=config.train.precision, max_bad_fraction=config.data.max_bad_fraction,
        )  # fmt: skip
        return {"top1": result["top1"], "top5": result["top5"], "views": "1x1",
                "videos": result["num_videos"]}  # fmt: skip

    return validate


def parse_views(text: str) -> tuple[int, int]:
    """'2x3' -> (2 temporal clips, 3 spatial crops)."""
    try:
        clips, crops = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--views must look like CLIPSxCROPS (e.g. 2x3), got {text!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise ConfigError(f"--views {text!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


# what evaluate and predict take from --config / --set: where the data is and how it is
# tested; the model (IFM, SFU, TMM, head) is always rebuilt from the checkpoint's own config
EVALUATION_KEYS = (
    "data.format", "data.root", "data.annotations", "data.test_annotations", "data.split",
    "data.quarantine", "data.source", "data.num_workers", "data.in_memory",
    "data.max_bad_fraction", "eval.*", "train.device", "train.threads", "ifm.weights",
    "ifm.precision",
)  # fmt: skip


def checkpoint_config(
    state: dict, settings: Config | dict | None = None, overrides: dict | None = None
) -> Config:
    """The config a checkpoint was trained with, with the evaluation keys (`EVALUATION_KEYS`)
    of `settings` (a `Config`, or the dotted keys a preset sets: its other keys are ignored,
    with a note when they differ from the checkpoint's) and `overrides` (dotted keys: another
    key may repeat the checkpoint's value, but changing it is an error: the model is the
    checkpoint's)."""
    from advise.config import LEGACY_KEYS, flatten, matches_any

    saved = from_dict(migrate(state["config"]))
    recorded = flatten(saved.to_dict())
    given = flatten(settings.to_dict()) if isinstance(settings, Config) else dict(settings or {})
    values = {key: value for key, value in given.items() if matches_any(key, EVALUATION_KEYS)}
    if isinstance(settings, dict):
        ignored = sorted(key for key in set(given) - set(values) if recorded.get(key) != given[key])
        if ignored:
            say(
                f"note: the model is rebuilt from the checkpoint's own config; the config's "
                f"{', '.join(ignored[:6])}{', ...' if len(ignored) > 6 else ''} are ignored"
            )
    overrides = {LEGACY_KEYS.get(key, key): value for key, value in (overrides or {}).items()}
    refused = [
        key for key, value in overrides.items() if not matches_any(key, EVALUATION_KEYS)
        and flatten(saved.replace({key: value}).to_dict())[key] != recorded[key]
    ]  # fmt: skip
    if refused:
        raise ConfigError(
            f"--set {', '.join(f'{key}={overrides[key]}' for key in refused)}: the model is "
            f"rebuilt from the checkpoint's own config, which has "
            f"{', '.join(f'{key}={recorded[key]}' for key in refused)}; only these keys may be "
            f"set to other values: {', '.join(EVALUATION_KEYS)}"
        )
    return saved.replace(values | overrides)


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint `--ckpt` names: either file of a pair, or a run folder (its last)."""
    path = Path(path)
    if not path.is_dir():
        return path
    last = path / CHECKPOINT
    if last.with_suffix(".json").exists() or last.with_suffix(".safetensors").exists():
        return last.with_suffix(".safetensors")
    raise CheckpointError(
        f"{path} is a folder but holds no run: expected a run folder of `advise pretrain` or "
        f"`finetune` (with {last}.safetensors), or a checkpoint file (.safetensors)"
    )


def evaluation_folder(checkpoint: Path, out: Path | None = None) -> Path:
    """Where `evaluate` writes: `out` (a folder, made if needed), else the checkpoint's run
    folder (the folder holding `checkpoints/`), else the checkpoint's own folder."""
    if out is not None:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; --out names a folder for the results")
        out.mkdir(parents=True, exist_ok=True)
        return out
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


def evaluation_name(checkpoint: Path, views: str) -> str:
    """eval-2x3.json for a run's last checkpoint; eval-best-2x3.json for `best`, and so on."""
    stem = Path(checkpoint).name.split(".")[0]
    return f"eval-{views}.json" if stem == "last" else f"eval-{stem}-{views}.json"


def evaluate_run(
    checkpoint: Path,
    settings: dict | None = None,
    overrides: dict | None = None,
    views: tuple[int, int] | None = None,
    out: Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """`advise evaluate`: any checkpoint on its own task: a fine-tuned one by multi-view
    top-1 on the test split, a pre-training one by its pretext's measure (`evaluate_pretext`)
    on the data given. Returns the result and the JSON file it was written to (nothing is
    written outside the run folder or `out`)."""
    checkpoint = find_checkpoint(checkpoint)
    _, state = load_checkpoint(checkpoint)
    config = checkpoint_config(state, settings, overrides)
    folder = evaluation_folder(checkpoint, out)
    if state.get("stage") == "pretrain":
        result = evaluate_pretext(config, checkpoint)
        result.update(stage="pretrain", pretext=config.pretext.kind, checkpoint=str(checkpoint),
                      data=config.data.root, environment=environment())  # fmt: skip
        out_file = folder / evaluation_name(checkpoint, "pretext")
        atomic_write(out_file, json.dumps(result, indent=2))
        return result, out_file
    num_clips, num_crops = views or (config.eval.num_clips, config.eval.num_crops)
    out_file = folder / evaluation_name(checkpoint, f"{num_clips}x{num_crops}")
    return evaluate_checkpoint(config, checkpoint, (num_clips, num_crops), out_file), out_file


def evaluate_checkpoint(
    config: Config | dict | None,
    checkpoint: Path,
    views: tuple[int, int] | None = None,
    out_file: Path | None = None,
    ifm: FrozenIFM | None = None,
    figure: bool = True,
) -> dict[str, Any]:
    """Multi-view top-1/top-5 of a fine-tuned checkpoint on the test split. The model is the
    checkpoint's own; `config` gives the data and evaluation settings (`checkpoint_config`).
    With `out_file`: the result there, the predictions CSV beside it and, with `figure`, the
    confusion matrix drawn (it is in the result either way)."""
    checkpoint = find_checkpoint(checkpoint)
    tensors, state = load_checkpoint(checkpoint)
    check_stage(state, checkpoint, "finetune", "evaluate a fine-tuned one")
    config = checkpoint_config(state, config)
    split = loaders.read_split(config.data, "test")
    say(f"evaluate {checkpoint} on {split.summary()}")
    num_clips, num_crops = views or (config.eval.num_clips, config.eval.num_crops)
    run = setup(config, ifm, views=num_crops)
    model = _finetuned_model(run, tensors, state, checkpoint, split.class_names)
    dataset = loaders.eval_dataset(
        config, split, run.frame_preprocessing, num_clips, num_crops, run.store
    )
    started = time.perf_counter()
    meter = AccuracyMeter()
    result = evaluate(
        model,
        dataset,
        batch_size=config.eval.batch_size,
        num_workers=loaders.worker_count(config),
        meter=meter,
        precision=config.train.precision,
        max_bad_fraction=config.data.max_bad_fraction,
    )
    video_ids, labels, probs = meter.video_scores()
    result.update(
        views=f"{num_clips}x{num_crops}",
        num_clips=num_clips,
        num_crops=num_crops,
        **_class_scores(labels, probs, split.class_names),
        checkpoint=str(checkpoint),
        checkpoint_step=state.get("step"),
        ifm=run.ifm_record(),
        data=data_manifest(config, split),
        config=config.to_dict(),
        environment=environment(),
        seconds=round(time.perf_counter() - started, 2),
    )
    if out_file is not None and distributed.is_main():
        videos = [split.records[index].path for index in video_ids.tolist()]
        _write_evaluation(out_file, result, videos, labels, probs, split.class_names, figure)
    return result


def _finetuned_model(
    run: Setup, tensors: dict[str, Tensor], state: dict, checkpoint: Path, class_names: list[str]
) -> AdViSe:
    """The model `run.config` builds, with the fine-tuned checkpoint's weights (checked to be
    made for this IFM, model settings and classes)."""
    _check_fits(state, run, checkpoint)
    check_classes(state, class_names, checkpoint)
    model = build_model(run.config, len(class_names), run.ifm, run.token_dim).to(run.device)
    try:
        model.load_trainable_state_dict(model_tensors(tensors))
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{checkpoint} does not fit the model this config builds: {str(error)[:300]}"
        ) from None
    return model


def _class_scores(labels: Tensor, probs: Tensor, class_names: list[str]) -> dict[str, Any]:
    """Mean class top-1, per-class top-1 and the confusion matrix of per-video scores."""
    predictions = probs.argmax(dim=1) if len(labels) else labels
    confusion = confusion_matrix(labels, predictions, len(class_names))
    per_class = per_class_accuracy(confusion)
    return {
        "mean_class_top1": mean_class_accuracy(confusion),
        "per_class": [
            {"class": name, "videos": int(confusion[index].sum()), "top1": per_class[index]}
            for index, name in enumerate(class_names)
        ],
        "confusion_matrix": confusion.tolist(),
    }


def _write_evaluation(
    out_file: Path,
    result: dict[str, Any],
    videos: list[Path],
    labels: Tensor,
    probs: Tensor,
    class_names: list[str],
    figure: bool = True,
) -> None:
    """`out_file` (the result as JSON), its per-video predictions CSV and confusion figure.
    The JSON is written first and again once the other files exist (listing them): a failure
    on the way loses nothing computed."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_file, json.dumps(result, indent=2))
    predictions_file = out_file.with_name(out_file.stem + "_predictions.csv")
    write_predictions(predictions_file, videos, labels, probs, class_names)
    result["files"] = {"predictions": str(predictions_file)}
    if figure:
        title = (
            f"{len(videos)} videos, {result['views']} views: top-1 {result['top1']:.1f}, "
            f"mean class {result['mean_class_top1']:.1f}"
        )
        confusion = out_file.with_name(out_file.stem + "_confusion.png")
        plot_confusion(result["confusion_matrix"], class_names, confusion, title)
        result["files"] = {"confusion": str(confusion), **result["files"]}
    atomic_write(out_file, json.dumps(result, indent=2))


def write_predictions(
    path: Path, videos: list[Path], labels: Tensor, probs: Tensor, class_names: list[str]
) -> None:
    """One CSV row per test video: file, true class, predicted class, its score, and the top-5
    class names separated by " | " (Kinetics and SSv2 names contain spaces)."""
    top = probs.topk(min(5, probs.shape[1]), dim=1) if len(videos) else None
    handle = io.StringIO(newline="")
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
    atomic_write(path, handle.getvalue())


def predict(
    video: Path,
    checkpoint: Path,
    overrides: list[str] | None = None,
    views: tuple[int, int] | None = None,
    top: int = 5,
) -> dict[str, Any]:
    """Class scores of one video file from a fine-tuned checkpoint (`advise.load`).

    The model is rebuilt from the config saved in the checkpoint (`overrides` as in --set,
    e.g. ifm.weights on another machine); the video is tested with the checkpoint's
    multi-view protocol (or `views`), softmax averaged over views. Returns the `top` classes,
    and a `warning` (None when there is none) when the video was cut short.
    """
    from advise.api import load

    if Path(video).is_dir():
        raise ConfigError(f"predict: {video} is a folder; expected one video file")
    if not Path(video).is_file():
        raise FileNotFoundError(2, "no video file there", str(video))
    model = load(checkpoint, overrides=overrides or [])
    prediction = model.predict(video, views, top)
    return {
        "video": str(video),
        "views": prediction.views,
        "top": [
            {"class": name, "score": score}
            for name, score in zip(prediction.classes, prediction.scores, strict=True)
        ],
        "checkpoint": str(model.source),
        "ifm": model.ifm_record,
        "warning": prediction.warning,
    }


def predict_csv(
    model: Any,
    paths: list[Path],
    out: Path | None,
    views: tuple[int, int] | None,
    top: int,
    batch_size: int,
    workers: int,
) -> dict[str, Any]:
    """`advise predict` of many videos: one CSV row per path (path, status "ok" or "skipped",
    views, the `top` classes and scores, note: why it was skipped or that it was cut short),
    to `out` (written whole at the end) or stdout; a progress bar on a terminal."""
    from tqdm import tqdm

    from advise.api import Skipped

    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    ranks = [f"{kind}_{rank}" for rank in range(1, top + 1) for kind in ("class", "score")]
    writer.writerow(["path", "status", "views", *ranks, "note"])
    counts = {"predicted": 0, "skipped": 0}
    started = time.perf_counter()
    rows = model.predict_files(paths, views, top, batch_size, workers)
    for result in tqdm(rows, total=len(paths), desc="predict", disable=not sys.stderr.isatty(),
                       leave=False, dynamic_ncols=True):  # fmt: skip
        if isinstance(result, Skipped):
            counts["skipped"] += 1
            writer.writerow([result.path, "skipped", "", *[""] * len(ranks), result.reason])
            continue
        counts["predicted"] += 1
        pairs = zip(result.classes, result.scores, strict=True)
        scores: list[Any] = [value for pair in pairs for value in pair]
        scores += [""] * (len(ranks) - len(scores))
        writer.writerow([result.path, "ok", result.views, *scores, result.warning or ""])
    seconds = time.perf_counter() - started
    if out is None:
        sys.stdout.write(handle.getvalue())
    else:
        atomic_write(out, handle.getvalue())
    return {"videos": len(paths), **counts, "seconds": seconds,
            "videos_per_second": len(paths) / max(seconds, 1e-9)}  # fmt: skip


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
    parts: Sequence[Path] = (),
) -> Path:
    """Run the frozen IFM once over every video of `subset` ("train", "test" or "all") and
    store its tokens in `out_dir` (see `advise.data.store`). Resumable: videos already stored
    are skipped. `pool=True` applies the config's SFU before storing. With several processes,
    process `rank` of `world_size` takes every world_size-th video; the last to finish its
    share and find every other share done writes the manifest.

    `parts`: for a concatenated IFM ("a+b"), a store of each part. Where joining them gives
    the pair's tokens bit for bit (`joinable_parts`), each video's tokens are the parts'
    concatenated; the IFM encodes only a video some part store holds damaged."""
    from advise.models.sfu import SFU

    _check_extract_options(views, frame_stride, dtype)
    rank = distributed.rank() if rank is None else rank
    world_size = distributed.world_size() if world_size is None else world_size
    config = config.replace({"data.source": "video"})
    records = _records_of(config, ["train", "test"] if subset == "all" else [subset])
    run = setup(config, ifm)
    pooled = pool and (config.sfu.spatial is not None or config.sfu.channels is not None)
    sfu = SFU(config.sfu.spatial, config.sfu.channels) if pooled else nn.Identity()
    spec = _extraction_spec(run, sfu, pooled, views, frame_stride, dtype)
    writer = StoreWriter(out_dir, spec, config.data.root, rank, world_size)
    if rank == 0:
        writer.start(records)
    distributed.barrier()
    writer.start(records)  # every rank checks what it resumes
    todo = [(index, records[index]) for index in writer.todo(len(records))]
    stores = joinable_parts(run.ifm, spec, parts, [record for _, record in todo])
    joined = 0
    if stores:
        say(f"tokens of {run.ifm.name}: its parts' stores joined ({', '.join(map(str, parts))})")
        joined, todo = _join_videos(stores, writer, todo)  # what a part lacks: the IFM runs
    writer.finish(joined + _store_videos(run, sfu, writer, todo, chunk_frames, progress))
    distributed.barrier()
    if rank == 0 and writer.all_done():
        writer.write_manifest(records)
    distributed.barrier()
    return out_dir


def _check_extract_options(views: int, frame_stride: int, dtype: str) -> None:
    from advise.data.store import DTYPES

    if views not in (1, 3):
        raise ConfigError(f"--views must be 1 or 3 (centre, or three crops), got {views}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if frame_stride < 1:
        raise ConfigError(f"--frame-stride must be >= 1, got {frame_stride}")


def _extraction_spec(
    run: Setup, sfu: nn.Module, pooled: bool, views: int, frame_stride: int, dtype: str
) -> StoreSpec:
    """What the store's tokens will be: the run's IFM, and `sfu`'s output shape (probed)."""
    config, size = run.config, run.ifm.img_size
    probe = sfu(run.ifm(torch.zeros(1, 1, 3, size, size, device=run.device)))  # [1, D, 1, h, w]
    return StoreSpec(
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


def _store_videos(
    run: Setup,
    sfu: nn.Module,
    writer: StoreWriter,
    todo: list[tuple[int, Any]],
    chunk_frames: int,
    progress: bool | None,
) -> int:
    """Decode, encode and store the (store index, record) videos of `todo`; returns how many
    were stored (a video that does not decode is skipped, warned)."""
    from tqdm import tqdm

    from advise.data.store import FrameViewsDataset

    spec = writer.spec
    views = loaders.views_transform(run.preprocessing, spec.views)
    dataset = FrameViewsDataset(todo, spec.frame_stride, views)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=run.config.data.num_workers
    )
    show = sys.stderr.isatty() if progress is None else progress
    failed = 0
    for item in tqdm(loader, total=len(todo), desc="extract", disable=not show):
        if not isinstance(item, dict):
            failed += 1
            continue
        writer.write(item["index"], encode_views(run.ifm, sfu, item["views"], chunk_frames))
    return len(todo) - failed


def joinable_parts(
    ifm: Any, spec: StoreSpec, parts: Sequence[Path], records: Sequence[Any]
) -> list[FeatureStore]:
    """The part stores of a concatenated IFM whose tokens, joined along channels, are the ones
    `ifm` would store under `spec`, bit for bit; else [] (then the IFM runs). They are when
    every part sees the pair's very frames (its mean, std and interpolation: the pair does not
    re-normalise), on the pair's grid (no pooling to the coarsest), and each part store holds
    every video of `records`, stored by that part with the spec's size, precision, views,
    frame stride, layers and an elementwise dtype (fp32 or fp16), whole (not pooled)."""
    if not isinstance(ifm, CombinedIFM) or len(parts) != len(ifm.parts):
        return []
    if spec.dtype not in ("fp32", "fp16") or spec.spatial is not None or spec.channels is not None:
        return []
    same = ("img_size", "precision", "interpolation", "views", "frame_stride", "dtype",
            "layers", "layer_merge")  # fmt: skip
    stores = []
    for part, path in zip(ifm.parts, parts, strict=True):
        if (part.mean, part.std, part.interpolation) != (ifm.mean, ifm.std, ifm.interpolation):
            return []
        if tuple(part.grid_size(ifm.img_size)) != tuple(spec.token_shape[1:]):
            return []
        try:
            store = FeatureStore(path)
        except StoreError:
            return []
        theirs = store.spec
        if (theirs.ifm, theirs.weights_hash) != (part.name, part.weights_hash()) or any(
            getattr(theirs, key) != getattr(spec, key) for key in same
        ):
            return []
        if theirs.spatial is not None or theirs.channels is not None:
            return []
        if any(store.index_of_record(record) is None for record in records):
            return []
        stores.append(store)
    return stores


def _join_videos(
    stores: list[FeatureStore], writer: StoreWriter, todo: list[tuple[int, Any]]
) -> tuple[int, list[tuple[int, Any]]]:
    """Store each video of `todo` as its parts' stored tokens joined along channels. Returns
    how many were stored, and the videos a part store could not give (damaged there), for the
    IFM to encode."""
    from advise.data.video import VideoDecodeError

    stored, left = 0, []
    for index, record in todo:
        try:
            tokens = []
            for store in stores:
                video = store.index_of_record(record)
                tokens.append(store.read(video, np.arange(store.num_frames(video))))
        except VideoDecodeError:
            left.append((index, record))
            continue
        if len({part.shape[1] for part in tokens}) != 1:  # frame counts differ
            left.append((index, record))
            continue
        writer.write(index, torch.cat(tokens, dim=2).numpy())  # [V, T, sum D, h, w]
        stored += 1
    return stored, left


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
