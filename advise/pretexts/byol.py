"""BYOL on clips (Grill et al. 2020, as the method's authors apply it to video): no negatives.

Each video gives two clips at playback rate 1 with independent random starts and
augmentations. The online network (SFU -> TMM -> projector -> predictor, the model being
trained) predicts, for each clip, the embedding a momentum target network (SFU -> TMM ->
projector, an exponential moving average of the online weights) gives the other clip:

    loss = mean over pairs of (2 - 2 cos(p_a, sg(z_b))) + (2 - 2 cos(p_b, sg(z_a)))

The target's momentum rises from `pretext.byol.momentum` to 1 on a cosine over the run. The
target is this pretext's state: it is saved in every checkpoint and restored on resume, so a
resumed run ends bit-identical to an uninterrupted one. Under DDP every process applies the
same update to identical online weights, so the targets stay identical with no communication.

Measure: the kNN top-1 of the trained TMM's pooled features on `config.data`, the test
split's videos classified by their nearest train video (cosine, one centre clip each): the
pretext needs no labels, its measure does (None for an unlabelled split such as the pool).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advise.data import loaders
from advise.data.datasets import test_batches
from advise.data.sampling import PlaybackRateSampler
from advise.models.heads import global_average_pool
from advise.train.tasks import StatelessTask, batch_tokens

if TYPE_CHECKING:
    from advise.config import Config

TARGET_PARTS = ("sfu", "tmm")  # with the head's projector: what the target network copies


class Projector(nn.Module):
    """Pool -> FC -> BN -> ReLU -> FC: [B, in_dim, T, h, w] -> embeddings [B, dim].

    No bias anywhere: the first FC is followed by a batch norm, and the last feeds the
    predictor's FC and batch norm, which remove any constant, so a bias would get a true
    gradient of zero whose float noise AdamW turns into full-size random steps (measured: the
    target's copy of such a bias differed by 6e-4 between a 1- and a 2-process run)."""

    def __init__(self, in_dim: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden, bias=False)
        self.norm = nn.BatchNorm1d(hidden)
        self.activation = nn.ReLU(inplace=True)
        self.out = nn.Linear(hidden, dim, bias=False)

    def forward(self, features: Tensor) -> Tensor:  # [B, in_dim, T, h, w] -> [B, dim]
        pooled = global_average_pool(features)  # [B, in_dim]
        return self.out(self.activation(self.norm(self.hidden(pooled))))


class BYOLHead(nn.Module):
    """`Projector` then predictor (FC -> BN -> ReLU -> FC). Input [B, in_dim, T, h, w] ->
    predictions [B, dim]; `projector` alone gives the embeddings [B, dim] the target network
    makes."""

    def __init__(self, in_dim: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.projector = Projector(in_dim, hidden, dim)
        self.predictor = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def forward(self, features: Tensor) -> Tensor:  # [B, D, T, h, w] -> [B, dim]
        return self.predictor(self.projector(features))


class BYOLTask(StatelessTask):
    """The BYOL step over a batch of clip pairs (clips 2i and 2i + 1 come from one video)."""

    name = "byol"
    min_clips = 4  # two pairs: the projector's and predictor's batch norms need two samples

    def __init__(self, momentum: float) -> None:
        self.base_momentum = momentum
        self.target: nn.ModuleDict | None = None

    def start(self, model: nn.Module) -> None:
        """The target network starts as a copy of the online SFU, TMM and projector."""
        parts = {name: getattr(model, name) for name in TARGET_PARTS}
        parts["projector"] = model.head.projector
        self.target = copy.deepcopy(nn.ModuleDict(parts)).requires_grad_(False)

    def _target_embeddings(self, tokens: Tensor) -> Tensor:  # [N, D, T, h, w] -> [N, dim]
        target = self.target
        target.train()  # batch statistics, as the online network sees them
        return target["projector"](target["tmm"](target["sfu"](tokens)))

    def step(self, model: nn.Module, batch: dict) -> dict[str, Tensor | float | int]:
        """`{"loss", "acc", "num"}`: acc is the percent of clips whose partner's target
        embedding is the nearest of the batch's to their prediction (a batch-level check that
        the two clips of a video are found to belong together)."""
        tokens = batch_tokens(model, batch)  # frozen: no graph; one IFM pass for both nets
        count = tokens.shape[0]
        if count < 4 or count % 2:
            raise ValueError(f"byol task: needs clip pairs, at least two, got {count} clips")
        predictions = F.normalize(model(tokens=tokens).float(), dim=1)  # [N, dim]
        with torch.no_grad():
            targets = F.normalize(self._target_embeddings(tokens).float(), dim=1)  # [N, dim]
        partner = torch.arange(count, device=tokens.device) ^ 1  # 0 <-> 1, 2 <-> 3, ...
        loss = (2 - 2 * (predictions * targets[partner]).sum(dim=1)).mean() * 2
        with torch.no_grad():
            nearest = (predictions @ targets.T).argmax(dim=1)
            found = (nearest == partner).sum().item()
        return {"loss": loss, "acc": 100.0 * found / count, "num": count}

    def momentum(self, step: int, total_steps: int) -> float:
        """The EMA momentum after update `step` (0-based) of `total_steps`: cosine to 1."""
        progress = (step + 1) / max(total_steps, 1)
        return 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def after_update(self, model: nn.Module, step: int, total_steps: int) -> None:
        """target <- m target + (1 - m) online for weights; batch-norm buffers copied."""
        m = self.momentum(step, total_steps)
        online = {name: getattr(model, name) for name in TARGET_PARTS}
        online["projector"] = model.head.projector
        for name, target_part in self.target.items():
            source = online[name]
            for mine, theirs in zip(target_part.parameters(), source.parameters(), strict=True):
                mine.mul_(m).add_(theirs.detach(), alpha=1 - m)
            for mine, theirs in zip(target_part.buffers(), source.buffers(), strict=True):
                mine.copy_(theirs)

    def state_tensors(self) -> dict[str, Tensor]:
        return {f"target.{key}": value for key, value in self.target.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        prefix = "target."
        self.target.load_state_dict(
            {key[len(prefix) :]: value for key, value in tensors.items()}, strict=True
        )


class BYOLPretext:
    kind = "byol"
    metric = "knn_top1"
    metric_label = "BYOL kNN top-1"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.section = config.pretext.byol
        self.class_names: list[str] = []  # it predicts embeddings, not classes

    def sampler(self) -> PlaybackRateSampler:
        """Two clips per video at rate 1, each with its own random start (label 0)."""
        data = self.config.data
        return PlaybackRateSampler(
            speeds=(1,), num_frames=data.num_frames, stride=data.stride, clips_per_video=2,
            jitter=0.0,
        )  # fmt: skip

    def head(self, in_dim: int) -> nn.Module:
        return BYOLHead(in_dim, hidden=self.section.hidden, dim=self.section.dim)

    def task(self) -> BYOLTask:
        return BYOLTask(momentum=self.section.momentum)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, config: Config, run: Any) -> dict[str, Any]:
        """kNN top-1 (percent) of the test videos by their nearest train video's class."""
        bank, bank_labels = _features(model, config, "train", run)
        if len(set(bank_labels.tolist())) < 2:
            return {self.metric: None, "note": "the split has no classes to find"}
        queries, labels = _features(model, config, "test", run)
        nearest = (queries @ bank.T).argmax(dim=1)
        correct = (bank_labels[nearest] == labels).sum().item()
        return {
            self.metric: 100.0 * correct / max(len(labels), 1),
            "train_videos": len(bank_labels),
            "test_videos": len(labels),
        }


def _features(model: nn.Module, config: Config, subset: str, run: Any) -> tuple[Tensor, Tensor]:
    """Unit-length pooled TMM features [V, D] of one centre clip per video, and the labels."""
    split = loaders.read_split(config.data, subset)
    dataset = loaders.eval_dataset(config, split, run.frame_preprocessing, 1, 1, run.store)
    model.eval()
    features, labels = [], []
    for batch in test_batches(dataset, config.eval.batch_size, config.data.num_workers):
        tokens = batch_tokens(model, batch, run.device)
        pooled = global_average_pool(model.tmm(model.sfu(tokens))).float().cpu()
        features.append(F.normalize(pooled, dim=1))
        labels.append(batch["labels"])
    return torch.cat(features), torch.cat(labels)
