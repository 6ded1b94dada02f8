"""Clip transforms: one random draw per clip, determinism, normalisation, test views."""

from __future__ import annotations

import pytest
import torch

from advise.data.transforms import test_views as make_test_views
from advise.data.transforms import train_transform

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def random_frame(height: int = 40, width: int = 48, seed: int = 0) -> torch.Tensor:
    """uint8 [3, H, W] with structure (a gradient plus noise), so crops and flips show."""
    generator = torch.Generator().manual_seed(seed)
    gradient = torch.linspace(0, 200, width).expand(3, height, width)
    noise = torch.randint(0, 50, (3, height, width), generator=generator)
    return (gradient + noise).to(torch.uint8)


@pytest.mark.parametrize(
    "color_jitter_p, grayscale_p",
    [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.8, 0.2)],
    ids=["crop-flip", "jitter", "grayscale", "default"],
)
def test_same_random_draw_for_every_frame(color_jitter_p, grayscale_p):
    transform = train_transform(
        16, MEAN, STD, color_jitter_p=color_jitter_p, grayscale_p=grayscale_p
    )
    clip = random_frame().expand(5, 3, 40, 48).contiguous()  # [T, 3, H, W], identical frames
    outputs = []
    for seed in range(12):
        torch.manual_seed(seed)
        output = transform(clip)
        assert output.shape == (5, 3, 16, 16) and output.dtype == torch.float32
        assert type(output) is torch.Tensor
        for frame in output[1:]:
            torch.testing.assert_close(frame, output[0], rtol=0, atol=0)
        outputs.append(output[0])
    # The draws do change between calls: not every clip gets the same augmentation.
    assert len({tuple(output.flatten()[:50].tolist()) for output in outputs}) > 6


def test_deterministic_under_a_torch_seed():
    transform = train_transform(16, MEAN, STD)
    clip = torch.stack([random_frame(seed=seed) for seed in range(4)])
    torch.manual_seed(5)
    first = transform(clip)
    torch.manual_seed(5)
    again = transform(clip)
    torch.manual_seed(6)
    other = transform(clip)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_normalisation_uses_mean_and_std():
    mean, std = (0.1, 0.5, 0.9), (0.5, 0.25, 0.125)
    transform = train_transform(
        8, mean, std, scale=(1.0, 1.0), flip=False, color_jitter_p=0.0, grayscale_p=0.0
    )
    values = torch.tensor([0, 128, 255], dtype=torch.uint8)
    clip = values.view(1, 3, 1, 1).expand(2, 3, 12, 12).contiguous()  # constant colour
    output = transform(clip)
    expected = (values.float() / 255 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(output, expected.view(1, 3, 1, 1).expand_as(output))


def test_grayscale_makes_channels_equal():
    transform = train_transform(16, (0.5,) * 3, (0.25,) * 3, color_jitter_p=0.0, grayscale_p=1.0)
    output = transform(torch.stack([random_frame(seed=1)] * 2))
    torch.testing.assert_close(output[:, 0], output[:, 1])
    torch.testing.assert_close(output[:, 1], output[:, 2])


def test_color_jitter_changes_the_clip():
    """Each augmentation really runs on videos (torchvision skips some for video inputs)."""
    common = dict(scale=(1.0, 1.0), flip=False, grayscale_p=0.0)
    clip = torch.stack([random_frame(seed=2)] * 2)
    plain = train_transform(16, MEAN, STD, color_jitter_p=0.0, **common)
    jittered = train_transform(16, MEAN, STD, color_jitter_p=1.0, **common)
    torch.manual_seed(0)
    reference = plain(clip)
    changed = 0
    for seed in range(5):
        torch.manual_seed(seed)
        changed += not torch.allclose(jittered(clip), reference)
    assert changed >= 4


def test_rejects_non_clips():
    transform = train_transform(16, MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        transform(torch.zeros(2, 3, 20, 20))
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        transform(torch.zeros(3, 20, 20, dtype=torch.uint8))
    with pytest.raises(ValueError):
        train_transform(16, (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(ValueError, match="num_crops"):
        make_test_views(16, MEAN, STD, num_crops=2)


@pytest.mark.parametrize("num_crops", [1, 3])
@pytest.mark.parametrize("height, width", [(24, 40), (40, 24), (20, 20)])
def test_views_shapes_and_determinism(num_crops, height, width):
    views = make_test_views(16, MEAN, STD, num_crops=num_crops)
    clip = torch.stack([random_frame(height, width, seed) for seed in range(3)])
    torch.manual_seed(0)
    first = views(clip)
    torch.manual_seed(1)
    again = views(clip)
    assert first.shape == (num_crops, 3, 3, 16, 16) and first.dtype == torch.float32
    torch.testing.assert_close(first, again, rtol=0, atol=0)


def test_three_crops_run_along_the_long_side():
    mean, std = (0.0,) * 3, (1.0,) * 3
    three = make_test_views(16, mean, std, num_crops=3)
    one = make_test_views(16, mean, std, num_crops=1)
    # Landscape: brightness rises left to right, so the crops' means rise too.
    ramp = torch.linspace(0, 255, 64).round().to(torch.uint8)
    landscape = ramp.view(1, 1, 1, 64).expand(2, 3, 32, 64).contiguous()  # [T, 3, 32, 64]
    crops = three(landscape)  # [3, T, 3, 16, 16]: short side 32 -> 16, long side 64 -> 32
    means = crops.mean(dim=(1, 2, 3, 4))
    assert means[0] < means[1] < means[2]
    torch.testing.assert_close(crops[1], one(landscape)[0])
    # Portrait: the same picture turned, so the crops run top to bottom.
    portrait = landscape.transpose(2, 3).contiguous()  # [T, 3, 64, 32]
    portrait_crops = three(portrait)
    torch.testing.assert_close(portrait_crops, crops.transpose(3, 4))
