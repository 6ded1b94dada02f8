"""AdamW parameter groups, the warm-up + cosine schedule and the linear scaling rule."""

import math

import pytest
import torch
from torch import nn

from advise.train.optim import build_optimizer, lr_at, parameter_groups, scaled_lr, set_lr


def test_scaled_lr_is_linear_in_batch():
    assert scaled_lr(1e-3, 256) == pytest.approx(1e-3)
    assert scaled_lr(1e-3, 32) == pytest.approx(1.25e-4)
    assert scaled_lr(1e-3, 32, reference_batch=32) == pytest.approx(1e-3)
    with pytest.raises(ValueError):
        scaled_lr(1e-3, 0)


def test_lr_at_warmup_then_cosine_to_min():
    peak, low = 1.0, 0.1
    schedule = [lr_at(step, 110, 10, peak, low) for step in range(120)]
    assert schedule[0] == 0.0
    assert schedule[5] == pytest.approx(0.5)
    assert schedule[10] == pytest.approx(peak)
    assert schedule[60] == pytest.approx((peak + low) / 2)  # half-way through the cosine
    assert schedule[35] == pytest.approx(low + (peak - low) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert all(a < b for a, b in zip(schedule[:10], schedule[1:11], strict=True))
    assert all(a >= b for a, b in zip(schedule[10:110], schedule[11:111], strict=True))
    assert schedule[109] > low
    assert schedule[110:] == [low] * 10


def test_lr_at_edge_cases():
    assert lr_at(0, 10, 0, 2.0) == 2.0  # no warm-up: start at the peak
    assert lr_at(10, 10, 0, 2.0) == 0.0
    # Warm-up longer than the run is clipped: a linear ramp over the whole run.
    assert lr_at(5, 10, 20, 2.0) == pytest.approx(1.0)
    assert lr_at(10, 10, 20, 2.0, min_lr=0.5) == 0.5
    for bad in [(-1, 10, 0), (0, 0, 0), (0, 10, -1)]:
        with pytest.raises(ValueError):
            lr_at(*bad, peak_lr=1.0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.conv = nn.Conv1d(3, 4, 3)
        self.norm = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 2)
        self.layer_norm = nn.LayerNorm(2)
        self.tied = self.fc  # a shared module must not give a parameter twice


def test_build_optimizer_groups_decay_only_weights():
    net = Net()
    optimizer = build_optimizer(net.named_parameters(remove_duplicate=False), 1e-3, 0.05)
    groups = {group["group_name"]: group for group in optimizer.param_groups}
    assert groups["decay"]["weight_decay"] == 0.05
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert sorted(groups["decay"]["param_names"]) == ["conv.weight", "fc.weight"]
    assert sorted(groups["no_decay"]["param_names"]) == [
        "conv.bias", "fc.bias", "layer_norm.bias", "layer_norm.weight", "norm.bias",
        "norm.weight",
    ]  # fmt: skip
    # With zero gradients AdamW's only change is the decoupled decay: p *= 1 - lr * wd.
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    for param in net.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    for name, param in net.named_parameters():
        if name in ("conv.weight", "fc.weight"):
            torch.testing.assert_close(param, before[name] * (1 - 1e-3 * 0.05))
        else:
            assert torch.equal(param, before[name]), name


def test_set_lr_and_errors():
    net = Net()
    optimizer = build_optimizer(net.named_parameters(), 1e-3, 0.0)
    set_lr(optimizer, 0.25)
    assert [group["lr"] for group in optimizer.param_groups] == [0.25, 0.25]
    assert len(parameter_groups([("w", nn.Parameter(torch.ones(2, 2)))], 0.1)) == 1
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(net.frozen.named_parameters(), 1e-3, 0.0)
