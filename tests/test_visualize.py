"""Activation maps sit where the renderer drew the digit; the box arithmetic is exact."""

import warnings

import numpy as np
import torch
import yaml

import advise
from advise.cli import main
from advise.data import synthetic
from advise.data.sampling import segment_indices
from advise.visualize import activation_map, clip_of, peak_in_box


def test_peak_in_box_maps_tokens_back_through_resize_and_crop():
    # frames 48 x 96 (H x W): short side 48 -> 32 px crop; the crop covers x in [24, 72)
    activation = torch.zeros(1, 4, 4)
    activation[0, 1, 3] = 1.0  # token centre in the crop: (x 28, y 12) -> frame (66, 18)
    hit, chance = peak_in_box(activation, np.array([[60, 10, 70, 20]]), (48, 96), 32)
    assert hit == 1.0
    assert chance == 1 / 16  # only that token's centre lies in the box
    miss, _ = peak_in_box(activation, np.array([[24, 10, 60, 20]]), (48, 96), 32)
    assert miss == 0.0
    nothing, _ = peak_in_box(activation, np.array([[0, 0, 0, 0]]), (48, 96), 32)
    assert nothing == 0.0  # an empty box (sprite not visible) is not counted


def test_a_trained_tmm_looks_at_the_digit(tmp_path):
    """On the spatial task, the peak of a fine-tuned TMM's map falls in the digit's box (as
    the renderer reports it) far more often than a token drawn at random would."""
    root = synthetic.generate(tmp_path / "spatial", "spatial", num_videos=30, seed=0,
                              progress=False, train_per_class=2)  # fmt: skip
    config = {
        "base": "demo", "ifm": {"random_init": True},
        "data": {"root": str(root), "num_workers": 0, "num_frames": 8},
        "train": {"epochs": 3, "batch_size": 8, "threads": 1},
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["finetune", "--config", str(tmp_path / "c.yaml"), "--out",
                     str(tmp_path / "ft")]) == 0  # fmt: skip
        model = advise.load(tmp_path / "ft")
    hits, chances = [], []
    for label in range(10):
        video = root / f"Digit{label}" / f"v_Digit{label}_0002.mp4"  # a test video
        frames, boxes = synthetic.render_video_with_boxes(
            "spatial", label, synthetic.video_rng(0, "spatial", label, 2)
        )
        clip, _ = clip_of(model, video)
        shown = boxes[segment_indices(len(frames), model.config.data.num_frames)]
        hit, chance = peak_in_box(activation_map(model, clip), shown, (64, 64), 64)
        hits.append(hit)
        chances.append(chance)
    assert np.mean(hits) >= 3 * np.mean(chances), (np.mean(hits), np.mean(chances))
