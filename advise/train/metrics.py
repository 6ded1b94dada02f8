"""Top-k accuracy, multi-view aggregation and dAcc.

Accuracies are percentages (0-100). A video tested with several views (temporal clips x
spatial crops) is scored by the mean of its views' softmax probabilities, and counts once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def topk_correct(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, int]:
    """Number of rows whose label is among the `k` highest scores, for each `k` in `ks`.

    logits: [N, C] scores (logits or probabilities: only their order matters); labels: [N]
    class indices. Returns `{"top1": n1, "top5": n5, ...}` (counts, not percentages). A `k`
    larger than C is clipped to C (so top-5 over 3 classes counts every row).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"topk_correct needs logits [N, C] and labels [N], got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}"
        )
    num_classes = logits.shape[1]
    largest_k = min(max(ks), num_classes)
    top = logits.topk(largest_k, dim=1).indices  # [N, largest_k], best first
    hits = top == labels.to(top.device).unsqueeze(1)  # [N, largest_k]
    return {f"top{k}": int(hits[:, : min(k, num_classes)].any(dim=1).sum()) for k in ks}


def aggregate_views(logits: Tensor, video_of_clip: Tensor) -> tuple[Tensor, Tensor]:
    """Mean softmax probability over the views of each video.

    logits: [N_clips, C]; video_of_clip: [N_clips] integer video ids (any values, any order).
    Returns (video_ids [V] sorted ascending and unique, probs [V, C] float32) where row v is
    the mean of the softmax of all clips whose id is video_ids[v].
    """
    if logits.ndim != 2 or video_of_clip.shape != logits.shape[:1]:
        raise ValueError(
            f"aggregate_views needs logits [N, C] and video_of_clip [N], got "
            f"{tuple(logits.shape)} and {tuple(video_of_clip.shape)}"
        )
    video_of_clip = video_of_clip.to(logits.device)
    video_ids, row_of_clip = torch.unique(video_of_clip, sorted=True, return_inverse=True)
    probs = logits.float().softmax(dim=1)  # [N_clips, C]
    sums = probs.new_zeros(len(video_ids), probs.shape[1]).index_add_(0, row_of_clip, probs)
    counts = torch.bincount(row_of_clip, minlength=len(video_ids)).to(probs.dtype)  # [V]
    return video_ids, sums / counts.unsqueeze(1)


class AccuracyMeter:
    """Video-level top-1 / top-5 over any number of `update` calls.

    Each video's softmax probabilities are summed over all its views, across batches, so a
    video whose views arrive in different updates still counts once. `compute` scores the mean
    probability per video (multi-view accuracy) and, for comparison, `single_view_top1`: the
    accuracy of each video's first view, i.e. the first row for that video in the first update
    that contains it (for a multi-view test set in the usual order, the first temporal clip /
    first crop; for a single-view set, equal to `top1`).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every video seen so far."""
        self._prob_sums: dict[int, Tensor] = {}  # video id -> [C] float64 softmax sum
        self._view_counts: dict[int, int] = {}
        self._labels: dict[int, int] = {}
        self._first_view_correct: dict[int, bool] = {}

    @property
    def num_videos(self) -> int:
        """Number of distinct videos seen."""
        return len(self._labels)

    @torch.no_grad()
    def update(self, logits: Tensor, labels: Tensor, video_ids: Tensor) -> None:
        """Add views: logits [N, C], labels [N] (class of each view's video), video_ids [N].

        `video_ids` must identify videos across the whole evaluation (e.g. dataset indices),
        not positions within the batch: equal ids are merged into one video.

        Raises ValueError when a video appears with two different labels or class counts differ.
        """
        if logits.ndim != 2 or labels.shape != logits.shape[:1] or video_ids.shape != labels.shape:
            raise ValueError(
                "AccuracyMeter.update needs logits [N, C], labels [N], video_ids [N]; got "
                f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(video_ids.shape)}"
            )
        probs = logits.detach().double().softmax(dim=1).cpu()  # [N, C]
        predictions = probs.argmax(dim=1).tolist()
        for row, (video, label) in enumerate(zip(video_ids.tolist(), labels.tolist(), strict=True)):
            if video not in self._labels:
                self._labels[video] = label
                self._prob_sums[video] = probs[row].clone()
                self._view_counts[video] = 1
                self._first_view_correct[video] = predictions[row] == label
                continue
            self._check_consistent(video, label, probs.shape[1])
            self._prob_sums[video] += probs[row]
            self._view_counts[video] += 1

    def to_tensors(self) -> dict[str, Tensor]:
        """The meter's content as tensors (e.g. to all-gather across distributed ranks).

        Keys: `video_ids` [V] int64, `prob_sums` [V, C] float64, `view_counts` [V] int64,
        `labels` [V] int64, `first_view_correct` [V] bool; videos in first-seen order.
        """
        videos = list(self._labels)
        num_classes = self._prob_sums[videos[0]].shape[0] if videos else 0
        return {
            "video_ids": torch.tensor(videos, dtype=torch.int64),
            "prob_sums": (
                torch.stack([self._prob_sums[v] for v in videos])
                if videos
                else torch.zeros(0, num_classes, dtype=torch.float64)
            ),
            "view_counts": torch.tensor([self._view_counts[v] for v in videos], dtype=torch.int64),
            "labels": torch.tensor([self._labels[v] for v in videos], dtype=torch.int64),
            "first_view_correct": torch.tensor(
                [self._first_view_correct[v] for v in videos], dtype=torch.bool
            ),
        }

    def merge_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Add the content of another meter (`other.to_tensors()`) to this one.

        Views of a video already seen are added to it; its first view stays this meter's.
        """
        rows = zip(
            tensors["video_ids"].tolist(),
            tensors["prob_sums"].double().cpu(),
            tensors["view_counts"].tolist(),
            tensors["labels"].tolist(),
            tensors["first_view_correct"].tolist(),
            strict=True,
        )
        for video, prob_sum, view_count, label, first_correct in rows:
            if video not in self._labels:
                self._labels[video] = label
                self._prob_sums[video] = prob_sum.clone()
                self._view_counts[video] = view_count
                self._first_view_correct[video] = bool(first_correct)
                continue
            self._check_consistent(video, label, prob_sum.shape[0])
            self._prob_sums[video] += prob_sum
            self._view_counts[video] += view_count

    def _check_consistent(self, video: int, label: int, num_classes: int) -> None:
        if self._labels[video] != label:
            raise ValueError(
                f"video {video} was seen with label {self._labels[video]} and now {label}"
            )
        if self._prob_sums[video].shape[0] != num_classes:
            raise ValueError(
                f"video {video}: {num_classes} classes, earlier {self._prob_sums[video].shape[0]}"
            )

    def video_scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """(video_ids [V], labels [V], mean softmax probabilities [V, C]) per video seen,
        ids ascending."""
        videos = sorted(self._labels)
        if not videos:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty, torch.zeros(0, 0, dtype=torch.float64)
        probs = torch.stack([self._prob_sums[v] / self._view_counts[v] for v in videos])
        labels = torch.tensor([self._labels[v] for v in videos], dtype=torch.int64)
        return torch.tensor(videos, dtype=torch.int64), labels, probs

    def compute(self) -> dict[str, float | int]:
        """`{"top1", "top5", "single_view_top1"}` in percent and `"num_videos"`.

        With no video seen, the accuracies are 0.0 and `num_videos` is 0.
        """
        num_videos = self.num_videos
        if num_videos == 0:
            return {"top1": 0.0, "top5": 0.0, "num_videos": 0, "single_view_top1": 0.0}
        videos = list(self._labels)
        mean_probs = torch.stack(
            [self._prob_sums[v] / self._view_counts[v] for v in videos]
        )  # [V, C]
        labels = torch.tensor([self._labels[v] for v in videos])
        correct = topk_correct(mean_probs, labels, ks=(1, 5))
        single_view = sum(self._first_view_correct[v] for v in videos)
        return {
            "top1": 100.0 * correct["top1"] / num_videos,
            "top5": 100.0 * correct["top5"] / num_videos,
            "num_videos": num_videos,
            "single_view_top1": 100.0 * single_view / num_videos,
        }


def confusion_matrix(labels: Tensor, predictions: Tensor, num_classes: int) -> Tensor:
    """[C, C] int64 counts: row = true class, column = predicted class."""
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(
            f"confusion_matrix needs labels [N] and predictions [N], got "
            f"{tuple(labels.shape)} and {tuple(predictions.shape)}"
        )
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: Tensor) -> list[float | None]:
    """Top-1 per true class in percent (diagonal / row sum); None for a class with no video."""
    totals = confusion.sum(dim=1).tolist()
    correct = confusion.diagonal().tolist()
    return [
        100.0 * hit / total if total else None for hit, total in zip(correct, totals, strict=True)
    ]


def mean_class_accuracy(confusion: Tensor) -> float:
    """Mean of the per-class accuracies over classes that have videos (balanced accuracy)."""
    values = [value for value in per_class_accuracy(confusion) if value is not None]
    return sum(values) / len(values) if values else 0.0


def delta_acc(pretrained_top1: float, scratch_top1: float) -> float:
    """dAcc, the paper's measure of what pre-training brings: Acc(pretrained) - Acc(scratch).

    Both in percent; a positive value means the pretext pre-training helped fine-tuning.
    """
    return pretrained_top1 - scratch_top1
