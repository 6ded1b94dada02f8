"""Top-k counts, multi-view aggregation and the per-video accuracy meter."""

import pytest
import torch

from advise.train.metrics import (
    AccuracyMeter,
    aggregate_views,
    confusion_matrix,
    delta_acc,
    mean_class_accuracy,
    per_class_accuracy,
    topk_correct,
)


def test_topk_correct_counts_and_clips_k():
    logits = torch.tensor(
        [
            [0.1, 0.5, 0.2, 0.9, 0.0, 0.3],  # order 3 1 5 2 0 4
            [0.9, 0.0, 0.1, 0.2, 0.3, 0.4],  # order 0 5 4 3 2 1
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # order 5 4 3 2 1 0
        ]
    )
    labels = torch.tensor([3, 3, 0])
    assert topk_correct(logits, labels, ks=(1, 2, 4, 5)) == {
        "top1": 1, "top2": 1, "top4": 2, "top5": 2,
    }  # fmt: skip
    three_classes = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    assert topk_correct(three_classes, torch.tensor([2, 0])) == {"top1": 0, "top5": 2}
    with pytest.raises(ValueError):
        topk_correct(logits, labels[:2])


def test_aggregate_views_is_mean_softmax_per_sorted_video():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]])
    video_of_clip = torch.tensor([9, 4, 9, 9])
    video_ids, probs = aggregate_views(logits, video_of_clip)
    assert video_ids.tolist() == [4, 9]
    softmax = logits.softmax(dim=1)
    torch.testing.assert_close(probs[0], softmax[1])
    torch.testing.assert_close(probs[1], (softmax[0] + softmax[2] + softmax[3]) / 3)


# Three videos of 3 classes, two views each. Video 0: the first view is wrong but the mean is
# right; video 1: first view right, mean wrong (one confident wrong view); video 2: both right.
VIEWS = torch.tensor(
    [
        [0.0, 1.0, 0.0],  # video 0, label 0: first view says 1
        [5.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],  # video 1, label 2: first view right
        [0.0, 6.0, 0.0],  # ... but this view outweighs it
        [0.0, 3.0, 0.0],  # video 2, label 1
        [0.0, 2.0, 1.0],
    ]
)
LABELS = torch.tensor([0, 0, 2, 2, 1, 1])
VIDEOS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_meter_multiview_differs_from_single_view():
    meter = AccuracyMeter()
    meter.update(VIEWS, LABELS, VIDEOS)
    result = meter.compute()
    assert result["num_videos"] == 3
    assert result["top1"] == pytest.approx(200 / 3)  # videos 0 and 2
    assert result["single_view_top1"] == pytest.approx(200 / 3)  # videos 1 and 2
    assert result["top5"] == 100.0  # fewer than 5 classes: every video is in its top 5
    # Drop video 1: multi-view is now perfect, single view still misses video 0.
    meter.reset()
    keep = VIDEOS != 1
    meter.update(VIEWS[keep], LABELS[keep], VIDEOS[keep])
    assert meter.compute()["top1"] == 100.0
    assert meter.compute()["single_view_top1"] == 50.0


def test_meter_video_split_across_updates_counts_once():
    whole = AccuracyMeter()
    whole.update(VIEWS, LABELS, VIDEOS)
    split = AccuracyMeter()
    # Video 1's views arrive in two different batches, the second one first of its batch.
    order = [[0, 1, 2], [3, 4, 5]]
    for rows in order:
        split.update(VIEWS[rows], LABELS[rows], VIDEOS[rows])
    assert split.num_videos == 3
    assert split.compute() == pytest.approx(whole.compute())
    # The first view of video 1 is the one seen first (row 2), whatever the batch.
    reversed_meter = AccuracyMeter()
    for rows in reversed(order):
        reversed_meter.update(VIEWS[rows], LABELS[rows], VIDEOS[rows])
    assert reversed_meter.compute()["top1"] == pytest.approx(200 / 3)
    assert reversed_meter.compute()["single_view_top1"] == pytest.approx(100 / 3)  # only 2


def test_meter_merge_tensors_equals_one_meter():
    whole = AccuracyMeter()
    whole.update(VIEWS, LABELS, VIDEOS)
    first, second = AccuracyMeter(), AccuracyMeter()
    first.update(VIEWS[:3], LABELS[:3], VIDEOS[:3])
    second.update(VIEWS[3:], LABELS[3:], VIDEOS[3:])
    first.merge_tensors(second.to_tensors())
    assert first.compute() == pytest.approx(whole.compute())
    empty = AccuracyMeter()
    empty.merge_tensors(AccuracyMeter().to_tensors())
    assert empty.compute() == {"top1": 0.0, "top5": 0.0, "num_videos": 0, "single_view_top1": 0.0}


def test_meter_rejects_inconsistent_labels_and_shapes():
    meter = AccuracyMeter()
    meter.update(VIEWS[:1], LABELS[:1], VIDEOS[:1])
    with pytest.raises(ValueError, match="label"):
        meter.update(VIEWS[1:2], torch.tensor([2]), VIDEOS[1:2])
    with pytest.raises(ValueError, match="classes"):
        meter.update(torch.zeros(1, 4), LABELS[:1], VIDEOS[:1])
    with pytest.raises(ValueError):
        meter.update(VIEWS, LABELS[:2], VIDEOS)


def test_delta_acc():
    assert delta_acc(84.93 + 3.01, 84.93) == pytest.approx(3.01)
    assert delta_acc(60.0, 62.5) == pytest.approx(-2.5)


def test_confusion_matrix_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 1, 0, 1, 1, 0])
    confusion = confusion_matrix(labels, predictions, num_classes=4)
    assert confusion.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    accuracy = per_class_accuracy(confusion)
    assert accuracy[:3] == pytest.approx([200 / 3, 100.0, 0.0]) and accuracy[3] is None
    assert mean_class_accuracy(confusion) == pytest.approx((200 / 3 + 100 + 0) / 3)


def test_meter_video_scores_are_the_mean_over_views():
    meter = AccuracyMeter()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    meter.update(logits, torch.tensor([1, 1, 0]), torch.tensor([7, 7, 3]))
    ids, labels, probs = meter.video_scores()
    assert ids.tolist() == [3, 7] and labels.tolist() == [0, 1]
    torch.testing.assert_close(probs[1], logits[:2].double().softmax(1).mean(0))
