"""The built-in benchmark: determinism, exact time reversal, seamless loops, UCF101 trees."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from advise.data import synthetic
from advise.data.synthetic import (
    NUM_FRAMES,
    TASKS,
    generate,
    render_still,
    render_stills,
    render_video,
    split_counts,
    video_rng,
)


def decode(path) -> np.ndarray:
    """Every frame of a video file, [T, H, W, 3] uint8."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_render_is_deterministic_and_seed_dependent(task):
    first = render_video(task, 1 % len(TASKS[task]), video_rng(0, task, 1 % len(TASKS[task]), 3))
    again = render_video(task, 1 % len(TASKS[task]), video_rng(0, task, 1 % len(TASKS[task]), 3))
    other = render_video(task, 1 % len(TASKS[task]), video_rng(1, task, 1 % len(TASKS[task]), 3))
    assert first.shape == (NUM_FRAMES[task], 64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 5


def test_boxes_follow_the_main_sprite():
    """render_video_with_boxes: the same frames, and per frame a box of the main digit's size
    that moves with it (reversed with the frames for a temporal partner)."""
    for task, label in (("spatial", 3), ("temporal", 0), ("pool", 0)):
        rng = video_rng(0, task, label, 1)
        frames, boxes = synthetic.render_video_with_boxes(task, label, rng)
        np.testing.assert_array_equal(
            frames, render_video(task, label, video_rng(0, task, label, 1))
        )
        sides = boxes[:, 2:] - boxes[:, :2]
        visible = (sides > 0).all(axis=1)
        assert visible.mean() > 0.5 and (boxes >= 0).all() and (boxes <= 64).all()
        assert (sides[visible] <= 2 * 0.7072 * synthetic.MAIN_SIZE[1] * 1.6 + 4).all()
    _, forward = synthetic.render_video_with_boxes("temporal", 0, video_rng(0, "temporal", 0, 2))
    _, backward = synthetic.render_video_with_boxes("temporal", 1, video_rng(0, "temporal", 0, 2))
    np.testing.assert_array_equal(backward, forward[::-1])
    assert (forward[0] != forward[-1]).any()  # MoveLeft: the box moves


def test_frames_are_not_static():
    for class_index in range(len(TASKS["temporal"])):
        frames = render_video("temporal", class_index, np.random.default_rng(class_index))
        assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 1


@pytest.mark.parametrize("pair", range(5))
def test_temporal_partner_is_the_exact_time_reversal(pair):
    for index in range(3):
        forward = render_video("temporal", 2 * pair, video_rng(0, "temporal", 0, index))
        backward = render_video("temporal", 2 * pair + 1, video_rng(0, "temporal", 0, index))
        np.testing.assert_array_equal(backward, forward[::-1])


def test_temporal_forward_directions_match_the_class_names(monkeypatch):
    """MoveLeft moves the main sprite left, CircleClockwise turns clockwise on screen, Grow
    makes it bigger, FadeIn more opaque: checked on the sprite's drawn alpha."""
    monkeypatch.setattr(synthetic, "MIXED_MOTION_P", (1.0, 0.0, 0.0))  # main sprite only
    drawn = []
    original = synthetic._composite

    def recording(frames, sprite, camera, rng):
        alpha = original(frames, sprite, camera, rng)
        drawn.append(alpha)
        return alpha

    monkeypatch.setattr(synthetic, "_composite", recording)

    def centroids(alpha):  # [T, 64, 64] -> [T, 2] (x, y)
        ys, xs = np.mgrid[:64, :64]
        mass = alpha.sum(axis=(1, 2))
        return np.stack([(alpha * xs).sum((1, 2)) / mass, (alpha * ys).sum((1, 2)) / mass], 1)

    def turning(alpha):  # summed cross products of successive displacements (> 0: clockwise)
        steps = np.diff(centroids(alpha)[::4], axis=0)
        return float(np.sum(steps[:-1, 0] * steps[1:, 1] - steps[:-1, 1] * steps[1:, 0]))

    checks = {
        "MoveLeft": lambda alpha: centroids(alpha)[-1, 0] < centroids(alpha)[0, 0] - 5,
        "MoveUp": lambda alpha: centroids(alpha)[-1, 1] < centroids(alpha)[0, 1] - 5,
        "CircleClockwise": lambda alpha: turning(alpha) > 0,
        "Grow": lambda alpha: (alpha[-1] > 0.5).sum() > 1.3 * (alpha[0] > 0.5).sum(),
        "FadeIn": lambda alpha: alpha[-1].max() > alpha[0].max() + 0.3,
    }
    for class_name, check in checks.items():
        for seed in range(3):
            drawn.clear()
            render_video(
                "temporal", TASKS["temporal"].index(class_name), np.random.default_rng(seed)
            )
            assert check(drawn[-1]), (class_name, seed)


def test_pool_loop_is_seamless():
    """The wrap pair (last frame -> first frame) differs like any consecutive pair."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic, "NOISE_STD", (0.0, 0.0))
        patch.setattr(synthetic, "CAMERA_JITTER_PIXELS", 0.0)
        patch.setattr(synthetic, "SPRITE_JITTER_PIXELS", 0.0)
        for index in range(4):
            frames = render_video("pool", 0, video_rng(0, "pool", 0, index)).astype(float)
            steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # [95]
            wrap = np.abs(frames[0] - frames[-1]).mean()
            neighbours = max(steps[0], steps[-1])
            assert wrap <= 1.5 * neighbours + 0.3, (index, wrap, steps[0], steps[-1])
            # A non-periodic video would fail this: the far-apart middle frame is different.
            assert np.abs(frames[0] - frames[48]).mean() > wrap or steps.max() < 0.5


def test_pool_wrap_matches_consecutive_frames_with_noise():
    frames = render_video("pool", 0, video_rng(0, "pool", 0, 7)).astype(float)
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    wrap = np.abs(frames[0] - frames[-1]).mean()
    assert wrap <= steps.max()


def test_split_rule():
    assert split_counts("temporal", synthetic.DEFAULT_NUM_VIDEOS["temporal"]) == (16, 20)
    assert split_counts("spatial", 20) == (1, 1)
    assert split_counts("pool", 7) == (7, 0)
    assert split_counts("temporal", 280, train_per_class=8) == (8, 20)
    assert split_counts("temporal", 20, train_per_class=5) == (1, 1)


def test_render_still_and_token_labels():
    image, digit = render_still(np.random.default_rng(0))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and 0 <= digit <= 9
    images, digits, token_labels = render_stills(np.random.default_rng(1), 12, "heldout")
    assert images.shape == (12, 64, 64, 3) and token_labels.shape == (12, 8, 8)
    for digit, labels in zip(digits, token_labels, strict=True):
        assert digit in labels  # the main digit covers at least one token cell
    assert (token_labels == synthetic.BACKGROUND_LABEL).mean() > 0.5


def test_still_subsets_use_disjoint_digit_images():
    rng = np.random.default_rng(0)
    train = {synthetic._digit_index(rng, None, "train") for _ in range(200)}
    heldout = {synthetic._digit_index(rng, None, "heldout") for _ in range(200)}
    assert not train & heldout


def test_unknown_task_and_class_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        render_video("spatio", 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="class_index"):
        render_video("temporal", 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown task"):
        generate(tmp_path, "nope", 4, progress=False)


def test_generate_writes_a_ucf101_tree(tmp_path):
    root = generate(tmp_path / "temporal", "temporal", num_videos=20, seed=3, progress=False)
    names = TASKS["temporal"]
    assert (root / "classInd.txt").read_text().splitlines() == [
        f"{i + 1} {name}" for i, name in enumerate(names)
    ]
    train = (root / "trainlist01.txt").read_text().splitlines()
    test = (root / "testlist01.txt").read_text().splitlines()
    assert len(train) == len(test) == 10
    assert train[1] == f"{names[1]}/v_{names[1]}_0000.mp4 2"
    assert test[1] == f"{names[1]}/v_{names[1]}_0001.mp4"
    for line in train[:2] + test[:1]:
        relative = line.split()[0]
        frames = decode(root / relative)
        assert frames.shape == (32, 64, 64, 3)
        class_index = names.index(relative.split("/")[0])
        index = int(relative[-8:-4])
        rendered = render_video(
            "temporal", class_index, video_rng(3, "temporal", class_index, index)
        )
        other = render_video("temporal", class_index, video_rng(3, "temporal", class_index, 9))
        error = np.abs(frames.astype(int) - rendered.astype(int)).mean()  # H.264, yuv420p
        assert error < 10 and error < 0.5 * np.abs(frames.astype(int) - other.astype(int)).mean()
    manifest = json.loads((root / synthetic.MANIFEST_NAME).read_text())
    assert manifest["task"] == "temporal" and manifest["seed"] == 3


def test_generate_pool_layout(tmp_path):
    root = generate(tmp_path / "pool", "pool", num_videos=2, progress=False)
    assert (root / "classInd.txt").read_text() == "1 unlabeled\n"
    assert (root / "trainlist01.txt").read_text().splitlines() == [
        "unlabeled/v_unlabeled_0000.mp4 1",
        "unlabeled/v_unlabeled_0001.mp4 1",
    ]
    assert (root / "testlist01.txt").read_text() == ""
    assert decode(root / "unlabeled/v_unlabeled_0001.mp4").shape == (96, 64, 64, 3)


def test_generate_skips_a_complete_tree_and_redoes_a_changed_one(tmp_path, monkeypatch):
    root = generate(tmp_path, "spatial", num_videos=20, progress=False)
    calls = []
    original = synthetic.render_video

    def counting(*arguments):
        calls.append(arguments[:2])
        return original(*arguments)

    monkeypatch.setattr(synthetic, "render_video", counting)
    assert generate(tmp_path, "spatial", num_videos=20, progress=False) == root
    assert calls == []
    (root / "Digit3" / "v_Digit3_0001.mp4").unlink()  # incomplete: regenerate
    generate(tmp_path, "spatial", num_videos=20, progress=False)
    assert len(calls) == 20
    generate(tmp_path, "spatial", num_videos=20, seed=1, progress=False)  # other seed
    assert len(calls) == 40


def test_generate_with_a_chosen_number_of_training_videos(tmp_path):
    root = generate(tmp_path, "spatial", num_videos=30, train_per_class=1, progress=False)
    assert len((root / "trainlist01.txt").read_text().splitlines()) == 10
    assert len((root / "testlist01.txt").read_text().splitlines()) == 20
    assert json.loads((root / synthetic.MANIFEST_NAME).read_text())["train_per_class"] == 1
