"""Frozen IFMs: token grids, prefix tokens, freezing, the registry and weights loading.

No network and no real weights: registry models are built with random_init=True, and a tiny
timm ViT registered under a test name stands in wherever weights files are written.
"""

import copy
import dataclasses
from functools import partial

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from advise.models.ifm import (
    IFM_REGISTRY,
    CombinedIFM,
    FrozenIFM,
    IFMSpec,
    IFMWeightsError,
    build_ifm,
    fetch_from_hf_hub,
    find_in_hf_cache,
)

SIZE, PATCH, DIM = 32, 8, 32
GRID = SIZE // PATCH


def tiny_vit(img_size: int = SIZE, **options) -> VisionTransformer:
    """A one-block ViT with a 10-way classifier head (which build_ifm removes)."""
    settings = dict(patch_size=PATCH, embed_dim=DIM, depth=1, num_heads=2, num_classes=10)
    return VisionTransformer(img_size=img_size, **{**settings, **options})


def wrap(model: nn.Module, **options) -> FrozenIFM:
    return FrozenIFM(model, "tiny", SIZE, (0.5,) * 3, (0.25,) * 3, patch_size=PATCH, **options)


def clips(batch: int = 2, frames: int = 3, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(0))


TINY_SPEC = IFMSpec(
    name="tiny",
    build=tiny_vit,
    img_size=SIZE,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    interpolation="bicubic",
    patch_size=PATCH,
    weights_source="test",
    find_weights=lambda offline: None,
    cached_weights=lambda: None,
)


@pytest.fixture
def tiny_registered(monkeypatch):
    """Register the tiny ViT as IFM "tiny" for the duration of a test."""
    monkeypatch.setitem(IFM_REGISTRY, "tiny", TINY_SPEC)
    return TINY_SPEC


# ------------------------------------------------------------------------- token grids


@pytest.mark.parametrize(
    "options, prefix",
    [({}, 1), ({"reg_tokens": 4}, 5), ({"class_token": False, "global_pool": "avg"}, 0)],
)
def test_prefix_tokens_are_dropped(options, prefix):
    torch.manual_seed(0)
    vit = tiny_vit(num_classes=0, **options)
    ifm = wrap(vit)
    frames = clips()  # [B=2, T=3, 3, 32, 32]
    tokens = ifm(frames)
    assert tokens.shape == (2, DIM, 3, GRID, GRID)
    reference = vit.forward_features(frames.flatten(0, 1))  # [B*T, prefix + h*w, D]
    assert reference.shape[1] == prefix + GRID * GRID
    # token (b, t, row i, column j) is patch i*w + j of image b*T + t
    for b, t, i, j in [(0, 0, 0, 0), (1, 2, 3, 1), (0, 1, 2, 3)]:
        torch.testing.assert_close(
            tokens[b, :, t, i, j], reference[b * 3 + t, prefix + i * GRID + j]
        )


def test_cnn_feature_map_is_used_as_is():
    torch.manual_seed(0)
    # timm ByobNet: stride-2 stem, then stages of stride 2 and 2 -> an 8-pixel token grid
    stages = (ByoBlockCfg("basic", d=1, c=8, s=2), ByoBlockCfg("basic", d=1, c=16, s=2))
    config = ByoModelCfg(blocks=stages, stem_type="3x3", stem_pool="", stem_chs=8, num_features=0)
    cnn = ByobNet(config, num_classes=0)
    ifm = wrap(cnn.eval())
    assert ifm.embed_dim == 16 and ifm.num_prefix_tokens == 0
    frames = clips()
    tokens = ifm(frames)
    assert tokens.shape == (2, 16, 3, *ifm.grid_size())
    feature_map = cnn.forward_features(frames.flatten(0, 1))  # [B*T, D, h, w]
    torch.testing.assert_close(tokens[1, :, 2], feature_map[1 * 3 + 2])


class ChannelsLastFeatures(nn.Module):
    """A model whose forward_features returns an NHWC map (as timm Swin-style models do)."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 6, PATCH, stride=PATCH)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).permute(0, 2, 3, 1)  # [N, 6, h, w] -> [N, h, w, 6]


def test_channels_last_feature_map():
    model = ChannelsLastFeatures()
    tokens = wrap(model)(clips())
    assert tokens.shape == (2, 6, 3, GRID, GRID)
    torch.testing.assert_close(tokens[0, :, 1], model.proj(clips()[0, 1:2])[0])


def test_mini_ifm_architecture_gives_an_8x8_grid():
    mini_ifm = pytest.importorskip("advise.mini_ifm")
    spec = IFM_REGISTRY["mini"]
    model = mini_ifm.build_mini_ifm_model()  # untrained: no weights are trained or read here
    ifm = FrozenIFM(model, "mini", spec.img_size, spec.mean, spec.std, spec.patch_size)
    tokens = ifm(clips(batch=1, frames=2, size=64))
    assert ifm.grid_size(64) == (8, 8)
    assert tokens.shape == (1, ifm.embed_dim, 2, 8, 8)


def test_mini_registry_entry_loads_its_cached_weights(monkeypatch, tmp_path):
    """build_ifm("mini") with ensure_mini_ifm() stubbed by a file of untrained weights."""
    mini_ifm = pytest.importorskip("advise.mini_ifm")
    torch.manual_seed(0)
    source = mini_ifm.build_mini_ifm_model().eval()
    path = tmp_path / "mini.safetensors"
    save_file({key: value.contiguous() for key, value in source.state_dict().items()}, path)
    monkeypatch.setattr(mini_ifm, "ensure_mini_ifm", lambda **_: path)
    torch.manual_seed(1)
    ifm = build_ifm("mini")
    assert ifm.mean == pytest.approx(source.pretrained_cfg["mean"])  # the model's own wins
    assert ifm.std == pytest.approx(source.pretrained_cfg["std"])
    frames = clips(batch=1, frames=2, size=64)
    expected = source.forward_features(frames.flatten(0, 1))  # [T, D, 8, 8]
    torch.testing.assert_close(ifm(frames)[0].transpose(0, 1), expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------- freezing


def test_frozen_ifm_stays_eval_and_deterministic_after_train():
    torch.manual_seed(0)
    ifm = wrap(tiny_vit(proj_drop_rate=0.5, attn_drop_rate=0.5))
    ifm.train()
    assert not ifm.training and not any(module.training for module in ifm.modules())
    assert all(not parameter.requires_grad for parameter in ifm.parameters())
    frames = clips()
    assert torch.equal(ifm(frames), ifm(frames))  # dropout stays off


def test_bf16_precision_returns_float32_tokens():
    torch.manual_seed(0)
    vit = tiny_vit()
    frames = clips()
    full = wrap(vit)(frames)
    half = wrap(vit, precision="bf16")(frames)
    assert half.dtype == torch.float32
    assert not torch.equal(half, full)  # it really ran in bf16
    torch.testing.assert_close(half, full, atol=0.1, rtol=0.05)
    # "fp32" holds even inside a caller's autocast region
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(wrap(vit)(frames), full)
    with pytest.raises(ValueError, match="precision"):
        wrap(vit, precision="fp16")


# ------------------------------------------------------------------------- weights hash


def test_weights_hash_is_stable_and_tracks_the_weights():
    torch.manual_seed(0)
    ifm = wrap(tiny_vit())
    digest = ifm.weights_hash()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert ifm.weights_hash() == digest
    twin = wrap(copy.deepcopy(ifm.model))
    assert twin.weights_hash() == digest

    changed = copy.deepcopy(ifm.model)
    with torch.no_grad():
        changed.blocks[0].mlp.fc1.weight[0, 0] += 1e-3
    assert wrap(changed).weights_hash() != digest
    ifm.model.load_state_dict(changed.state_dict())  # loading through the wrapped model ...
    ifm.load_state_dict(ifm.state_dict())  # ... or the wrapper invalidates the cached hash
    assert ifm.weights_hash() == wrap(changed).weights_hash()


# ----------------------------------------------------------------------------- registry

# name -> (embed_dim, token grid at the default 224 x 224, normalisation mean)
REAL_IFMS = {
    "clip-b16": (768, (14, 14), OPENAI_CLIP_MEAN),
    "clip-l14": (1024, (16, 16), OPENAI_CLIP_MEAN),
    "dinov2-b14": (768, (16, 16), IMAGENET_DEFAULT_MEAN),
    "dinov2-l14": (1024, (16, 16), IMAGENET_DEFAULT_MEAN),
    "mae-b16": (768, (14, 14), IMAGENET_DEFAULT_MEAN),
    "mae-l16": (1024, (14, 14), IMAGENET_DEFAULT_MEAN),
    "vit-b16": (768, (14, 14), (0.5, 0.5, 0.5)),  # augreg in21k->in1k weights use 0.5 / 0.5
}


def test_registry_names():
    minis = {"mini", "mini-seed1", "mini-vit"}
    assert set(REAL_IFMS) | minis | {"mobilenetv2-in1k"} == set(IFM_REGISTRY)
    for name, spec in IFM_REGISTRY.items():
        assert spec.name == name and spec.weights_source
    mini = IFM_REGISTRY["mini"]
    assert (mini.img_size, mini.img_size // mini.patch_size) == (64, 8)
    seed1 = IFM_REGISTRY["mini-seed1"]  # the same network and sizes, its own weights file
    assert (seed1.build, seed1.img_size, seed1.patch_size) == (mini.build, 64, 8)
    vit = IFM_REGISTRY["mini-vit"]  # another network on the same grid
    assert vit.build != mini.build and (vit.img_size, vit.patch_size) == (64, 8)


def test_mini_seed1_trains_from_seed_1(monkeypatch, tmp_path):
    mini_ifm = pytest.importorskip("advise.mini_ifm")
    asked = []
    monkeypatch.setattr(mini_ifm, "ensure_mini_ifm", lambda **kw: asked.append(kw) or tmp_path)
    IFM_REGISTRY["mini-seed1"].find_weights()
    IFM_REGISTRY["mini"].find_weights()
    IFM_REGISTRY["mini-vit"].find_weights()
    assert asked == [
        {"seed": 1, "family": "convnet"}, {"seed": 0, "family": "convnet"},
        {"seed": 0, "family": "vit"},
    ]  # fmt: skip
    paths = {mini_ifm.mini_ifm_path(tmp_path, seed=1), mini_ifm.mini_ifm_path(tmp_path)}
    assert len(paths | {mini_ifm.mini_ifm_path(tmp_path, family="vit")}) == 3


@pytest.mark.parametrize("name", list(REAL_IFMS))
def test_registry_builds_offline_with_random_init(name):
    embed_dim, grid, mean = REAL_IFMS[name]
    torch.manual_seed(0)
    with torch.device("meta"):  # the architecture and its sizes, without 300M random numbers
        ifm = build_ifm(name, random_init=True)
    assert ifm.name == name and ifm.img_size == 224
    assert ifm.embed_dim == embed_dim
    assert ifm.grid_size() == grid == tuple(ifm.model.patch_embed.grid_size)
    assert ifm.num_prefix_tokens == 1
    assert ifm.mean == pytest.approx(mean) and ifm.mean == pytest.approx(IFM_REGISTRY[name].mean)
    if name.startswith("clip"):
        assert ifm.std == pytest.approx(OPENAI_CLIP_STD)
    assert isinstance(ifm.model.head, nn.Identity)  # the classifier is not part of an IFM
    assert not any(parameter.requires_grad for parameter in ifm.parameters())
    if name.startswith("dinov2"):  # built for 224 (not timm's 518): a 16 x 16 forward
        frames = torch.zeros(1, 1, 3, 224, 224, device="meta")
        assert ifm(frames).shape == (1, embed_dim, 1, 16, 16)
    if name.startswith("clip"):  # OpenAI CLIP's activation, or its features drift
        assert type(ifm.model.blocks[0].mlp.act).__name__ == "QuickGELU"


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(ValueError, match="did you mean 'clip-b16'"):
        build_ifm("clip-b61", random_init=True)


# ------------------------------------------------------------------------------ weights


def test_no_weights_raises_with_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty cache
    with pytest.raises(IFMWeightsError, match="offline.*ifm.weights=.*ifm.random_init=true"):
        build_ifm("clip-b16")  # HF_HUB_OFFLINE=1 in every test (conftest)
    assert issubclass(IFMWeightsError, ValueError)
    with pytest.raises(IFMWeightsError, match="does not exist"):
        build_ifm("clip-b16", weights=tmp_path / "missing.safetensors")
    with pytest.raises(IFMWeightsError, match="contradict"):
        build_ifm("clip-b16", weights=tmp_path / "w.safetensors", random_init=True)


def test_online_lookup_downloads_into_the_cache_or_explains(monkeypatch, tmp_path):
    """Without --offline a missing model is fetched from the hub; a failure says what to do."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    requested = []

    def unreachable(repo_id, filename, **options):
        requested.append((repo_id, filename))
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(IFMWeightsError, match="could not download.*Name or service.*--offline"):
        build_ifm("dinov2-b14", offline=False)
    assert requested == [("timm/vit_base_patch14_dinov2.lvd142m", "model.safetensors")]

    torch.manual_seed(0)
    source = tiny_vit()
    downloaded = tmp_path / "downloaded.safetensors"
    save_file(source.state_dict(), downloaded)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(downloaded))
    spec = dataclasses.replace(
        TINY_SPEC, find_weights=partial(fetch_from_hf_hub, "timm/tiny"), cached_weights=None
    )
    monkeypatch.setitem(IFM_REGISTRY, "tiny", spec)
    ifm = build_ifm("tiny", offline=False)
    torch.testing.assert_close(ifm(clips()), wrap(source.eval())(clips()), rtol=0, atol=0)
    with pytest.raises(IFMWeightsError, match="offline"):
        build_ifm("tiny", offline=True)  # offline never calls the hub, even when it would work


def test_weights_file_round_trip(tiny_registered, tmp_path):
    torch.manual_seed(0)
    source = tiny_vit().eval()  # with its classifier head: those keys are ignored on load
    expected = wrap(source)
    frames = clips()
    safetensors_path = tmp_path / "tiny.safetensors"
    save_file(
        {key: value.contiguous() for key, value in source.state_dict().items()}, safetensors_path
    )
    torch_path = tmp_path / "tiny.pt"
    torch.save({"state_dict": source.state_dict()}, torch_path)

    for path in (safetensors_path, torch_path):
        torch.manual_seed(1)  # a different random init underneath
        ifm = build_ifm("tiny", weights=path)
        torch.testing.assert_close(ifm(frames), expected(frames), rtol=0, atol=0)
        assert isinstance(ifm.model.head, nn.Identity)
        assert ifm.weights_hash() == build_ifm("tiny", weights=str(path)).weights_hash()


def test_position_embeddings_are_resampled_to_the_built_grid(tiny_registered, tmp_path):
    """As for DINOv2, whose weights are for 518 x 518 frames but which we build for 224."""
    path = tmp_path / "larger_grid.safetensors"
    save_file(tiny_vit(img_size=48).state_dict(), path)  # a 6 x 6 grid of position embeddings
    ifm = build_ifm("tiny", weights=path)  # built for 32 x 32 frames: a 4 x 4 grid
    assert ifm.model.pos_embed.shape == (1, 1 + GRID * GRID, DIM)
    assert ifm(clips()).shape == (2, DIM, 3, GRID, GRID)


def test_mismatched_weights_file_raises_clearly(tiny_registered, tmp_path):
    torch.manual_seed(0)
    state = tiny_vit().state_dict()
    missing_path = tmp_path / "missing_key.safetensors"
    save_file({k: v for k, v in state.items() if k != "blocks.0.attn.qkv.weight"}, missing_path)
    with pytest.raises(IFMWeightsError, match=r"missing keys 1 \(e.g. blocks.0.attn.qkv.weight"):
        build_ifm("tiny", weights=missing_path)

    wider_path = tmp_path / "wider.safetensors"
    save_file(tiny_vit(embed_dim=48).state_dict(), wider_path)
    with pytest.raises(IFMWeightsError, match="does not match IFM 'tiny'.*wrong shapes"):
        build_ifm("tiny", weights=wider_path)

    extra_path = tmp_path / "extra.safetensors"
    save_file({**state, "decoder.weight": torch.zeros(2)}, extra_path)
    with pytest.raises(IFMWeightsError, match="unexpected keys 1 .*decoder.weight"):
        build_ifm("tiny", weights=extra_path)

    garbage_path = tmp_path / "garbage.pt"
    garbage_path.write_bytes(b"not a checkpoint")
    with pytest.raises(IFMWeightsError, match="cannot read"):
        build_ifm("tiny", weights=garbage_path)


def test_weights_from_the_hugging_face_cache(monkeypatch, tmp_path):
    """The registry's source for timm models: a file in the local HF cache, found offline."""
    repo_id = "timm/tiny_test_vit"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    spec = dataclasses.replace(TINY_SPEC, find_weights=partial(fetch_from_hf_hub, repo_id))
    monkeypatch.setitem(IFM_REGISTRY, "tiny", spec)
    with pytest.raises(IFMWeightsError, match="ifm.random_init=true"):
        build_ifm("tiny")  # nothing cached yet

    torch.manual_seed(0)
    source = tiny_vit().eval()
    repo = tmp_path / "models--timm--tiny_test_vit"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file(source.state_dict(), snapshot / "model.safetensors")
    assert find_in_hf_cache(repo_id) == snapshot / "model.safetensors"

    torch.manual_seed(1)
    ifm = build_ifm("tiny")
    torch.testing.assert_close(ifm(clips()), wrap(source)(clips()), rtol=0, atol=0)


def test_open_clip_checkpoint_loads_into_clip_b16_exactly(tmp_path):
    """A whole open_clip CLIP checkpoint (text tower included) of the same architecture:
    the visual tower converts, and our patch tokens equal open_clip's own, so QuickGELU and
    every renamed weight are right."""
    try:
        import open_clip
    except ImportError:
        pytest.fail("open_clip is a test dependency: pip install -e '.[test]'")
    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(reference.state_dict(), path)

    ifm = build_ifm("clip-b16", weights=path)
    frames = torch.randn(1, 1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    reference.visual.output_tokens = True
    with torch.no_grad():
        _, expected = reference.visual(frames[:, 0])  # [1, 196, 768] after ln_post
    ours = ifm(frames)[0, :, 0].flatten(1).T  # [768, 1, 14, 14] -> [196, 768]
    torch.testing.assert_close(ours, expected[0], atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- combined


def test_combined_ifm_concatenates_channels_on_the_coarsest_grid(monkeypatch):
    """Two IFMs with different patch sizes and normalisations, as CLIP-L/14 + MAE-L/16."""
    coarse_spec = dataclasses.replace(
        TINY_SPEC, name="coarse", build=partial(tiny_vit, patch_size=16), patch_size=16,
        mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4),
    )  # fmt: skip
    monkeypatch.setitem(IFM_REGISTRY, "tiny", TINY_SPEC)
    monkeypatch.setitem(IFM_REGISTRY, "coarse", coarse_spec)
    torch.manual_seed(0)
    combined = build_ifm("tiny+coarse", random_init=True)
    assert isinstance(combined, CombinedIFM)
    assert combined.name == "tiny+coarse" and combined.embed_dim == 2 * DIM
    assert combined.grid_size() == (2, 2)  # 32 px: 4 x 4 and 2 x 2 -> 2 x 2
    assert (combined.mean, combined.std) == ((0.5,) * 3, (0.25,) * 3)  # the first one's

    pixels = torch.rand(2, 3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    frames = (pixels - 0.5) / 0.25  # normalised for the first IFM, as the data pipeline does
    tokens = combined(frames)
    assert tokens.shape == (2, 2 * DIM, 3, 2, 2)
    fine, coarse = combined.parts
    # the first part's 4 x 4 grid is averaged in 2 x 2 blocks
    expected_fine = fine(frames).unflatten(3, (2, 2)).unflatten(5, (2, 2)).mean((4, 6))
    torch.testing.assert_close(tokens[:, :DIM], expected_fine)
    # the second part sees the same pixels normalised with its own mean and std
    mean, std = torch.tensor((0.4, 0.5, 0.6)), torch.tensor((0.2, 0.3, 0.4))
    own = (pixels - mean.view(1, 1, 3, 1, 1)) / std.view(1, 1, 3, 1, 1)
    torch.testing.assert_close(tokens[:, DIM:], coarse(own), atol=1e-5, rtol=1e-5)

    assert len(combined.weights_hash()) == 64
    assert combined.weights_hash() != fine.weights_hash()
    with pytest.raises(IFMWeightsError, match="one per model"):
        build_ifm("tiny+coarse", weights="only-one.safetensors")


def test_paper_table4_combinations_build():
    with torch.device("meta"):
        clip_mae = build_ifm("clip-l14+mae-l16", random_init=True)
        clip_dino = build_ifm("clip-l14+dinov2-l14", random_init=True)
    assert (clip_mae.embed_dim, clip_mae.grid_size()) == (2048, (14, 14))
    assert (clip_dino.embed_dim, clip_dino.grid_size()) == (2048, (16, 16))
    frames = torch.zeros(1, 2, 3, 224, 224, device="meta")
    assert clip_mae(frames).shape == (1, 2048, 2, 14, 14)


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    "device, native, expected",
    [("cpu", True, "bf16"), ("cpu", False, "fp32"), ("meta", True, "fp32")],
)
def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch, device, native, expected):
    from advise.models import build

    monkeypatch.setattr(build, "cpu_has_native_bf16", lambda: native)
    assert build.resolve_precision("auto", torch.device(device)) == expected
    assert build.resolve_precision("fp32", torch.device(device)) == "fp32"
    assert build.resolve_precision("bf16", torch.device(device)) == "bf16"


def test_torchscript_archives_are_refused_without_running_them(tiny_registered, tmp_path):
    """OpenAI's original CLIP .pt files are TorchScript: loading one would run its code."""
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path))
    with pytest.raises(IFMWeightsError, match="TorchScript archive.*open_clip") as error:
        build_ifm("tiny", weights=path)
    assert "\n" not in str(error.value)


def test_combined_weights_entries_may_be_empty_or_spaced(monkeypatch, tmp_path):
    monkeypatch.setitem(IFM_REGISTRY, "tiny", TINY_SPEC)
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_vit().state_dict(), path)
    combined = build_ifm("tiny+tiny", weights=f"{path}, {path}")
    assert combined.parts[0].weights_hash() == combined.parts[1].weights_hash()
    with pytest.raises(IFMWeightsError, match="no weights for IFM 'tiny'"):
        build_ifm("tiny+tiny", weights=f"{path},")  # empty: the registry's source (none here)
