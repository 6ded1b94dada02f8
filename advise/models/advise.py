"""The composed model: frozen IFM -> SFU -> TMM -> head."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from torch import Tensor, nn

from advise.models.ifm import FrozenIFM

TRAINABLE_PARTS = ("sfu", "tmm", "head")


class AdViSe(nn.Module):
    """Frozen IFM tokens -> spatial pooling -> temporal module -> head.

    forward(frames [B, T, 3, H, W], normalised for the IFM) -> logits [B, num_classes]
    forward_tokens(tokens [B, D, T, h, w], the IFM's output, e.g. from a feature store)
        -> logits [B, num_classes]
    Both share everything after the IFM. `ifm` may be None for a model that only ever sees
    stored tokens; an absent SFU or TMM is `nn.Identity()`.

    Only the SFU, TMM and head are trained and checkpointed (`trainable_state_dict`); the IFM
    is identified by its name and weights hash instead.
    """

    def __init__(
        self, ifm: FrozenIFM | None, sfu: nn.Module, tmm: nn.Module, head: nn.Module
    ) -> None:
        super().__init__()
        self.ifm = ifm
        self.sfu = sfu
        self.tmm = tmm
        self.head = head

    def forward(self, frames: Tensor | None = None, *, tokens: Tensor | None = None) -> Tensor:
        """frames [B, T, 3, H, W], or stored `tokens` [B, D, T, h, w] -> [B, num_classes].

        Both through `forward`, so a DistributedDataParallel wrapper sees every call."""
        if tokens is not None:
            return self.forward_tokens(tokens)
        if self.ifm is None:
            raise RuntimeError("this AdViSe model has no IFM: pass stored tokens=")
        return self.forward_tokens(self.ifm(frames))

    def forward_tokens(self, tokens: Tensor) -> Tensor:  # [B, D, T, h, w] -> [B, num_classes]
        if tokens.device.type != "cpu":  # stored tokens come channels last, for a CPU's TMM
            tokens = tokens.contiguous()
        return self.head(self.tmm(self.sfu(tokens)))

    def train(self, mode: bool = True) -> AdViSe:
        """Set train/eval mode; a stage without trainable parameters (a frozen TMM in linear
        probing, the IFM) stays in eval mode, so its batch-norm statistics never move."""
        super().train(mode)
        for part in (self.sfu, self.tmm):
            if not any(parameter.requires_grad for parameter in part.parameters()):
                part.train(False)
        return self

    def replace_head(self, head: nn.Module) -> None:
        """Swap in a new head (fine-tuning keeps the pre-trained TMM and trains a new head)."""
        self.head = head

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) for every parameter that requires a gradient (never the IFM's)."""
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                yield name, parameter

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """State of everything but the IFM ("sfu.*", "tmm.*", "head.*"), BN buffers included."""
        return {
            f"{part}.{key}": value
            for part in TRAINABLE_PARTS
            for key, value in getattr(self, part).state_dict().items()
        }

    def load_trainable_state_dict(
        self,
        state_dict: Mapping[str, Tensor],
        strict: bool = True,
        parts: tuple[str, ...] = TRAINABLE_PARTS,
    ) -> tuple[list[str], list[str]]:
        """Load what `trainable_state_dict` wrote into `parts` (all trainable parts, or e.g.
        the SFU and TMM a pre-training checkpoint passes on); returns (missing_keys,
        unexpected_keys).

        With `strict`, any missing or unexpected key or shape mismatch raises ValueError before
        anything is changed. IFM keys are never accepted (the IFM is not checkpointed).
        Without `strict`, matching keys are loaded and the rest reported.
        """
        expected = {
            key: value
            for key, value in self.trainable_state_dict().items()
            if key.split(".", 1)[0] in parts
        }
        missing = [key for key in expected if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        wrong_shape = [
            f"{key} {tuple(value.shape)} (model has {tuple(expected[key].shape)})"
            for key, value in state_dict.items()
            if key in expected and value.shape != expected[key].shape
        ]
        if wrong_shape or (strict and (missing or unexpected)):
            problems = [
                f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for label, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("wrong shape", wrong_shape),
                )
                if keys
            ]
            raise ValueError("trainable state does not fit this model; " + "; ".join(problems))
        for part in parts:
            prefix = f"{part}."
            part_state = {
                key[len(prefix) :]: value
                for key, value in state_dict.items()
                if key.startswith(prefix) and key in expected
            }
            getattr(self, part).load_state_dict(part_state, strict=strict)
        return missing, unexpected
