"""Training tasks: each owns its forward pass and loss, so the loop never asks which it runs.

Both tasks are clip classification with cross-entropy; they differ in what the labels mean
(playback-rate index vs action class) and in label smoothing (0.05 for the pretext task, as
in the paper's configuration; none for fine-tuning).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def forward_batch(model: nn.Module, batch: dict[str, Any], device: torch.device | None = None):
    """The model's output for a collated batch, whatever its input: stored IFM tokens
    (`input_kind` "tokens": [N, D, T, h, w], fed as `model(tokens=...)`) or decoded frames
    ("frames": [N, T, 3, H, W] normalised, fed to `model(...)`). Moves the input to `device`
    when given.

    The one place that decides how a batch enters the model: training steps, evaluation,
    pretext evaluation and prediction all call it."""
    inputs = batch["input"] if device is None else batch["input"].to(device)
    if batch["input_kind"] == "tokens":
        return model(tokens=inputs)
    return model(inputs)


def batch_tokens(model: nn.Module, batch: dict[str, Any], device: torch.device | None = None):
    """The IFM tokens [N, D, T, h, w] of a batch: stored, or the frozen IFM's for its frames
    (for a task that feeds the same tokens to more than one network)."""
    inputs = batch["input"] if device is None else batch["input"].to(device)
    if batch["input_kind"] == "tokens":
        return inputs
    base = model.module if hasattr(model, "module") else model  # DDP wraps the model
    return base.ifm(inputs)


class Task(Protocol):
    """What the training loop asks of a task (`advise.train.engine.train`): `step` does one
    forward and loss per batch; `start` sees the model before training (and before a resume
    restores anything), `after_update` runs after each optimiser step, and `state_tensors` /
    `load_state_tensors` carry any state the task keeps into and out of checkpoints."""

    name: str
    min_clips: int  # a batch with fewer clips is skipped (BatchNorm needs two)

    def start(self, model: nn.Module) -> None: ...

    def step(self, model: nn.Module, batch: dict) -> dict[str, Tensor | float | int]: ...

    def after_update(self, model: nn.Module, step: int, total_steps: int) -> None: ...

    def state_tensors(self) -> dict[str, Tensor]: ...

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None: ...


class StatelessTask:
    """The hooks of `Task` for a task that keeps no state: each does nothing."""

    min_clips = 2

    def start(self, model: nn.Module) -> None:
        pass

    def after_update(self, model: nn.Module, step: int, total_steps: int) -> None:
        pass

    def state_tensors(self) -> dict[str, Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if tensors:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(tensors)[:3]}")


class ClassificationTask(StatelessTask):
    """Cross-entropy clip classification over a collated batch.

    The batch holds `labels` (long [N]) and its `input` of `input_kind` (`forward_batch`).
    Inputs are expected on the model's
    device already (the loop moves them); labels follow the logits.
    """

    name = "classification"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def logits(self, model: nn.Module, batch: dict) -> Tensor:
        """Model scores for the batch: [N, num_classes]."""
        return forward_batch(model, batch)

    def step(self, model: nn.Module, batch: dict) -> dict[str, Tensor | float | int]:
        """Forward one batch: `{"loss": scalar Tensor (with graph), "acc": top-1 in percent
        over the batch, "num": number of clips}`. The caller does backward and the update.

        The loss is computed in float32 even when the model runs under bf16 autocast.
        Raises ValueError on a batch with no clips (e.g. every video failed to decode).
        """
        labels = batch["labels"]
        if labels.numel() == 0:
            raise ValueError(f"{self.name} task: empty batch (no clips); skip it in the loop")
        logits = self.logits(model, batch)
        labels = labels.to(logits.device)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == labels).sum().item()
        return {"loss": loss, "acc": 100.0 * correct / labels.numel(), "num": labels.numel()}


class PlaybackRateTask(ClassificationTask):
    """Playback-rate perception (the pretext task): classify each clip's speed index."""

    name = "playback_rate"

    def __init__(self, label_smoothing: float = 0.05) -> None:
        super().__init__(label_smoothing)


class ActionTask(ClassificationTask):
    """Action recognition (fine-tuning): classify each clip's action."""

    name = "action"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
