"""Playback-rate perception (PRP), the paper's pretext task: classify the speed a clip plays at.

Clips: `PlaybackRateSampler` (random speed from `pretext.prp.speeds`, jittered, random start;
reversed playback as extra classes with `reverse`). Loss: cross-entropy with
`pretext.prp.label_smoothing`. Measure: speed accuracy on `data.root`'s videos, clips drawn as
in pre-training (fixed seed) through the deterministic centre-crop view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advise.data import loaders
from advise.data.datasets import test_batches
from advise.data.sampling import PlaybackRateSampler
from advise.train.tasks import PlaybackRateTask, forward_batch

if TYPE_CHECKING:
    from advise.config import Config


class PlaybackRatePretext:
    kind = "prp"
    metric = "speed_acc"
    metric_label = "PRP speed acc"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.section = config.pretext.prp
        names = [f"speed {speed}" for speed in self.section.speeds]
        if self.section.reverse:
            names += [f"speed -{speed}" for speed in self.section.speeds]
        self.class_names = names

    def sampler(self) -> PlaybackRateSampler:
        return PlaybackRateSampler(
            speeds=self.section.speeds,
            num_frames=self.config.data.num_frames,
            stride=self.config.data.stride,
            jitter=self.section.jitter,
            clips_per_video=self.section.clips_per_video,
            reverse=self.section.reverse,
        )

    def head(self, in_dim: int) -> nn.Module | None:
        return None  # the config's head, one output per speed class

    def task(self) -> PlaybackRateTask:
        return PlaybackRateTask(label_smoothing=self.section.label_smoothing)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, config: Config, run: Any) -> dict[str, Any]:
        """Speed accuracy (percent of clips) of `model` on `config.data`'s train split."""
        split = loaders.read_split(config.data, "train")
        dataset = loaders.pretext_eval_dataset(
            config, split, run.frame_preprocessing, run.store, self.sampler()
        )
        model.eval()
        correct = total = 0
        for batch in test_batches(dataset, config.eval.batch_size, config.data.num_workers):
            logits = forward_batch(model, batch, run.device)
            correct += (logits.argmax(1).cpu() == batch["labels"]).sum().item()
            total += batch["labels"].numel()
        return {
            self.metric: 100.0 * correct / max(total, 1),
            "clips": total,
            "videos": len(split.records),
        }
