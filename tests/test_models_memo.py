"""FrozenIFM.memoize: a frozen IFM's tokens are reused for frames seen before, unchanged."""

import torch
from timm.models.vision_transformer import VisionTransformer

from advise.models.ifm import FrozenIFM


def tiny_ifm() -> FrozenIFM:
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    return FrozenIFM(vit, "tiny", 32, (0.5,) * 3, (0.25,) * 3, patch_size=8)


def test_memoized_tokens_equal_fresh_tokens_and_skip_recomputation():
    ifm = tiny_ifm()
    frames = torch.randn(2, 3, 3, 32, 32)
    fresh = ifm(frames)
    calls = []
    ifm.model.patch_embed.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0])
    )
    ifm.memoize()
    first = ifm(frames)
    assert torch.allclose(first, fresh, atol=1e-6)
    # a batch with 2 seen clips reordered and a repeated frame: nothing new to compute
    again = ifm(torch.stack([frames[1], frames[0], frames[0]]))
    assert torch.allclose(again, torch.stack([fresh[1], fresh[0], fresh[0]]), atol=1e-6)
    assert calls == [6]  # only the first call ran the model, on its 6 distinct frames
    changed = frames.clone()
    changed[0, 0, 0, 0, 0] += 1.0  # one pixel differs: a new frame, computed afresh
    ifm(changed[:1])
    assert calls == [6, 1]
    ifm.memoize(False)
    ifm(frames)
    assert calls[-1] == 6
