"""The composed model and its trainable parts: SFU, TMM, heads, AdViSe, cost counts.

A tiny timm ViT (32 x 32 frames, 8-pixel patches -> a 4 x 4 grid of 32-d tokens) stands in
for the IFM; clips are 2 x 4 x 3 x 32 x 32.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from advise.models.advise import AdViSe
from advise.models.cost import count_macs, count_params
from advise.models.heads import LinearHead, MLPHead
from advise.models.ifm import FrozenIFM
from advise.models.registry import TMM_KINDS
from advise.models.sfu import SFU
from advise.models.tmm import BottleneckTMM, IdentityTMM

BATCH, FRAMES, SIZE, PATCH, DIM = 2, 4, 32, 8, 32
GRID = SIZE // PATCH


def tiny_ifm() -> FrozenIFM:
    vit = VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=1, num_heads=2, num_classes=0
    )
    return FrozenIFM(vit, "tiny", SIZE, (0.5,) * 3, (0.25,) * 3, patch_size=PATCH)


def tiny_model(
    num_classes: int = 5, temporal_kernel: int = 3, sfu: nn.Module | None = None
) -> AdViSe:
    width = sfu.out_dim(DIM) if isinstance(sfu, SFU) else DIM
    tmm = BottleneckTMM(width, hidden=16, out=24, blocks=2, temporal_kernel=temporal_kernel)
    return AdViSe(tiny_ifm(), sfu or nn.Identity(), tmm, MLPHead(24, num_classes, hidden=16))


def clips(batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, FRAMES, 3, SIZE, SIZE, generator=generator)


# ---------------------------------------------------------------- shapes through every stage


@pytest.mark.parametrize("spatial, channels", [(None, None), (2, None), (None, 16), (1, 8)])
@pytest.mark.parametrize("temporal_kernel", [1, 3])
@pytest.mark.parametrize("head_kind", ["mlp", "linear"])
def test_shapes_through_every_stage(spatial, channels, temporal_kernel, head_kind):
    torch.manual_seed(0)
    ifm = tiny_ifm()
    sfu = SFU(spatial, channels)
    width = sfu.out_dim(ifm.embed_dim)
    tmm = BottleneckTMM(width, hidden=8, out=24, blocks=2, temporal_kernel=temporal_kernel)
    head = MLPHead(24, 5, hidden=16) if head_kind == "mlp" else LinearHead(24, 5)
    model = AdViSe(ifm, sfu, tmm, head)

    tokens = ifm(clips())
    assert tokens.shape == (BATCH, DIM, FRAMES, GRID, GRID)
    assert ifm.grid_size() == (GRID, GRID)
    pooled = sfu(tokens)
    side = spatial or GRID
    assert pooled.shape == (BATCH, width, FRAMES, side, side)
    assert sfu.out_grid_size(ifm.grid_size()) == (side, side)
    temporal = tmm(pooled)
    assert temporal.shape == (BATCH, 24, FRAMES, side, side)  # no down-sampling in T, h, w
    assert model(clips()).shape == (BATCH, 5)


def test_forward_tokens_equals_forward_after_ifm():
    torch.manual_seed(0)
    model = tiny_model(sfu=SFU(2, 16)).eval()
    frames = clips()
    assert torch.equal(model(frames), model.forward_tokens(model.ifm(frames)))


def test_model_without_ifm_runs_on_tokens_only():
    torch.manual_seed(0)
    model = AdViSe(None, nn.Identity(), BottleneckTMM(DIM, 8, 16), LinearHead(16, 3))
    assert model.forward_tokens(torch.randn(BATCH, DIM, FRAMES, GRID, GRID)).shape == (BATCH, 3)
    tokens = torch.randn(BATCH, DIM, FRAMES, GRID, GRID)
    assert torch.equal(model(tokens=tokens), model.forward_tokens(tokens))
    with pytest.raises(RuntimeError, match="tokens="):
        model(clips())


@pytest.mark.parametrize("head_class", [MLPHead, LinearHead])
def test_none_tmm_is_the_average_pooling_baseline(head_class):
    torch.manual_seed(0)
    ifm = tiny_ifm()
    tmm = TMM_KINDS["none"](DIM, None)
    assert isinstance(tmm, IdentityTMM) and tmm.out_dim == DIM
    head = head_class(DIM, 3)
    model = AdViSe(ifm, nn.Identity(), tmm, head).eval()
    frames = clips()
    logits = model(frames)
    assert logits.shape == (BATCH, 3)
    # the head sees the IFM tokens untouched: logits depend only on their mean over T, h, w
    mean_tokens = ifm(frames).mean(dim=(2, 3, 4))[:, :, None, None, None]  # [B, D, 1, 1, 1]
    torch.testing.assert_close(logits, head(mean_tokens))


# ---------------------------------------------------------------------------------- SFU


def test_sfu_spatial_pooling_is_the_mean_of_blocks():
    tokens = torch.arange(2 * 3 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 3, 2, 4, 4)
    pooled = SFU(spatial=2)(tokens)
    # [B, D, T, 4, 4] -> [B, D, T, 2, 2, 2, 2] (block row, row in block, block col, col in block)
    expected = tokens.reshape(2, 3, 2, 2, 2, 2, 2).mean(dim=(4, 6))
    torch.testing.assert_close(pooled, expected)
    assert SFU(spatial=1)(tokens).shape == (2, 3, 2, 1, 1)
    torch.testing.assert_close(SFU(spatial=1)(tokens)[..., 0, 0], tokens.mean(dim=(3, 4)))


def test_sfu_channel_pooling_averages_consecutive_channels():
    tokens = torch.randn(2, 6, 3, 2, 2)
    pooled = SFU(channels=3)(tokens)
    expected = tokens.reshape(2, 3, 2, 3, 2, 2).mean(dim=2)  # [B, 3 groups, 2 in group, T, h, w]
    torch.testing.assert_close(pooled, expected)
    assert SFU(channels=3).out_dim(6) == 3 and SFU().out_dim(6) == 6


def test_sfu_both_poolings_and_identity():
    tokens = torch.randn(1, 8, 2, 4, 4)
    both = SFU(spatial=2, channels=4)(tokens)
    expected = tokens.reshape(1, 4, 2, 2, 2, 2, 2, 2).mean(dim=(2, 5, 7))
    torch.testing.assert_close(both, expected)
    assert torch.equal(SFU()(tokens), tokens)


def test_sfu_refuses_to_upsample():
    with pytest.raises(ValueError, match="channels"):
        SFU(channels=16)(torch.randn(1, 8, 2, 4, 4))
    with pytest.raises(ValueError, match="spatial"):
        SFU(spatial=5)(torch.randn(1, 8, 2, 4, 4))
    with pytest.raises(ValueError):
        SFU(spatial=0)


# ---------------------------------------------------------------------------------- TMM


def test_tmm_shortcuts_project_only_when_widths_differ():
    tmm = BottleneckTMM(32, hidden=8, out=16, blocks=3, temporal_kernel=3)
    first, second, _ = tmm.blocks
    assert isinstance(first.shortcut, nn.Sequential)  # 32 -> 16: 1x1x1 conv + BN projection
    assert isinstance(second.shortcut, nn.Identity)
    assert first.temporal[0].kernel_size == (3, 1, 1) and first.spatial[0].kernel_size == (1, 3, 3)
    assert all(conv.bias is None for conv in tmm.modules() if isinstance(conv, nn.Conv3d))
    # standard BN init (gamma = 1), not zero-init: a random TMM is not the identity
    assert all(
        torch.all(norm.weight == 1) for norm in tmm.modules() if isinstance(norm, nn.BatchNorm3d)
    )
    assert BottleneckTMM(16, 8, 16).blocks[0].shortcut.__class__ is nn.Identity


def test_tmm_rejects_even_temporal_kernel():
    with pytest.raises(ValueError, match="odd"):
        BottleneckTMM(8, temporal_kernel=2)


@pytest.mark.parametrize("temporal_kernel, order_invariant", [(1, True), (3, False)])
def test_frame_order_sensitivity_follows_the_temporal_kernel(temporal_kernel, order_invariant):
    """Kernel 1 mixes nothing across time, so the pooled model ignores frame order."""
    torch.manual_seed(0)
    model = tiny_model(temporal_kernel=temporal_kernel).eval()
    frames = clips()
    forward, reversed_ = model(frames), model(frames.flip(1))
    assert torch.allclose(forward, reversed_, atol=1e-5) == order_invariant


def test_tmm_computes_channels_last_on_a_cpu_as_the_standard_layout_does():
    """The CPU layout changes float rounding only: outputs and every gradient match the blocks
    run on standard-layout tokens, and the head pools channels-last features as their mean."""
    torch.manual_seed(0)
    tmm, head = BottleneckTMM(12, hidden=8, out=16, blocks=2), MLPHead(16, 3, hidden=8)
    tokens = torch.randn(16, 12, 4, 3, 3)  # 16 clips: torch's oneDNN path at any thread count
    outputs = {}
    for name, forward in (("standard", tmm.blocks), ("channels last", tmm)):
        features = forward(tokens)
        loss = head(features).square().sum()
        loss.backward()
        grads = [parameter.grad.clone() for parameter in [*tmm.parameters(), *head.parameters()]]
        outputs[name] = (features, grads)
        tmm.zero_grad(), head.zero_grad()
    standard, last = outputs["standard"], outputs["channels last"]
    assert standard[0].is_contiguous() and not last[0].is_contiguous()
    assert last[0].is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(last[0], standard[0], rtol=1e-5, atol=1e-5)
    for grad_last, grad_standard in zip(last[1], standard[1], strict=True):
        torch.testing.assert_close(grad_last, grad_standard, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------- heads


def test_mlp_head_structure_and_pooling():
    torch.manual_seed(0)
    head = MLPHead(6, 3, hidden=10).eval()
    assert [type(m) for m in head.children()] == [
        nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear
    ]  # fmt: skip
    features = torch.randn(2, 6, 3, 2, 2)
    pooled = features.mean(dim=(2, 3, 4))
    expected = head.classifier(F.relu(head.norm(head.hidden(pooled))))
    torch.testing.assert_close(head(features), expected)
    linear = LinearHead(6, 3)
    torch.testing.assert_close(linear(features), linear.classifier(pooled))


# -------------------------------------------------------------------- freezing and training


def test_backward_reaches_every_trainable_parameter_and_no_ifm_parameter():
    torch.manual_seed(0)
    model = tiny_model(sfu=SFU(2, 16))
    model.train()
    assert all(not module.training for module in model.ifm.modules())  # IFM stays eval
    assert model.tmm.training and model.head.training
    loss = F.cross_entropy(model(clips()), torch.tensor([0, 3]))
    loss.backward()
    for name, parameter in model.ifm.named_parameters():
        assert not parameter.requires_grad and parameter.grad is None, name
    for part in (model.tmm, model.head):
        for name, parameter in part.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_ifm_builds_no_graph_even_if_its_parameters_are_unfrozen():
    torch.manual_seed(0)
    ifm = tiny_ifm()
    ifm.requires_grad_(True)  # a user mistake; the forward still runs under no_grad
    tokens = ifm(clips())
    assert tokens.grad_fn is None and not tokens.requires_grad


def test_optimizer_step_leaves_ifm_bit_identical():
    torch.manual_seed(0)
    model = tiny_model()
    before = {key: value.clone() for key, value in model.ifm.state_dict().items()}
    # even an optimizer given every parameter (with weight decay) must not move the IFM
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    tmm_before = model.tmm.blocks[0].temporal[0].weight.clone()
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(clips()), torch.tensor([1, 2])).backward()
        optimizer.step()
    for key, value in model.ifm.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.tmm.blocks[0].temporal[0].weight, tmm_before)
    trainable = dict(model.named_trainable_parameters())
    assert trainable and not any(name.startswith("ifm.") for name in trainable)


@pytest.mark.parametrize("temporal_kernel", [1, 3])
def test_learning_forward_versus_reversed_clips(temporal_kernel):
    """Label 0 = a clip, 1 = the same clip reversed. Adam lowers the loss of a kernel-3 TMM far
    below chance; a kernel-1 TMM (frame-order invariant) cannot get below ln 2."""
    torch.manual_seed(0)
    model = tiny_model(num_classes=2, temporal_kernel=temporal_kernel)
    frames = clips(batch=8, seed=1)
    batch = torch.cat([frames, frames.flip(1)])  # [16, T, 3, H, W]
    labels = torch.tensor([0] * 8 + [1] * 8)
    optimizer = torch.optim.Adam([p for _, p in model.named_trainable_parameters()], lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(batch), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if temporal_kernel == 3:
        assert losses[-1] < 0.3 < losses[0]
    else:
        assert min(losses) > math.log(2) - 1e-3


# ------------------------------------------------------------------ checkpointable state


def test_trainable_state_dict_round_trip():
    torch.manual_seed(0)
    model = tiny_model(sfu=SFU(2, 16))
    model.train()
    model(clips())  # move BN running statistics away from their initial values
    state = model.trainable_state_dict()
    assert state and not any(key.startswith("ifm.") for key in state)
    assert {key.split(".")[0] for key in state} == {"tmm", "head"}
    assert any(key.endswith("running_mean") for key in state)  # BN buffers included

    torch.manual_seed(1)
    other = tiny_model(sfu=SFU(2, 16))
    other.ifm = model.ifm  # same frozen IFM, different trainable parts
    missing, unexpected = other.load_trainable_state_dict(state)
    assert missing == [] and unexpected == []
    frames = clips()
    assert torch.equal(model.eval()(frames), other.eval()(frames))


def test_load_trainable_state_dict_rejects_what_does_not_fit():
    torch.manual_seed(0)
    model = tiny_model()
    state = model.trainable_state_dict()
    with pytest.raises(ValueError, match="unexpected: ifm"):
        model.load_trainable_state_dict({**state, "ifm.model.cls_token": torch.zeros(1)})
    partial = {key: value for key, value in state.items() if not key.startswith("head.")}
    with pytest.raises(ValueError, match="missing: head"):
        model.load_trainable_state_dict(partial)
    missing, _ = model.load_trainable_state_dict(partial, strict=False)
    assert missing and all(key.startswith("head.") for key in missing)
    wrong = dict(state)
    wrong["head.classifier.bias"] = torch.zeros(7)
    with pytest.raises(ValueError, match="wrong shape"):
        model.load_trainable_state_dict(wrong, strict=False)


def test_replace_head():
    torch.manual_seed(0)
    model = tiny_model()
    model.replace_head(LinearHead(24, 9))
    assert model(clips()).shape == (BATCH, 9)
    assert "head.classifier.weight" in model.trainable_state_dict()


# ------------------------------------------------------------------------------- cost


def test_count_params_splits_trainable_and_frozen():
    torch.manual_seed(0)
    model = tiny_model()
    trainable = count_params(model, trainable_only=True)
    assert trainable == count_params(model.tmm) + count_params(model.head)
    assert count_params(model) == trainable + count_params(model.ifm)
    assert count_params(model.ifm, trainable_only=True) == 0


def test_count_macs_counts_convolutions_and_matmuls_not_norms():
    assert count_macs(nn.Linear(10, 20), torch.randn(3, 10)) == 3 * 10 * 20
    assert count_macs(nn.BatchNorm3d(4), torch.randn(2, 4, 3, 5, 5)) == 0
    conv = nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1), bias=False)
    assert count_macs(conv, torch.randn(1, 4, 2, 5, 5)) == 6 * 4 * 9 * (2 * 5 * 5)


def test_count_macs_leaves_the_module_untouched():
    torch.manual_seed(0)
    tmm = BottleneckTMM(8, hidden=4, out=8).train()
    running_mean = tmm.blocks[0].temporal[1].running_mean.clone()
    count_macs(tmm, torch.randn(2, 8, 2, 3, 3))
    assert tmm.training and all(module.training for module in tmm.modules())
    assert torch.equal(tmm.blocks[0].temporal[1].running_mean, running_mean)


# PAPER.md Tables 2 and 3: TMM on a [768, 8, 14, 14] ViT-B/16 volume, output 1024, temporal
# kernel 1; (blocks, hidden) -> (params in M, GMACs)
PAPER_TMM_COST = {
    (1, 256): (1.84, 2.88),
    (2, 256): (2.95, 4.62),
    (4, 256): (5.18, 8.12),
    (6, 256): (7.41, 11.61),
    (8, 256): (9.63, 15.11),
    (1, 64): (0.94, 1.47),
    (1, 512): (4.07, 6.37),
    (1, 1024): (12.06, 18.91),
    (1, 2048): (42.21, 66.18),
}


@pytest.mark.parametrize("blocks, hidden", list(PAPER_TMM_COST))
def test_tmm_cost_matches_paper_tables(blocks, hidden):
    paper_params, paper_gmacs = PAPER_TMM_COST[(blocks, hidden)]
    with torch.device("meta"):  # shapes only: counting is free
        tmm = BottleneckTMM(768, hidden=hidden, out=1024, blocks=blocks, temporal_kernel=1)
        volume = torch.empty(1, 768, 8, 14, 14)
    conv_weights = sum(m.weight.numel() for m in tmm.modules() if isinstance(m, nn.Conv3d))
    positions = 8 * 14 * 14
    macs = count_macs(tmm, volume)
    assert macs == conv_weights * positions  # only convolution MACs: BN/ReLU/add not counted
    assert count_params(tmm) / 1e6 == pytest.approx(paper_params, rel=0.01)
    assert conv_weights / 1e6 == pytest.approx(paper_params, rel=0.01)
    assert macs / 1e9 == pytest.approx(paper_gmacs, rel=0.01)


def test_one_block_hidden_256_exact_conv_weights():
    tmm = BottleneckTMM(768, hidden=256, out=1024, blocks=1, temporal_kernel=1)
    conv_weights = sum(m.weight.numel() for m in tmm.modules() if isinstance(m, nn.Conv3d))
    assert conv_weights == 768 * 256 + 256 * 256 * 9 + 256 * 1024 + 768 * 1024 == 1_835_008
    # a temporal kernel of 3 triples the first convolution
    wider = BottleneckTMM(768, hidden=256, out=1024, blocks=1, temporal_kernel=3)
    assert count_params(wider) - count_params(tmm) == 2 * 768 * 256
