"""Per-family maps from canonical hook points to the Hugging Face modules that carry them.

Nothing outside autointerp.models knows architectures. An adapter answers: which module's
input or output holds a given hook point, how to view it ([b,p,...] canonical shapes), and where
the weights used for direct logit attribution live. It never re-implements a forward pass.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import nn

from ..errors import ModelSpecError


# ----------------------------------------------------------------------------- facts of any HF causal LM
# These work on a bare Hugging Face model (supported family or not), so the embedded LLM and the
# hooked model read architecture facts from the same place.

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")


def text_config(model: nn.Module) -> Any:
    """The text model's config (the text half of a multimodal config)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (what transformers' get_decoder() returns): called with
    input_ids it returns last_hidden_state (and past_key_values with use_cache=True)."""
    get = getattr(model, "get_decoder", None)
    dec = get() if callable(get) else None
    if dec is None or dec is model:
        for attr in ("model", "transformer"):
            dec = getattr(model, attr, None)
            if isinstance(dec, nn.Module):
                return dec
        dec = model.base_model
    return dec


def final_logit_softcap_of(model: nn.Module) -> float | None:
    """Gemma-2/3 final logit soft-capping (logits = tanh(logits / c) * c), or None."""
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    if cap is None:
        cap = getattr(model.config, "final_logit_softcapping", None)
    return float(cap) if cap else None


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    return logits if not cap else torch.tanh(logits / cap) * cap


def max_context_of(model: nn.Module) -> int | None:
    """The longest sequence the model's positions allow, from the HF config keys; None if unknown."""
    for cfg in (text_config(model), model.config):
        for k in CONTEXT_KEYS:
            v = getattr(cfg, k, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def norm_kind_of(norm: nn.Module) -> str:
    """'layernorm' (centres, may have a bias) or 'rmsnorm' (scales only)."""
    if isinstance(norm, nn.LayerNorm) or getattr(norm, "bias", None) is not None:
        return "layernorm"
    return "rmsnorm"


def _submodule(path: str):
    """An adapter method (self, block) -> the block's submodule at a dotted path ("self_attn.q_proj")."""
    get = operator.attrgetter(path)

    def method(self, block) -> nn.Module:
        return get(block)
    method.__doc__ = f"block.{path}"
    return method


class Adapter:
    family = "?"
    qkv_fused = False
    # post-sublayer norms (Gemma2/3): attn.out / mlp.out are the outputs of these norms
    post_norms = False
    norm_plus_one = False  # RMSNorm scales by (1 + weight)

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = text_config(model)

    # --- architecture facts (nothing outside models/ reads the HF config for these)
    @property
    def decoder(self) -> nn.Module:
        return decoder_of(self.model)

    @property
    def final_logit_softcap(self) -> float | None:
        return final_logit_softcap_of(self.model)

    @property
    def norm_kind(self) -> str:
        return norm_kind_of(self.final_norm())

    @property
    def max_context(self) -> int | None:
        return max_context_of(self.model)

    # --- structure
    def base(self) -> nn.Module:
        return self.model.base_model

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def embed(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def attn(self, block) -> nn.Module:
        raise NotImplementedError

    def q_proj(self, block): raise NotImplementedError
    def k_proj(self, block): raise NotImplementedError
    def v_proj(self, block): raise NotImplementedError
    def qkv_proj(self, block): raise NotImplementedError

    def o_proj(self, block) -> nn.Module:
        """Module whose input is attn.z (flattened heads)."""
        raise NotImplementedError

    def attn_out_module(self, block) -> nn.Module:
        """Module whose output is attn.out."""
        return self.o_proj(block)

    def mlp(self, block) -> nn.Module:
        return block.mlp

    def down_proj(self, block) -> nn.Module:
        """Module whose input is mlp.post."""
        raise NotImplementedError

    def mlp_out_module(self, block) -> nn.Module:
        return self.mlp(block)

    def mlp_norm(self, block) -> nn.Module:
        """The norm whose output is mlp.in (TransformerLens' ln2)."""
        return block.post_attention_layernorm

    def norm_affine(self, norm: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(scale, shift) a norm applies after normalising (None: none): out = normalised * scale + shift."""
        w, b = getattr(norm, "weight", None), getattr(norm, "bias", None)
        if w is not None and self.norm_plus_one:
            w = 1.0 + w
        return w, b

    # --- sizes
    def sizes(self) -> dict[str, int]:
        c = self.config
        n_heads = c.num_attention_heads
        d_model = c.hidden_size
        d_head = getattr(c, "head_dim", None) or d_model // n_heads
        return dict(
            n_layers=c.num_hidden_layers,
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            d_head=d_head,
            d_mlp=c.intermediate_size,
            vocab_size=self.lm_head().weight.shape[0],
        )

    # --- weights (canonical orientation)
    def W_out(self, block) -> torch.Tensor:  # [d_mlp, d_model]
        return self.down_proj(block).weight.T

    def b_out(self, block) -> torch.Tensor | None:
        return getattr(self.down_proj(block), "bias", None)

    def W_O(self, block, n_heads: int, d_head: int) -> torch.Tensor:  # [n_heads, d_head, d_model]
        w = self.o_proj(block).weight.T  # [n_heads*d_head, d_model]
        return w.reshape(n_heads, d_head, -1)

    def b_O(self, block) -> torch.Tensor | None:
        return getattr(self.o_proj(block), "bias", None)

    def ln_final_scale(self) -> torch.Tensor:
        return self.norm_affine(self.final_norm())[0]


class GPT2Adapter(Adapter):
    family = "gpt2"
    qkv_fused = True

    def blocks(self):
        return list(self.model.transformer.h)

    def base(self):
        return self.model.transformer

    def final_norm(self):
        return self.model.transformer.ln_f

    def mlp_norm(self, block):
        return block.ln_2

    attn = _submodule("attn")
    qkv_proj = _submodule("attn.c_attn")
    o_proj = _submodule("attn.c_proj")
    down_proj = _submodule("mlp.c_proj")

    def sizes(self):
        c = self.config
        d_model = c.n_embd
        return dict(
            n_layers=c.n_layer, d_model=d_model, n_heads=c.n_head, n_kv_heads=c.n_head,
            d_head=d_model // c.n_head, d_mlp=c.n_inner or 4 * d_model,
            vocab_size=self.lm_head().weight.shape[0],
        )

    # Conv1D weights are [in, out]
    def W_out(self, block):
        return self.down_proj(block).weight

    def W_O(self, block, n_heads, d_head):
        return self.o_proj(block).weight.reshape(n_heads, d_head, -1)


class LlamaAdapter(Adapter):
    """Llama / SmolLM2 / Mistral / Qwen2 / Qwen3: model.layers[i].self_attn.{q,k,v,o}_proj, mlp.down_proj."""

    family = "llama"

    def blocks(self):
        return list(self.base().layers)

    def final_norm(self):
        return self.base().norm

    attn = _submodule("self_attn")
    q_proj = _submodule("self_attn.q_proj")
    k_proj = _submodule("self_attn.k_proj")
    v_proj = _submodule("self_attn.v_proj")
    o_proj = _submodule("self_attn.o_proj")
    down_proj = _submodule("mlp.down_proj")


class GemmaAdapter(LlamaAdapter):
    family = "gemma"
    norm_plus_one = True


class Gemma3Adapter(GemmaAdapter):
    """Gemma2/Gemma3: post-attention and post-feedforward norms sit before the residual add."""

    family = "gemma3"
    post_norms = True

    def attn_out_module(self, block):
        return block.post_attention_layernorm

    def mlp_out_module(self, block):
        return block.post_feedforward_layernorm

    def mlp_norm(self, block):
        return block.pre_feedforward_layernorm


_BY_TYPE = {
    "gpt2": GPT2Adapter,
    "llama": LlamaAdapter, "mistral": LlamaAdapter, "qwen2": LlamaAdapter, "qwen3": LlamaAdapter,
    "smollm3": LlamaAdapter, "olmo": LlamaAdapter, "olmo2": LlamaAdapter,
    "gemma": GemmaAdapter,
    "gemma2": Gemma3Adapter, "gemma3": Gemma3Adapter, "gemma3_text": Gemma3Adapter,
}


def adapter_for(model: nn.Module) -> Adapter:
    cfg = model.config
    mtype = getattr(cfg, "model_type", "")
    if mtype not in _BY_TYPE and hasattr(cfg, "get_text_config"):
        mtype = getattr(cfg.get_text_config(), "model_type", mtype)
    cls: Any = _BY_TYPE.get(mtype)
    if cls is None:
        # structural fallback: anything shaped like Llama
        base = getattr(model, "base_model", None)
        layers = getattr(base, "layers", None)
        if layers is not None and len(layers) and all(
            hasattr(getattr(layers[0], "self_attn", None), p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ) and hasattr(getattr(layers[0], "mlp", None), "down_proj"):
            cls = LlamaAdapter
    if cls is None:
        raise ModelSpecError(
            f"unsupported architecture {mtype!r} ({type(model).__name__}): supported families are GPT-2, "
            "Llama-style (Llama, SmolLM2, Mistral, Qwen2) and Gemma3")
    return cls(model)
