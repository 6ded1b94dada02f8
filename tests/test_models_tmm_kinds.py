"""The conv3d, transformer and swin temporal modules: shapes for any token grid, gradients,
Swin's window masks against a dense reference, cost counts of their demo presets, and learning
playback speed on moving blobs.

Models are built the way runs build them (`load_config("demo", {"tmm.kind": ...})` and
`build_model`) over a random-init mini IFM at 32 px: clips 2 x 4 x 3 x 32 x 32 give tokens
[2, 96, 4, 4, 4].
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from advise.cli import main
from advise.config import Conv3dConfig, SwinConfig, TransformerConfig, load_config
from advise.models.build import build_frozen_ifm, build_model
from advise.models.cost import count_macs, count_params
from advise.models.heads import LinearHead
from advise.models.registry import TMM_KINDS
from advise.models.tmm_conv3d import Conv3dTMM
from advise.models.tmm_swin import SwinBlock, SwinTMM
from advise.models.tmm_transformer import TransformerTMM, sincos_position_embedding
from advise.runs import summary

KINDS = ("conv3d", "transformer", "swin")
CLASSES = {"conv3d": Conv3dTMM, "transformer": TransformerTMM, "swin": SwinTMM}
OUT = 16
# tiny sections: every kind maps 12 or 96 channels to OUT
SECTIONS = {
    "conv3d": Conv3dConfig(hidden=8, out=OUT, kernel=(3, 3, 3)),
    "transformer": TransformerConfig(depth=2, width=16, heads=2, mlp_ratio=2.0, out=OUT),
    "swin": SwinConfig(depth=2, width=16, heads=2, window=(2, 4, 4), mlp_ratio=2.0, out=OUT),
}
# (T, h, w): one token, one frame, sizes that are no multiple of the (2, 4, 4) window, a
# window multiple, and a window longer than the input along some axes
GRIDS = [(1, 1, 1), (1, 4, 4), (3, 5, 7), (4, 8, 8), (16, 3, 16), (5, 16, 1)]
BATCH, FRAMES, SIZE = 2, 4, 32


def tmm(kind: str, in_dim: int = 12):
    return TMM_KINDS[kind](in_dim, SECTIONS[kind])


def demo_config(kind: str):
    """The demo preset with a tiny `kind` TMM and a random-init mini IFM at 32 px."""
    section = {f"tmm.{kind}.{key}": value for key, value in vars(SECTIONS[kind]).items()}
    overrides = {"ifm.random_init": True, "ifm.img_size": SIZE, "head.hidden": 16}
    return load_config("demo", {"tmm.kind": kind, **overrides, **section})


@pytest.fixture(scope="module")
def mini_ifm():
    return build_frozen_ifm(demo_config("conv3d").ifm, torch.device("cpu"))


def clips(batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, FRAMES, 3, SIZE, SIZE, generator=generator)


# ----------------------------------------------------------------- the table and the shapes


@pytest.mark.parametrize("kind", KINDS)
def test_the_table_builds_each_kind_from_its_section(kind):
    module = tmm(kind, in_dim=12)
    assert isinstance(module, CLASSES[kind])
    assert (module.in_dim, module.out_dim) == (12, OUT)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_through_every_stage(kind, mini_ifm):
    torch.manual_seed(0)
    config = demo_config(kind)
    model = build_model(config, num_classes=3, ifm=mini_ifm).eval()
    assert isinstance(model.tmm, CLASSES[kind]) and model.tmm.out_dim == OUT
    frames = clips()
    tokens = model.ifm(frames)
    assert tokens.shape == (BATCH, 96, FRAMES, 4, 4)  # the mini IFM: 96-d tokens, stride 8
    assert model.sfu(tokens).shape == tokens.shape  # the demo keeps the whole grid
    assert model.tmm(tokens).shape == (BATCH, OUT, FRAMES, 4, 4)  # T, h, w unchanged
    assert model(frames).shape == (BATCH, 3)


@pytest.mark.parametrize("grid", GRIDS, ids=lambda grid: "x".join(map(str, grid)))
@pytest.mark.parametrize("kind", KINDS)
def test_any_token_grid_keeps_its_size(kind, grid):
    torch.manual_seed(0)
    module = tmm(kind).train()  # train mode: batch norm uses the batch, as in training
    output = module(torch.randn(BATCH, 12, *grid))
    assert output.shape == (BATCH, OUT, *grid)
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("kind", KINDS)
def test_builds_and_counts_on_the_meta_device(kind):
    with torch.device("meta"):
        module = tmm(kind, in_dim=96)
        tokens = torch.empty(1, 96, 3, 5, 7)
        assert module(tokens).shape == (1, OUT, 3, 5, 7)
        assert count_macs(module, tokens) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_module_and_outputs(kind):
    tokens = torch.randn(BATCH, 12, 3, 5, 6)
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        module = tmm(kind).train()
        outputs.append(module(tokens))
    assert torch.equal(outputs[0], outputs[1])


# ------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("kind", KINDS)
def test_backward_reaches_every_tmm_parameter_and_no_ifm_parameter(kind, mini_ifm):
    torch.manual_seed(0)
    model = build_model(demo_config(kind), num_classes=4, ifm=mini_ifm)
    model.train()
    assert not any(module.training for module in model.ifm.modules())  # the IFM stays eval
    F.cross_entropy(model(clips()), torch.tensor([0, 3])).backward()
    for name, parameter in model.ifm.named_parameters():
        assert not parameter.requires_grad and parameter.grad is None, name
    trainable = dict(model.named_trainable_parameters())
    assert any(name.startswith("tmm.") for name in trainable)
    for name, parameter in trainable.items():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# ------------------------------------------------------------------- Swin windows and masks


def dense_reference(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """`block` computed without windows, rolls or padding: full attention over all T h w
    tokens, where two tokens may attend to each other only when they lie in the same
    (shifted) window region along every axis, plus the block's relative position bias.

    x [B, T, h, w, C] -> [B, T, h, w, C].
    """
    batch, *sizes, channels = x.shape
    windows = [min(size, win) for size, win in zip(sizes, block.window, strict=True)]
    shifts = [
        win // 2 if block.shifted and size > win else 0
        for size, win in zip(sizes, block.window, strict=True)
    ]
    coordinates = torch.stack(
        torch.meshgrid(*(torch.arange(size) for size in sizes), indexing="ij")
    ).flatten(1)  # [3, N]
    # regions: windows start at shift + k window; the tokens before the shift form one more
    regions = torch.stack(
        [
            torch.div(coordinates[axis] - shifts[axis], windows[axis], rounding_mode="floor")
            for axis in range(3)
        ]
    )  # [3, N]
    same_region = (regions[:, :, None] == regions[:, None, :]).all(dim=0)  # [N, N]
    spans = [2 * win - 1 for win in block.window]
    offsets = coordinates[:, :, None] - coordinates[:, None, :]  # [3, N, N]
    index = 0
    for axis in range(3):
        shifted = (offsets[axis] + block.window[axis] - 1).clamp(0, spans[axis] - 1)
        index = index * spans[axis] + shifted  # out-of-window pairs are masked below
    bias = block.bias_table[index].permute(2, 0, 1)  # [heads, N, N]
    mask = bias.masked_fill(~same_region, float("-inf"))
    flat = x.reshape(batch, -1, channels)  # [B, N, C]
    return block.transformer(flat, mask).reshape(x.shape)


SWIN_GRIDS = [(4, 8, 8), (3, 5, 6), (5, 9, 11), (1, 3, 3), (2, 4, 12), (6, 2, 8)]


@pytest.mark.parametrize("shifted", [False, True], ids=["windows", "shifted"])
@pytest.mark.parametrize("grid", SWIN_GRIDS, ids=lambda grid: "x".join(map(str, grid)))
def test_swin_block_equals_dense_attention_within_window_regions(grid, shifted):
    """Windows, padding, the cyclic shift and the mask together give exactly attention over
    the real tokens of each region: padding changes nothing, and tokens the roll brings
    together from opposite ends never attend to each other."""
    torch.manual_seed(0)
    block = SwinBlock(width=8, heads=2, window=(2, 4, 4), mlp_ratio=2.0, shifted=shifted)
    torch.nn.init.normal_(block.bias_table)  # a bias large enough to matter
    x = torch.randn(2, *grid, 8)
    torch.testing.assert_close(block(x), dense_reference(block, x), atol=1e-5, rtol=1e-5)


def test_swin_windows_do_not_see_each_other():
    """In an unshifted block, changing the tokens of one window leaves the others' outputs
    unchanged, also in windows padded at the end of each axis."""
    torch.manual_seed(0)
    module = SwinTMM(12, depth=1, width=16, heads=2, window=(2, 4, 4), out=OUT).eval()
    tokens = torch.randn(1, 12, 3, 5, 6)  # windows: t 0-1 | 2 (padded), y 0-3 | 4, x 0-3 | 4-5
    changed = tokens.clone()
    changed[:, :, 2, 4, 4:] += 5.0  # the last (padded) window along every axis
    before, after = module(tokens), module(changed)
    inside = torch.zeros(3, 5, 6, dtype=torch.bool)
    inside[2, 4, 4:] = True
    assert torch.equal(before[..., ~inside], after[..., ~inside])
    assert not torch.allclose(before[..., inside], after[..., inside])
    # the second block's windows are shifted by (1, 2, 2): token (1, 2, 2) of the first
    # window now shares one with the changed token (2, 4, 4), and (0, 0, 0) still does not
    shifted = SwinTMM(12, depth=2, width=16, heads=2, window=(2, 4, 4), out=OUT).eval()
    before, after = shifted(tokens), shifted(changed)
    assert not torch.allclose(before[..., 1, 2, 2], after[..., 1, 2, 2])
    assert torch.equal(before[..., 0, 0, 0], after[..., 0, 0, 0])


def test_a_window_as_large_as_the_input_is_full_attention():
    """Window cut to the input: one window, no shift, so a two-block Swin equals two dense
    blocks without any mask but the position bias."""
    torch.manual_seed(0)
    module = SwinTMM(12, depth=2, width=16, heads=2, window=(8, 8, 8), out=OUT).eval()
    tokens = torch.randn(2, 12, 2, 3, 3)
    x = module.project(tokens.permute(0, 2, 3, 4, 1))  # [B, T, h, w, width]
    for block in module.blocks:
        bias = block.relative_position_bias((2, 3, 3))  # [heads, N, N], no -inf anywhere
        x = block.transformer(x.reshape(2, -1, 16), bias).reshape(x.shape)
    expected = module.output(module.norm(x)).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(module(tokens), expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------- transformer positions


def test_position_embedding_tells_every_token_apart_at_any_size():
    for sizes in [(1, 1, 1), (3, 5, 7), (16, 16, 16)]:
        embedding = sincos_position_embedding(sizes, 48)
        assert embedding.shape == (math.prod(sizes), 48)
        assert torch.unique(embedding, dim=0).shape[0] == math.prod(sizes)
    # a grid's embedding is the top-left corner of a larger grid's: no interpolation
    small = sincos_position_embedding((2, 3, 3), 30).reshape(2, 3, 3, 30)
    large = sincos_position_embedding((4, 5, 6), 30).reshape(4, 5, 6, 30)
    torch.testing.assert_close(small, large[:2, :3, :3])
    assert sincos_position_embedding((2, 2, 2), 7)[:, -1].abs().sum() == 0  # odd width


def test_transformer_sees_positions():
    """Without position embeddings attention is permutation-equivariant (a clip reversed in
    time would give the reversed output); with them it does not."""
    torch.manual_seed(0)
    module = tmm("transformer").eval()
    tokens = torch.randn(1, 12, 4, 3, 3)
    flipped = tokens.flip(2)
    assert not torch.allclose(module(tokens).flip(2), module(flipped), atol=1e-4)


# -------------------------------------------------------------------------- demo presets


# kind -> MACs of one 8 x 8 x 8 clip of 96-d tokens as a function of the module: linear or
# convolution weights x tokens, plus attention (QK^T and AV: 2 x N x keys x width per block)
def expected_macs(kind: str, module, tokens: int = 8 * 8 * 8) -> int:
    if kind == "conv3d":
        weights = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Conv3d))
        return weights * tokens
    weights = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    keys = tokens if kind == "transformer" else math.prod(module.blocks[0].window)
    width = module.project.out_features
    return weights * tokens + len(module.blocks) * 2 * tokens * keys * width


@pytest.mark.parametrize("kind", KINDS)
def test_demo_preset_summarises_with_exact_costs(kind):
    config = load_config(f"demo-{kind}")
    assert config.tmm.kind == kind
    result = summary(config)
    assert result["tmm_input"] == [96, 8, 8, 8]
    with torch.device("meta"):
        module = TMM_KINDS[kind](96, getattr(config.tmm, kind))
    assert result["tmm_params"] == count_params(module)
    assert 30_000 < result["trainable_params"] < 250_000  # sized like the demo's bottleneck
    assert result["tmm_macs"] == expected_macs(kind, module) > 0
    assert result["total_macs"] > result["ifm_macs"] + result["tmm_macs"] - 1


def test_summary_command_for_a_tmm_kind_preset(capsys):
    assert main(["summary", "--config", "demo-swin", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tmm_params"] > 0 and result["tmm_macs"] > 0


# ------------------------------------------------------------------------------ learning


def moving_blobs(
    count: int,
    seed: int,
    background: float = 0.5,
    noise: float = 0.1,
    channels: int = 8,
    frames: int = 4,
    size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token volumes [count, channels, frames, size, size] with one blob moving 1 (label 0) or
    4 (label 1) cells per frame along a random axis and direction (wrapping round), over a
    static random background and per-frame noise (standard deviations `background`, `noise`;
    the blob's centre has unit-variance channels). Every frame alone looks alike."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, (count,), generator=generator)
    speeds = torch.tensor([1, 4])[labels]  # [count]
    steps = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1]])[
        torch.randint(4, (count,), generator=generator)
    ]  # [count, 2] (dy, dx)
    start = torch.randint(size, (count, 2), generator=generator)
    time = torch.arange(frames)
    centres = start[:, None] + speeds[:, None, None] * time[None, :, None] * steps[:, None]
    centres = centres % size  # [count, frames, 2]
    cells = torch.arange(size)
    distance = (cells[None, None, :] - centres[..., None]).abs()  # [count, frames, 2, size]
    distance = torch.minimum(distance, size - distance)  # on the torus
    squared = distance[:, :, 0, :, None] ** 2 + distance[:, :, 1, None, :] ** 2
    blob = torch.exp(-squared / (2 * 0.7**2))  # [count, frames, size, size]
    pattern = torch.randn(channels, generator=torch.Generator().manual_seed(0))  # the blob's
    scene = background * torch.randn(count, channels, 1, size, size, generator=generator)
    jitter = noise * torch.randn(count, channels, frames, size, size, generator=generator)
    tokens = scene + jitter + pattern[None, :, None, None, None] * blob[:, None]
    return tokens, labels


# kind -> (small section, Adam steps of 32 clips). Attention modules start from near-uniform
# attention (a global average, blind to motion) and only leave it once they learn where to
# look: Swin's local windows and relative position bias get there in ~100 steps, full
# space-time attention in ~800-1000 (measured: chance until step ~700, 98% at step 1000).
LEARNERS = {
    "conv3d": (Conv3dConfig(hidden=16, out=16, kernel=(3, 3, 3)), 80),
    "transformer": (TransformerConfig(depth=2, width=16, heads=2, mlp_ratio=2.0, out=16), 1200),
    "swin": (SwinConfig(depth=2, width=16, heads=2, window=(2, 4, 4), mlp_ratio=2.0, out=16), 150),
}


@pytest.mark.parametrize(
    "kind", ["conv3d", pytest.param("transformer", marks=pytest.mark.slow), "swin"]
)
def test_learns_playback_speed_on_moving_blobs(kind):
    """The module + a linear head tell a blob moving 1 cell per frame from one moving 4, on
    held-out clips, far above chance (50%)."""
    torch.manual_seed(0)
    tokens, labels = moving_blobs(512, seed=1, background=0.1, noise=0.05)
    test_tokens, test_labels = moving_blobs(256, seed=2, background=0.1, noise=0.05)
    section, steps = LEARNERS[kind]
    module = TMM_KINDS[kind](tokens.shape[1], section)
    model = torch.nn.Sequential(module, LinearHead(module.out_dim, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(steps):
        batch = slice(step * 32 % 512, step * 32 % 512 + 32)
        optimizer.zero_grad()
        F.cross_entropy(model(tokens[batch]), labels[batch]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_tokens).argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.9, accuracy
