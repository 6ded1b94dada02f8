"""Config -> datasets: the one place that turns `DataConfig` into readers, samplers, transforms."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from advise.config import Config, ConfigError, DataConfig
from advise.data.check import drop_quarantined
from advise.data.datasets import ClipDataset, MultiViewDataset, PretextDataset
from advise.data.formats import (
    FORMATS,
    AnnotatedSplit,
    AnnotationError,
    check_disjoint,
    layout_help,
    on_train_classes,
    read_format,
)
from advise.data.sampling import ClipSampler
from advise.data.sources import Source, source_of
from advise.data.store import CentreTokens, TokenViews, TrainTokens, pooling_at_read
from advise.data.transforms import Preprocessing, test_views, train_transform
from advise.models.sfu import SFU


def read_split(data: DataConfig, subset: str) -> AnnotatedSplit:
    """The annotated videos of `subset` ("train" or "test"); errors name file and line.

    `data.format` picks the reader (`advise.data.formats.FORMATS`); what `data.annotations` and
    `data.test_annotations` name depends on it:

        ucf101, hmdb51  data.annotations = the folder of the split lists (empty: found under
                        data.root), data.split = 1, 2 or 3; data.test_annotations unused
        diving48, ssv2, k400, csv
                        data.annotations = the train file, data.test_annotations = the test
                        (validation) file; videos are found under data.root
        folders         no annotation files: data.root/<class>/<video>, split per class by
                        data.split_seed and data.test_fraction, or data.root/train/<class>/ and
                        data.root/test/<class>/; data.split unused

    Files or folders the format needs that are missing raise `LayoutError`, naming the format,
    what it needs and the formats there are (`advise.data.formats.read_format`).

    The other subset's list is read too, without touching its videos: a video in both raises
    `AnnotationError` at the test list's line (train/test overlap makes a test score
    meaningless), and so does a test line whose class the train split lacks; the test split
    takes the train split's class list (`on_train_classes`), so the test list never changes
    train labels. The checks are skipped when the other subset's list is not configured,
    absent or empty; a malformed line in it is an error. Videos listed in `data.quarantine`
    (written by `advise check-data`) are left out, with a warning saying how many.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    if not data.root:
        raise ConfigError("data.root is empty: set it to the dataset folder (--set data.root=DIR)")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.root {str(root)!r} is not a folder")
    split = _read(data, root, subset, check_files=True)
    split = _check_against_other_subset(data, root, split, subset)
    if data.quarantine:  # videos `advise check-data` found unusable
        split = drop_quarantined(split, Path(data.quarantine).expanduser())
    return split


def _check_against_other_subset(
    data: DataConfig, root: Path, split: AnnotatedSplit, subset: str
) -> AnnotatedSplit:
    """Refuse a video in both subsets or a test class train lacks; give both train's classes."""
    other_subset = "test" if subset == "train" else "train"
    data_format = FORMATS[data.format]
    if not data_format.split_folder and not _annotation_file(data, other_subset):
        return split
    try:
        with warnings.catch_warnings():  # its size or missing clips concern the other subset
            warnings.simplefilter("ignore")
            other = _read(data, root, other_subset, check_files=False)
    except AnnotationError as error:
        if error.line != 0:  # a malformed line: report it now, not after training
            raise
        return split  # no such list, or an empty one (`advise synth pool`): nothing overlaps
    train, test = (split, other) if subset == "train" else (other, split)
    check_disjoint(train, test, key=data_format.clip_key)
    # Formats that take their classes from each list itself (CSV, Kinetics, Diving48 without
    # its vocabulary) number a test list's classes on their own: "run" could be class 1 in
    # train and 0 in test. The train list's numbering is the model's; test follows it.
    test = on_train_classes(train, test)
    return train if subset == "train" else test


def _annotation_file(data: DataConfig, subset: str) -> Path | None:
    name = data.annotations if subset == "train" else data.test_annotations
    return Path(name).expanduser() if name else None


def _read(data: DataConfig, root: Path, subset: str, check_files: bool) -> AnnotatedSplit:
    data_format = FORMATS[data.format]
    if data_format.split_folder:  # every split's lists in one folder
        annotations = Path(data.annotations).expanduser() if data.annotations else None
    else:
        annotations = _annotation_file(data, subset)
        if annotations is None:
            key = "data.annotations" if subset == "train" else "data.test_annotations"
            what = "train" if subset == "train" else "test (validation)"
            raise ConfigError(
                f"{key} is empty: the {data.format} format needs the {what} file; "
                f"{layout_help(data.format, root)}"
            )
    # the format's own keys (folders: data.split_seed, data.test_fraction); one the config
    # lacks is left out, so the reader's default applies
    options = {key: getattr(data, key) for key in data_format.options if hasattr(data, key)}
    return read_format(data.format, root, annotations, subset, data.split, check_files, **options)


def _train_transform(config: Config, prep: Preprocessing):
    data = config.data
    return train_transform(
        prep.size,
        prep.mean,
        prep.std,
        scale=(data.scale_min, 1.0),
        flip=data.flip,
        color_jitter_p=data.color_jitter_p,
        grayscale_p=data.grayscale_p,
        interpolation=prep.interpolation,
    )


def views_transform(prep: Preprocessing, num_crops: int):
    """The deterministic test views (`num_crops` spatial crops) of the IFM's preprocessing."""
    return test_views(
        prep.size, prep.mean, prep.std, num_crops=num_crops, interpolation=prep.interpolation
    )


def pretrain_dataset(
    config: Config,
    split: AnnotatedSplit,
    prep: Preprocessing | None,
    store: Any,
    sampler: ClipSampler,
) -> PretextDataset:
    """The pretext's clips (`sampler`, e.g. playback rates) of every video in `split`; the
    split's labels are not used.

    From a feature store (`store`), the sampler indexes its stored frames and the token-grid
    augmentation (`TrainTokens`: view, grid crop, flip) replaces the frame transform.
    """
    transform = _train_tokens(config) if store is not None else _train_transform(config, prep)
    _check_store_covers(store, split, config)
    return PretextDataset(
        split.records, sampler, transform, seed=config.train.seed,
        source=_source(config, split, store),
    )  # fmt: skip


def pretext_eval_dataset(
    config: Config,
    split: AnnotatedSplit,
    prep: Preprocessing | None,
    store: Any,
    sampler: ClipSampler,
) -> PretextDataset:
    """The pretext's clips with the deterministic centre-crop view, for measuring it."""
    centre = CentreTokens() if store is not None else SingleView(views_transform(prep, 1))
    _check_store_covers(store, split, config)
    return PretextDataset(
        split.records, sampler, centre, seed=config.train.seed + 1,
        source=_source(config, split, store),
    )  # fmt: skip


class SingleView:
    """Adapts a views transform ([S, T, 3, H, W] out) to a one-view transform."""

    def __init__(self, views) -> None:
        self.views = views

    def __call__(self, clip):
        return self.views(clip)[0]


def finetune_dataset(
    config: Config, split: AnnotatedSplit, prep: Preprocessing | None, store: Any = None
) -> ClipDataset:
    transform = _train_tokens(config) if store is not None else _train_transform(config, prep)
    _check_store_covers(store, split, config)
    return ClipDataset(
        split.records,
        config.data.num_frames,
        transform,
        train=True,
        seed=config.train.seed,
        source=_source(config, split, store),
    )


def eval_dataset(
    config: Config,
    split: AnnotatedSplit,
    prep: Preprocessing | None,
    num_clips: int,
    num_crops: int,
    store: Any = None,
) -> MultiViewDataset:
    views = TokenViews(num_crops) if store is not None else views_transform(prep, num_crops)
    _check_store_covers(store, split, config)
    return MultiViewDataset(
        split.records, config.data.num_frames, num_clips, views,
        source=_source(config, split, store),
    )  # fmt: skip


def _source(config: Config, split: AnnotatedSplit, store: Any) -> Source:
    """The split's decoded videos, or its stored tokens pooled by the config's SFU on the axes
    the store kept whole (`advise.data.store.pooling_at_read`)."""
    pool = None
    if store is not None:
        spatial, channels = pooling_at_read(store.spec, config.sfu.spatial, config.sfu.channels)
        if spatial is not None or channels is not None:
            pool = SFU(spatial, channels)
    return source_of(split.records, store, pool, config.data.in_memory)


def worker_count(config: Config) -> int:
    """DataLoader workers for the config: none for tokens held in memory, whose reads are
    indexing (a worker would only copy them), else data.num_workers."""
    in_memory = config.data.in_memory and config.data.store_path is not None
    return 0 if in_memory else config.data.num_workers


def _check_store_covers(store: Any, split: AnnotatedSplit, config: Config) -> None:
    """A store lacking more of the split's videos than data.max_bad_fraction is an error."""
    if store is not None:
        store.check_covers(split.records, config.data.max_bad_fraction)


def _train_tokens(config: Config) -> TrainTokens:
    return TrainTokens(flip=config.data.flip, scale_min=config.data.scale_min)
