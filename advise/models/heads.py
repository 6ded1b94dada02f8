"""Classification heads on a [B, D, T, h, w] feature volume: global average pool, then FC."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def global_average_pool(features: Tensor) -> Tensor:  # [B, D, T, h, w] -> [B, D]
    """Mean over time and space, in the features' memory layout: channels-last features (a
    TMM's on a CPU) are averaged as the rows of a [B, T * h * w, D] view, so the gradient
    flowing back keeps that layout (a mean over dims 2-4 sends back one whose layout every
    later backward op on a CPU handles several times slower)."""
    channels_last = features.is_contiguous(memory_format=torch.channels_last_3d)
    if features.is_contiguous() or not channels_last:
        return features.mean(dim=(2, 3, 4))
    return features.permute(0, 2, 3, 4, 1).flatten(1, 3).mean(1)


class MLPHead(nn.Module):
    """The paper's head: pool -> FC(in_dim, hidden) -> BN1d -> ReLU -> dropout -> FC.

    Input [B, in_dim, T, h, w] -> logits [B, num_classes]. BatchNorm1d needs more than one clip
    per batch in training mode.
    """

    def __init__(
        self, in_dim: int, num_classes: int, hidden: int = 1024, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.num_classes = num_classes
        # no bias: the batch norm after it removes any constant, so a bias would get a true
        # gradient of zero, whose float noise AdamW would turn into full-size random steps
        self.hidden = nn.Linear(in_dim, hidden, bias=False)
        self.norm = nn.BatchNorm1d(hidden)
        self.activation = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, features: Tensor) -> Tensor:  # [B, D, T, h, w] -> [B, num_classes]
        pooled = global_average_pool(features)  # [B, D]
        hidden = self.activation(self.norm(self.hidden(pooled)))  # [B, hidden]
        return self.classifier(self.dropout(hidden))


class LinearHead(nn.Module):
    """Pool -> dropout -> FC. Input [B, in_dim, T, h, w] -> logits [B, num_classes]."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:  # [B, D, T, h, w] -> [B, num_classes]
        return self.classifier(self.dropout(global_average_pool(features)))
