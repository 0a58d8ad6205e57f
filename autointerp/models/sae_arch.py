"""SAE architectures, each a class registered by name (SAELens' `register_sae_class` in spirit).

An architecture says how latents come from encoder pre-activations, which tensors beyond
W_enc/b_enc/W_dec/b_dec it needs (with their shapes), what else it checks in the config, and
whether it is a transcoder (reads `hook_name`, writes `hook_name_out`). Adding one is one class
and one decorator:

    @register_architecture
    class Gated(Architecture):
        name = "gated"
        def activate(self, sae, pre): ...

`SAE(architecture="gated", ...)` and `cfg.json` files saying "architecture": "gated" then work.
"""

from __future__ import annotations

from typing import ClassVar

import torch

WEIGHTS_FILE = "sae_weights.safetensors"
CFG_FILE = "cfg.json"


class Architecture:
    """The default: a ReLU SAE (SAELens' "standard"). Subclasses override what differs."""

    name: ClassVar[str] = ""
    transcoder: ClassVar[bool] = False

    def extra_shapes(self, d_in: int, d_sae: int, d_out: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the extra tensors this architecture needs."""
        return {}

    def check(self, sae, d_sae: int) -> str | None:
        """A one-line problem with the config (None: fine)."""
        return None

    def activate(self, sae, pre: torch.Tensor) -> torch.Tensor:
        """Latents of pre-activations. Outside autograd `pre` is consumed (overwritten in place)."""
        return torch.relu(pre) if pre.requires_grad else pre.relu_()


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(cls: type[Architecture]) -> type[Architecture]:
    """Class decorator: register an Architecture subclass under its `name`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    ARCHITECTURES[cls.name] = cls()
    return cls


# ---- the built-in architectures (SAELens' sae_lens/saes/) -------------------------------------
@register_architecture
class Standard(Architecture):
    """latents = relu((x' - b_dec*a) @ W_enc + b_enc)"""
    name = "standard"


class _JumpReLU(Architecture):
    """latents = relu(pre) * (pre > threshold)"""

    def extra_shapes(self, d_in, d_sae, d_out):
        return {"threshold": (d_sae,)}

    def activate(self, sae, pre):
        return torch.relu(pre) * (pre > sae.threshold)


@register_architecture
class JumpReLU(_JumpReLU):
    name = "jumprelu"


@register_architecture
class TopK(Architecture):
    """Keep the k largest pre-activations of each row, relu them, zero the rest."""
    name = "topk"

    def check(self, sae, d_sae):
        k = sae.k
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= d_sae:
            return f"a topk SAE needs an integer k in 1..d_sae={d_sae} in {CFG_FILE}, got {k!r}"
        return None

    def activate(self, sae, pre):
        top = pre.topk(sae.k, dim=-1)
        out = torch.zeros_like(pre) if pre.requires_grad else pre.zero_()
        return out.scatter_(-1, top.indices, torch.relu(top.values))


@register_architecture
class Transcoder(Architecture):
    """Reads the MLP input, predicts the MLP output; b_dec is never subtracted from the input."""
    name = "transcoder"
    transcoder = True


@register_architecture
class JumpReLUTranscoder(_JumpReLU):
    name = "jumprelu_transcoder"
    transcoder = True


@register_architecture
class SkipTranscoder(Transcoder):
    """A transcoder with a linear skip path: recons += x @ W_skip.T"""
    name = "skip_transcoder"

    def extra_shapes(self, d_in, d_sae, d_out):
        return {"W_skip": (d_out, d_in)}
