"""Tasks own their forward pass and loss: clips or stored tokens in, loss/acc/num out."""

import math

import pytest
import torch
from torch import nn

from advise.train.tasks import ActionTask, ClassificationTask, PlaybackRateTask


class TinyModel(nn.Module):
    """Stand-in for AdViSe: frames [N, T, 3, H, W] or tokens [N, D, T, h, w] -> logits."""

    def __init__(self, clip_shape=(2, 3, 4, 4), token_shape=(6, 2, 2, 2), num_classes=4):
        super().__init__()
        self.from_frames = nn.Linear(math.prod(clip_shape), num_classes)
        self.from_tokens = nn.Linear(math.prod(token_shape), num_classes)
        self.frame_calls = self.token_calls = 0

    def forward(self, clips=None, *, tokens=None):  # as AdViSe: frames, or tokens=
        if tokens is not None:
            self.token_calls += 1
            return self.from_tokens(tokens.flatten(1))  # [N, D*T*h*w] -> [N, C]
        self.frame_calls += 1
        return self.from_frames(clips.flatten(1))  # [N, T*3*H*W] -> [N, C]


class FixedLogits(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, clips):
        return self.logits


def make_batch(generator, num_clips=12, with_tokens=False):
    frames = torch.randn(num_clips, 2, 3, 4, 4, generator=generator)
    batch = {
        "input": frames,
        "input_kind": "frames",
        "labels": torch.randint(0, 4, (num_clips,), generator=generator),
    }
    if with_tokens:
        batch["input"] = torch.randn(num_clips, 6, 2, 2, 2, generator=generator)
        batch["input_kind"] = "tokens"
    return batch


@pytest.mark.parametrize("task_class", [PlaybackRateTask, ActionTask])
@pytest.mark.parametrize("with_tokens", [False, True])
def test_steps_on_a_fixed_batch_lower_the_loss(task_class, with_tokens):
    torch.manual_seed(0)
    model, task = TinyModel(), task_class()
    batch = make_batch(torch.Generator().manual_seed(1), with_tokens=with_tokens)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        result = task.step(model, batch)
        optimizer.zero_grad()
        result["loss"].backward()
        optimizer.step()
        losses.append(result["loss"].item())
    assert losses[-1] < 0.3 * losses[0]
    assert result["acc"] == 100.0 and result["num"] == 12
    # Stored tokens go in as tokens (the IFM already ran when they were stored).
    assert (model.token_calls, model.frame_calls) == ((30, 0) if with_tokens else (0, 30))


def test_label_smoothing_matches_its_definition():
    logits = torch.tensor([[4.0, 0.0, -1.0, 0.5], [0.0, 3.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 3])
    batch = {"input": torch.zeros(3, 1), "input_kind": "frames", "labels": labels}
    log_probs = logits.log_softmax(dim=1)
    nll = -log_probs[torch.arange(3), labels].mean()
    uniform = -log_probs.mean()  # cross-entropy against the uniform distribution
    action = ActionTask().step(FixedLogits(logits), batch)
    prp = PlaybackRateTask().step(FixedLogits(logits), batch)
    assert PlaybackRateTask().label_smoothing == 0.05 and ActionTask().label_smoothing == 0.0
    torch.testing.assert_close(action["loss"], nll)
    torch.testing.assert_close(prp["loss"], 0.95 * nll + 0.05 * uniform)
    assert prp["loss"] > action["loss"]  # the confident rows are right: smoothing costs
    assert action["acc"] == pytest.approx(200 / 3) and action["num"] == 3


def test_loss_is_float32_under_low_precision_logits():
    logits = torch.randn(4, 3).bfloat16()
    result = ActionTask().step(
        FixedLogits(logits),
        {"input": torch.zeros(4, 1), "input_kind": "frames", "labels": torch.zeros(4).long()},
    )
    assert result["loss"].dtype == torch.float32


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty batch"):
        ActionTask().step(
            TinyModel(),
            {"input": torch.zeros(0, 2, 3, 4, 4), "input_kind": "frames", "labels": torch.zeros(0)},
        )
    with pytest.raises(ValueError, match="label_smoothing"):
        ClassificationTask(label_smoothing=1.0)
