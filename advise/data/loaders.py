"""Config -> datasets: the one place that turns `DataConfig` into readers, samplers, transforms."""

from __future__ import annotations

from pathlib import Path

from advise.config import Config, ConfigError, DataConfig, PretextConfig
from advise.data.datasets import ClipDataset, MultiViewDataset, PlaybackRateDataset
from advise.data.formats import AnnotatedSplit, read_csv_annotations, read_ucf101
from advise.data.sampling import PlaybackRateSampler
from advise.data.transforms import test_views, train_transform


def read_split(data: DataConfig, subset: str) -> AnnotatedSplit:
    """The annotated videos of `subset` ("train" or "test"); errors name file and line."""
    if not data.root:
        raise ConfigError("data.root is empty: set it to the dataset folder (--set data.root=DIR)")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.root {str(root)!r} is not a folder")
    if data.format == "ucf101":
        annotations = Path(data.annotations).expanduser() if data.annotations else None
        return read_ucf101(root, split=data.split, subset=subset, annotation_dir=annotations)
    csv_path = data.annotations if subset == "train" else data.test_annotations
    if not csv_path:
        key = "data.annotations" if subset == "train" else "data.test_annotations"
        raise ConfigError(f"{key} is empty: the csv format needs the {subset} CSV file")
    return read_csv_annotations(Path(csv_path).expanduser(), root=root)


def playback_rate_sampler(data: DataConfig, pretext: PretextConfig) -> PlaybackRateSampler:
    return PlaybackRateSampler(
        speeds=pretext.speeds,
        num_frames=data.num_frames,
        stride=data.stride,
        jitter=pretext.jitter,
        clips_per_video=pretext.clips_per_video,
        reverse=pretext.reverse,
    )


def _train_transform(config: Config, size: int, mean, std):
    data = config.data
    return train_transform(
        size,
        mean,
        std,
        scale=(data.scale_min, 1.0),
        flip=data.flip,
        color_jitter_p=data.color_jitter_p,
        grayscale_p=data.grayscale_p,
    )


def pretrain_dataset(
    config: Config, split: AnnotatedSplit, size: int, mean, std
) -> PlaybackRateDataset:
    """Playback-rate clips of every video in `split` (labels in the split are ignored)."""
    sampler = playback_rate_sampler(config.data, config.pretext)
    transform = _train_transform(config, size, mean, std)
    return PlaybackRateDataset(split.records, sampler, transform, seed=config.train.seed)


def pretext_eval_dataset(
    config: Config, split: AnnotatedSplit, size: int, mean, std
) -> PlaybackRateDataset:
    """Playback-rate clips with the deterministic centre-crop view, for measuring speed accuracy."""
    sampler = playback_rate_sampler(config.data, config.pretext)
    centre = test_views(size, mean, std, num_crops=1)
    return PlaybackRateDataset(
        split.records, sampler, SingleView(centre), seed=config.train.seed + 1
    )


class SingleView:
    """Adapts a views transform ([S, T, 3, H, W] out) to a one-view transform."""

    def __init__(self, views) -> None:
        self.views = views

    def __call__(self, clip):
        return self.views(clip)[0]


def finetune_dataset(config: Config, split: AnnotatedSplit, size: int, mean, std) -> ClipDataset:
    transform = _train_transform(config, size, mean, std)
    return ClipDataset(
        split.records, config.data.num_frames, transform, train=True, seed=config.train.seed
    )


def eval_dataset(
    config: Config, split: AnnotatedSplit, size: int, mean, std, num_clips: int, num_crops: int
) -> MultiViewDataset:
    views = test_views(size, mean, std, num_crops=num_crops)
    return MultiViewDataset(split.records, config.data.num_frames, num_clips, views)
