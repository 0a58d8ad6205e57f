"""HookedModel: a Hugging Face causal LM with canonical, TransformerLens-like hook points.

Hook names (L = layer):
    blocks.L.resid_pre   [b,p,d_model]        input of block L
    blocks.L.resid_post  [b,p,d_model]        output of block L
    blocks.L.attn.q      [b,p,n_heads,d_head] projection outputs, before rotary
    blocks.L.attn.k/v    [b,p,n_kv_heads,d_head]
    blocks.L.attn.z      [b,p,n_heads,d_head] per-head output, input of the output projection
    blocks.L.attn.pattern [b,n_heads,q_pos,k_pos] (switches to eager attention for that run)
    blocks.L.attn.out    [b,p,d_model]        what attention adds to the residual
    blocks.L.mlp.in      [b,p,d_model]        the MLP's input (after its pre-norm)
    blocks.L.mlp.post    [b,p,d_mlp]          MLP neurons, input of the down projection
    blocks.L.mlp.out     [b,p,d_model]        what the MLP adds to the residual
    ln_final.out         [b,p,d_model]        input of the unembedding

With an SAE attached (attach_sae) at a point P, P.sae.latents [b,p,d_sae], P.sae.recons and
P.sae.error (P minus the reconstruction) can be cached; a hook on P.sae.latents that changes them
splices the SAE in: P becomes recons(changed latents) + error, so an edit of one latent changes
only that latent's contribution. A transcoder is named by its input point (mlp.in); its recons,
error and splice are of its output point (mlp.out).

Everything is done with PyTorch forward hooks on the real modules; handles are always removed.
Runs execute under torch.no_grad() (not inference_mode: cached values must stay usable as patch
sources inside later grad=True runs, which inference tensors are not), or with grad when grad=True.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ..core.hooks import (FINAL_SITES, LAYER_SITES, VALID_FORMS, act_name, canonical, hook_names, is_head_site,
                          parse_hook, site_order, split_sae)
from ..core.units import Unit
from ..errors import HookError, UnitError
from .adapters import Adapter, adapter_for, softcap

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]

# names come from core.hooks (the one authority); kept here under their old names
LAYER_POINTS = LAYER_SITES
FINAL_POINTS = FINAL_SITES

_ATTN_IMPL = "autointerp_eager"
_ACTIVE: contextvars.ContextVar["_RunState | None"] = contextvars.ContextVar("autointerp_run", default=None)


class _Stop(Exception):
    """Raised from a hook to end a forward pass early (stop_at_layer)."""


@dataclass
class Run:
    logits: torch.Tensor | None
    cache: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        """The cached value of a hook point (TL's spelling accepted: run["blocks.3.attn.hook_z"])."""
        return self.cache[name] if name in self.cache else self.cache[canonical(name)]


# ----------------------------------------------------------------------------- eager attention with a pattern hook


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, p, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, p, d).reshape(b, h * n_rep, p, d)


def _pattern_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Plain eager attention (the same maths as the models' eager paths) exposing the pattern."""
    n_rep = query.shape[1] // key.shape[1]
    key = _repeat_kv(key, n_rep)
    value = _repeat_kv(value, n_rep)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    q_len, k_len = scores.shape[-2:]
    if attention_mask is None:
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :k_len], torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask[..., :k_len]
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    state = _ACTIVE.get()
    if state is not None:
        layer = state.attn_layers.get(id(module))
        if layer is not None:
            pattern = state.pattern_point(layer, pattern)
    pattern = nn.functional.dropout(pattern, p=dropout, training=module.training)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


def _register_attention() -> None:
    from transformers import AttentionInterface

    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

        ALL_MASK_ATTENTION_FUNCTIONS.register(_ATTN_IMPL, eager_mask)
    except ImportError:  # older transformers build masks from the name inside each model
        pass
    AttentionInterface.register(_ATTN_IMPL, _pattern_attention)


_register_attention()


# ----------------------------------------------------------------------------- run state


class _RunState:
    def __init__(self, cache_names: set[str], hooks: dict[str, HookFn], grad: bool, attn_layers: dict[int, int],
                 sae_in: dict | None = None, sae_out: dict | None = None):
        self.cache_names = cache_names
        self.hooks = hooks
        self.grad = grad
        self.cache: dict[str, torch.Tensor] = {}
        self.attn_layers = attn_layers
        self.sae_in = sae_in or {}      # point name -> SAE reading it
        self.sae_out = sae_out or {}    # point name -> transcoder writing it
        self.tc: dict[str, tuple] = {}  # transcoder input hook -> (x, latents, edited latents)

    def _keep(self, name: str, t: torch.Tensor) -> None:
        if name in self.cache_names:
            self.cache[name] = t if (self.grad and t.requires_grad) else t.detach()

    def _sae_read(self, sae, v: torch.Tensor) -> torch.Tensor | None:
        """Encode at an SAE's input point; returns the spliced value when its latents were edited."""
        x = v.reshape(*v.shape[:2], -1) if v.ndim == 4 else v
        pre, ctx = sae.pre_acts(x)
        z = sae.activate(pre)
        z2 = z
        fn = self.hooks.get(sae.latents_hook)
        if fn is not None:
            r = fn(z)
            if r is not None:
                if not isinstance(r, torch.Tensor):
                    raise HookError(f"hook on {sae.latents_hook} returned {type(r).__name__}: return a Tensor or None")
                try:
                    z2 = r.to(device=z.device, dtype=z.dtype).expand(z.shape)
                except RuntimeError:
                    raise HookError(f"hook on {sae.latents_hook} returned shape {tuple(r.shape)}, "
                                    f"expected {tuple(z.shape)}") from None
        self._keep(sae.latents_hook, z2)
        if sae.is_transcoder:
            self.tc[sae.hook] = (x, z, z2)
            return None
        edited = z2 is not z
        if not (edited or sae.recons_hook in self.cache_names or sae.error_hook in self.cache_names):
            return None
        rec_clean = sae.decode(z, x, ctx)
        err = x.float() - rec_clean
        rec = sae.decode(z2, x, ctx) if edited else rec_clean
        self._keep(sae.recons_hook, rec)
        self._keep(sae.error_hook, err)
        return (rec + err).reshape(v.shape) if edited else None

    def _sae_write(self, sae, v: torch.Tensor) -> torch.Tensor | None:
        """A transcoder's output point: recons and error there; the splice when its latents were edited."""
        got = self.tc.pop(sae.hook, None)
        if got is None:
            return None
        x, z, z2 = got
        rec_clean = sae.decode(z, x)
        err = v.float() - rec_clean
        edited = z2 is not z
        rec = sae.decode(z2, x) if edited else rec_clean
        self._keep(sae.recons_hook, rec)
        self._keep(sae.error_hook, err)
        return rec + err if edited else None

    def point(self, name: str, x: torch.Tensor, get, put) -> torch.Tensor | None:
        """Apply hook / cache for one point; return the new module tensor or None if unchanged."""
        v = get(x)
        new_x = None
        fn = self.hooks.get(name)
        if fn is not None:
            r = fn(v)
            if r is not None:
                if not isinstance(r, torch.Tensor):
                    raise HookError(f"hook on {name} returned {type(r).__name__}: return a Tensor or None")
                if r.shape != v.shape:
                    try:
                        r = r.expand(v.shape)
                    except RuntimeError:
                        raise HookError(
                            f"hook on {name} returned shape {tuple(r.shape)}, expected {tuple(v.shape)}") from None
                v = r.to(device=v.device, dtype=v.dtype)
                new_x = put(x, v)
        for table, fn in ((self.sae_in, self._sae_read), (self.sae_out, self._sae_write)):
            sae = table.get(name)
            if sae is not None:
                r = fn(sae, v)
                if r is not None:
                    v = r.to(device=v.device, dtype=v.dtype)
                    new_x = put(x, v)
        if self.grad and name in self.cache_names and new_x is None and v.requires_grad:
            new_x = put(x, v)  # route the forward pass through v so it receives gradients
        if name in self.cache_names:
            if self.grad and v.requires_grad:
                v.retain_grad()
                self.cache[name] = v
            else:
                self.cache[name] = v.detach()
        return new_x

    def pattern_point(self, layer: int, pattern: torch.Tensor) -> torch.Tensor:
        name = act_name("attn.pattern", layer)
        if name not in self.cache_names and name not in self.hooks:
            return pattern
        out = self.point(name, pattern, lambda x: x, lambda x, v: v)
        return pattern if out is None else out


def _heads_view(n: int, d_head: int):
    def get(x):
        return x.view(*x.shape[:-1], n, d_head)

    def put(x, v):
        return v.reshape(x.shape)

    return get, put


def _slice_view(start: int, stop: int, n: int, d_head: int):
    def get(x):
        return x[..., start:stop].view(*x.shape[:-1], n, d_head)

    def put(x, v):
        return torch.cat([x[..., :start], v.reshape(*x.shape[:-1], stop - start), x[..., stop:]], dim=-1)

    return get, put


def _ident():
    return (lambda x: x), (lambda x, v: v)


# ----------------------------------------------------------------------------- slice hooks (patching / ablation)


def _axis_mask(sel, size: int, device) -> torch.Tensor | None:
    if sel is None:
        return None
    if isinstance(sel, slice):
        m = torch.zeros(size, dtype=torch.bool, device=device)
        m[sel] = True
        return m
    if isinstance(sel, int):
        sel = [sel]
    t = torch.as_tensor(sel, device=device)
    if t.dtype == torch.bool:
        return t
    m = torch.zeros(size, dtype=torch.bool, device=device)
    m[t.long()] = True
    return m


class SliceHook:
    """A hook function that replaces a slice (positions x heads x neurons) of a hook's value.

    Bound to a hook name by HookedModel.forward (so it knows the pattern's axis order);
    called directly it assumes [b, p, ...] (heads on axis 2 for 4-D values).
    """

    def __init__(self, make_new: Callable[[torch.Tensor, "SliceHook"], torch.Tensor], positions=None, heads=None,
                 neurons=None, layout: str | None = None):
        self.make_new = make_new
        self.positions, self.heads, self.neurons = positions, heads, neurons
        self.layout = layout

    def bind(self, name: str) -> "SliceHook":
        layout = "pattern" if name.endswith("attn.pattern") else ("heads" if is_head_site(name) else "plain")
        return SliceHook(self.make_new, self.positions, self.heads, self.neurons, layout)

    def axes(self, value: torch.Tensor) -> tuple[int, int | None]:
        layout = self.layout or ("heads" if value.ndim == 4 else "plain")
        if layout == "pattern":
            return 2, 1
        return 1, (2 if layout == "heads" else None)

    def mask(self, value: torch.Tensor) -> torch.Tensor | None:
        pos_ax, head_ax = self.axes(value)
        nd, dev = value.ndim, value.device
        mask = None

        def put(m, ax):
            shape = [1] * nd
            shape[ax] = -1
            return m.view(shape)

        if self.positions is not None:
            pos = self.positions
            if isinstance(pos, torch.Tensor) and pos.dtype == torch.bool and pos.ndim == 2:  # [b, p]
                shape = [1] * nd
                shape[0], shape[pos_ax] = pos.shape
                mask = pos.to(dev).view(shape)
            else:
                mask = put(_axis_mask(pos, value.shape[pos_ax], dev), pos_ax)
        if self.heads is not None:
            if head_ax is None:
                raise HookError("heads= applies to attn.q/k/v/z/pattern hooks only")
            m = put(_axis_mask(self.heads, value.shape[head_ax], dev), head_ax)
            mask = m if mask is None else mask & m
        if self.neurons is not None:
            m = put(_axis_mask(self.neurons, value.shape[-1], dev), nd - 1)
            mask = m if mask is None else mask & m
        return mask

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        new = self.make_new(value, self).to(device=value.device, dtype=value.dtype)
        mask = self.mask(value)
        if mask is None:
            return new.expand(value.shape).clone()
        return torch.where(mask, new, value)


def patch_value(new: torch.Tensor, positions=None, heads=None, neurons=None) -> SliceHook:
    """Hook fn replacing the chosen slice of a hook's value with the same slice of `new`.

    `new` has the hook's full shape (or broadcasts to it), e.g. a cached value from another run.
    positions: int | list | slice | bool[p] | bool[b,p]; heads / neurons: int | list | slice | bool.
    """
    return SliceHook(lambda v, h: new, positions, heads, neurons)


def ablate(mode: str = "zero", reference: torch.Tensor | None = None, positions=None, heads=None, neurons=None,
           seed: int = 0) -> SliceHook:
    """Hook fn ablating the chosen slice.

    zero: set to 0. mean: set to the mean of `reference` (a value of the same hook from other runs,
    averaged over batch and positions; a tensor with fewer dims is used as the mean as is).
    resample: set to the value of a random row of `reference` ([n, p', ...] with p' >= p).
    """
    if mode == "zero":
        return SliceHook(lambda v, h: torch.zeros((), dtype=v.dtype, device=v.device), positions, heads, neurons)
    if reference is None:
        raise HookError(f"ablate(mode={mode!r}) needs a reference tensor")
    if mode == "mean":
        def make(v, h):
            if reference.ndim < v.ndim:
                return reference
            pos_ax, _ = h.axes(v)
            dims = (0,) if (h.layout == "pattern") else (0, pos_ax)
            return reference.float().mean(dim=dims, keepdim=True)

        return SliceHook(make, positions, heads, neurons)
    if mode == "resample":
        gen = torch.Generator().manual_seed(seed)

        def make(v, h):
            if reference.ndim != v.ndim:
                raise HookError(f"resample ablation needs a reference of shape [n, p, ...] like the value {tuple(v.shape)}")
            idx = torch.randint(reference.shape[0], (v.shape[0],), generator=gen)
            ref = reference[idx.to(reference.device)]
            pos_ax, _ = h.axes(v)
            sl = [slice(None)] * v.ndim
            for ax in ((2, 3) if h.layout == "pattern" else (pos_ax,)):
                if ref.shape[ax] < v.shape[ax]:
                    raise HookError(f"resample reference has {ref.shape[ax]} positions, the run has {v.shape[ax]}")
                sl[ax] = slice(0, v.shape[ax])
            return ref[tuple(sl)]

        return SliceHook(make, positions, heads, neurons)
    raise HookError(f"unknown ablation mode {mode!r}: use zero, mean or resample")


# ----------------------------------------------------------------------------- HookedModel


class HookedModel:
    def __init__(self, hf_model: nn.Module, tokenizer: Any, spec: str = "custom"):
        self.model = hf_model
        self.tokenizer = tokenizer
        self.spec = spec
        self.adapter: Adapter = adapter_for(hf_model)
        self.family = self.adapter.family
        s = self.adapter.sizes()
        self.n_layers = s["n_layers"]
        self.d_model = s["d_model"]
        self.n_heads = s["n_heads"]
        self.n_kv_heads = s["n_kv_heads"]
        self.d_head = s["d_head"]
        self.d_mlp = s["d_mlp"]
        self.vocab_size = s["vocab_size"]
        self._blocks = self.adapter.blocks()
        self.saes: dict[str, Any] = {}  # input hook point -> attached SAE (models/sae.py)
        if tokenizer is not None:
            if tokenizer.pad_token is None and tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "right"
        self.model.eval()

    @classmethod
    def load(cls, spec: str | None = None, device: str = "auto", dtype: str = "float32",
             progress: bool = True) -> "HookedModel":
        from .loader import DEFAULT_MODEL, load_model

        spec = spec or DEFAULT_MODEL
        model, tok = load_model(spec, device=device, dtype=dtype, progress=progress)
        return cls(model, tok, spec=str(spec))

    # --- properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_context(self) -> int | None:
        """The longest input the model takes (its config's position limit), None if it states none."""
        c = self.adapter.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
            v = getattr(c, key, None)
            if isinstance(v, int) and v > 0:
                return v
        return None

    def info(self) -> dict:
        return dict(family=self.family, n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
                    n_kv_heads=self.n_kv_heads, d_head=self.d_head, d_mlp=self.d_mlp, vocab_size=self.vocab_size)

    def __repr__(self) -> str:
        return f"HookedModel({self.spec!r}, {self.info()})"

    # --- names and units
    def hook_names(self, layers: Iterable[int] | None = None) -> list[str]:
        return hook_names(self.n_layers, layers)

    def check_hook(self, name: str) -> str:
        """autointerp's name of a hook point of this model (TL's spelling accepted); HookError if not one."""
        L, site = parse_hook(name)  # HookNameError (a HookError) listing the valid forms
        if L is None:
            return site
        if split_sae(site)[1] is not None and act_name(split_sae(site)[0], L) not in self.saes:
            raise HookError(f"hook {name!r}: no SAE is attached at {act_name(split_sae(site)[0], L)}")
        if not 0 <= L < self.n_layers:
            raise HookError(f"hook {name!r}: layer {L} out of range (model has layers 0..{self.n_layers - 1})")
        return f"blocks.{L}.{site}"

    def check_unit(self, unit: Unit | str) -> Unit:
        u = Unit.parse(unit) if isinstance(unit, str) else unit
        if not isinstance(u, Unit):
            raise UnitError(f"not a unit: {unit!r}")
        if u.record.needs_sae:
            sae = self.sae_named(u.sae, u.layer) if u.sae else None
            if sae is not None and sae.layer != u.layer:
                raise UnitError(f"{u}: SAE {sae.name} reads layer {sae.layer}, not layer {u.layer}")
            return u.check(self.n_layers, n_latents=None if sae is None else sae.d_sae)
        return u.check(self.n_layers, **{u.record.size: getattr(self, u.record.size)})

    # --- SAEs (models/sae.py)
    def hook_width(self, name: str) -> int:
        """Values per position of a layer hook point (heads flattened)."""
        L, site = parse_hook(self.check_hook(name))
        H, KV, dh = self.n_heads, self.n_kv_heads, self.d_head
        widths = {"resid_pre": self.d_model, "resid_post": self.d_model, "attn.out": self.d_model,
                  "mlp.in": self.d_model, "mlp.out": self.d_model, "mlp.post": self.d_mlp, "attn.q": H * dh,
                  "attn.z": H * dh, "attn.k": KV * dh, "attn.v": KV * dh}
        if L is None or site not in widths:
            raise HookError(f"no SAE can attach at {name}: use a layer's resid/attn/mlp point")
        return widths[site]

    def attach_sae(self, sae) -> Any:
        """Attach an SAE (or transcoder) at its hook point; its latents become readable as
        blocks.L.<site>.sae.latents. One SAE per input point: a second replaces the first."""
        from .sae import SAEError

        L = sae.layer
        if not 0 <= L < self.n_layers:
            raise SAEError(f"SAE {sae.name} reads {sae.hook}: layer {L} out of range (model has layers 0..{self.n_layers - 1})")
        sae.check_fits(self.hook_width(sae.hook), f"{sae.hook} of {self.spec}")
        self.fold_sae_input(sae)
        if sae.is_transcoder and self.hook_width(sae.hook_out) != sae.d_out:
            raise SAEError(f"transcoder {sae.name} writes d_out={sae.d_out} values but {sae.hook_out} of "
                           f"{self.spec} has {self.hook_width(sae.hook_out)}")
        for other in self.saes.values():   # unit ids L<layer>/F<i>@name: one name per layer (a transcoder set
            # shares its name across layers)
            if other.name == sae.name and other.hook != sae.hook and not (
                    other.layer != sae.layer and other.is_transcoder and sae.is_transcoder):
                raise SAEError(f"an SAE named {sae.name!r} is already attached at {other.hook}")
        self.saes[sae.hook] = sae.to(self.device)
        return sae

    def fold_sae_input(self, sae) -> Any:
        """An SAE that reads TL's ln2.hook_normalized gets this model's ln2 norm folded in, so that it
        reads mlp.in exactly (models/sae.py); any other SAE is returned as it is."""
        if sae.input_norm is None and sae.folded_for is None:
            return sae
        scale, shift = self.adapter.norm_affine(self.adapter.mlp_norm(self._blocks[sae.layer]))
        return sae.fold_input_norm(scale, shift, self.spec)

    def detach_sae(self, sae_or_hook) -> None:
        self.saes.pop(getattr(sae_or_hook, "hook", sae_or_hook), None)

    def sae_named(self, name: str, layer: int | None = None):
        """The attached SAE of this name, or None; with `layer`, the one at that layer first (a
        transcoder set shares one name across layers), else any of that name."""
        named = [s for s in self.saes.values() if s.name == name]
        return next((s for s in named if s.layer == layer), named[0] if named else None)

    # --- tokens
    def tokenize(self, texts: str | Sequence[str], max_length: int | None = None,
                 prepend_bos: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        tok = self.tokenizer
        if prepend_bos is None:
            seqs = tok(list(texts), add_special_tokens=True)["input_ids"]
        else:
            seqs = tok(list(texts), add_special_tokens=False)["input_ids"]
            bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            if prepend_bos and bos is not None:
                seqs = [[bos] + s for s in seqs]
        if max_length is not None:
            seqs = [s[:max_length] for s in seqs]
        width = max((len(s) for s in seqs), default=0)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def to_str_tokens(self, ids) -> list[str]:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def token_id(self, s: str) -> int | None:
        ids = self.tokenizer.encode(s, add_special_tokens=False)
        return int(ids[0]) if len(ids) == 1 else None

    # --- weights
    @property
    def W_U(self) -> torch.Tensor:
        return self.adapter.lm_head().weight.T

    @property
    def b_U(self) -> torch.Tensor | None:
        return getattr(self.adapter.lm_head(), "bias", None)

    def unembed(self, resid_final_normed: torch.Tensor) -> torch.Tensor:
        return softcap(self.adapter.lm_head()(resid_final_normed), self.final_logit_softcap)

    # --- architecture facts (from the adapter; nothing outside models/ reads the HF config)
    @property
    def decoder(self) -> nn.Module:
        """The decoder stack without the LM head (transformers' get_decoder())."""
        return self.adapter.decoder

    @property
    def final_logit_softcap(self) -> float | None:
        """Gemma-2/3's final logit soft-cap c (logits = tanh(logits / c) * c), or None."""
        return self.adapter.final_logit_softcap

    @property
    def norm_kind(self) -> str:
        """The final norm's kind: 'layernorm' (centres; may have a bias) or 'rmsnorm'."""
        return self.adapter.norm_kind

    @property
    def max_context(self) -> int | None:
        """The longest sequence the positions allow (HF config), or None when the config does not say."""
        return self.adapter.max_context

    def ln_final(self, resid: torch.Tensor) -> torch.Tensor:
        return self.adapter.final_norm()(resid)

    @property
    def ln_final_scale(self) -> torch.Tensor:
        return self.adapter.ln_final_scale()

    @property
    def ln_final_bias(self) -> torch.Tensor | None:
        """The final norm's bias (LayerNorm), or None (RMSNorm)."""
        return getattr(self.adapter.final_norm(), "bias", None)

    def W_out(self, layer: int) -> torch.Tensor:
        return self.adapter.W_out(self._blocks[layer])

    def b_out(self, layer: int) -> torch.Tensor | None:
        return self.adapter.b_out(self._blocks[layer])

    def W_O(self, layer: int) -> torch.Tensor:
        return self.adapter.W_O(self._blocks[layer], self.n_heads, self.d_head)

    def b_O(self, layer: int) -> torch.Tensor | None:
        return self.adapter.b_O(self._blocks[layer])

    # --- hook point -> (module, "pre"|"post", get, put)
    def _point(self, name: str):
        L, what = parse_hook(name)
        if L is None:  # ln_final.out
            return self.adapter.final_norm(), "post", *_ident()
        a, blk = self.adapter, self._blocks[L]
        H, KV, dh = self.n_heads, self.n_kv_heads, self.d_head
        if what == "resid_pre":
            return blk, "pre", *_ident()
        if what == "resid_post":
            return blk, "post", *_ident()
        if what in ("attn.q", "attn.k", "attn.v"):
            n = H if what == "attn.q" else KV
            if a.qkv_fused:
                start = {"attn.q": 0, "attn.k": H * dh, "attn.v": H * dh + KV * dh}[what]
                return a.qkv_proj(blk), "post", *_slice_view(start, start + n * dh, n, dh)
            mod = {"attn.q": a.q_proj, "attn.k": a.k_proj, "attn.v": a.v_proj}[what](blk)
            return mod, "post", *_heads_view(n, dh)
        if what == "attn.z":
            return a.o_proj(blk), "pre", *_heads_view(H, dh)
        if what == "attn.out":
            return a.attn_out_module(blk), "post", *_ident()
        if what == "mlp.in":
            return a.mlp(blk), "pre", *_ident()
        if what == "mlp.post":
            return a.down_proj(blk), "pre", *_ident()
        if what == "mlp.out":
            return a.mlp_out_module(blk), "post", *_ident()
        raise HookError(f"unknown hook {name!r}: use {VALID_FORMS}")  # pragma: no cover

    @staticmethod
    def _layer_of(name: str) -> int | None:
        return parse_hook(name)[0]

    # --- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                cache: Iterable[str] = (), hooks: dict[str, HookFn] | None = None, return_logits: bool = True,
                stop_at_layer: int | None = None, start_at_layer: int | None = None,
                resid: torch.Tensor | None = None, grad: bool = False) -> Run:
        """Run the model with hooks.

        cache: hook names whose values to keep (only those). hooks: name -> fn(value) returning a
        replacement tensor or None. return_logits=False runs the base model only (no unembedding).
        stop_at_layer=L runs blocks 0..L-1 only (blocks.L.resid_pre is still available; logits None).
        start_at_layer=L with resid ([b,p,d_model], the value of blocks.L.resid_pre) starts there: the
        embedding and blocks 0..L-1 are not computed (hooks and caches on them are refused); the
        masks and rotary embeddings are still made from input_ids / attention_mask as usual, and a
        hook on blocks.L.resid_pre sees resid. With stop_at_layer, start <= stop.
        grad=True keeps the graph: cached tensors are live, with retain_grad(), so callers can
        backprop a metric of the logits to them (attribution patching).
        """
        if isinstance(cache, str):
            cache = [cache]
        cache_names = {self.check_hook(n) for n in cache}
        hooks = {self.check_hook(n): (fn.bind(n) if isinstance(fn, SliceHook) else fn)
                 for n, fn in (hooks or {}).items()}
        if stop_at_layer is not None:
            if not 0 <= stop_at_layer <= self.n_layers:
                raise HookError(f"stop_at_layer={stop_at_layer} out of range 0..{self.n_layers}")
            for n in cache_names | set(hooks):
                L = self._layer_of(n)
                if L is None:
                    reached = stop_at_layer == self.n_layers
                else:  # blocks before the stop run; the stop block's input is still seen
                    reached = L < stop_at_layer or n == act_name("resid_pre", stop_at_layer)
                if not reached:
                    raise HookError(f"hook {n!r} is not reached with stop_at_layer={stop_at_layer}")
        if (start_at_layer is None) != (resid is None):
            raise HookError("start_at_layer and resid go together (resid is the value of blocks.<start>.resid_pre)")
        if start_at_layer is not None:
            top = self.n_layers - 1 if stop_at_layer is None else min(stop_at_layer, self.n_layers - 1)
            if not 0 <= start_at_layer <= top:
                raise HookError(f"start_at_layer={start_at_layer} out of range 0..{top}"
                                + ("" if stop_at_layer is None else f" (stop_at_layer={stop_at_layer})"))
            for n in sorted(cache_names | set(hooks)):
                L = self._layer_of(n)
                if L is not None and L < start_at_layer:
                    raise HookError(f"hook {n!r} is on layer {L}, not computed with start_at_layer={start_at_layer}")
        input_ids = torch.as_tensor(input_ids)
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        input_ids = input_ids.to(self.device)
        if attention_mask is not None:
            attention_mask = torch.as_tensor(attention_mask)
            if attention_mask.ndim == 1:
                attention_mask = attention_mask[None]
            attention_mask = attention_mask.to(self.device)
        if resid is not None:
            resid = torch.as_tensor(resid)
            if resid.ndim == 2:
                resid = resid[None]
            want = (*input_ids.shape, self.d_model)
            if tuple(resid.shape) != want:
                raise HookError(f"resid has shape {tuple(resid.shape)}, expected {want} (input_ids [b,p] x d_model)")
            resid = resid.to(device=self.device, dtype=self.dtype)
            if grad and not resid.requires_grad:
                resid = resid.detach().requires_grad_(True)

        wanted = cache_names | set(hooks)
        # SAE sites are computed at their SAE's input point (and a transcoder's output point)
        sae_in, sae_out = {}, {}
        for n in list(wanted):
            L, site = parse_hook(n)
            base, suf = split_sae(site)
            if suf is None:
                continue
            sae = self.saes[act_name(base, L)]
            if suf != "sae.latents" and n in hooks:
                raise HookError(f"hook on {n}: only {sae.latents_hook} takes hooks (recons and error are read-only)")
            sae_in[sae.hook] = sae
            if sae.is_transcoder and (suf != "sae.latents" or sae.latents_hook in hooks):
                sae_out[sae.hook_out] = sae
            wanted.discard(n)
        wanted |= set(sae_in) | set(sae_out)
        need_pattern = any(n.endswith("attn.pattern") for n in wanted)
        attn_layers = {id(self.adapter.attn(b)): i for i, b in enumerate(self._blocks)} if need_pattern else {}
        state = _RunState(cache_names, hooks, grad, attn_layers, sae_in, sae_out)

        # group hook points per (module, side: pre | post), in a fixed order (q before k before v etc.)
        groups: dict[tuple[int, str], tuple[nn.Module, list]] = {}
        for name in sorted(wanted, key=self._order_key):
            if name.endswith("attn.pattern"):
                continue
            mod, side, get, put = self._point(name)
            groups.setdefault((id(mod), side), (mod, []))[1].append((name, get, put))

        handles = []
        token = _ACTIVE.set(state)
        restore_attn = self._set_attn_impl(_ATTN_IMPL) if need_pattern else None
        restore_fwd = None
        try:
            if start_at_layer is not None:
                restore_fwd = self._skip_below(start_at_layer)
                # registered before the capture hooks, so a hook or cache on blocks.{start}.resid_pre sees resid
                handles.append(self._blocks[start_at_layer].register_forward_pre_hook(
                    self._inject_fn(resid), with_kwargs=True))
            if grad:
                def _leaf(mod, args, out):
                    return out.detach().requires_grad_(True)

                handles.append(self.adapter.embed().register_forward_hook(_leaf))
            for (_, side), (mod, items) in groups.items():
                handles.append(self._register(mod, side, state, items))
            run_base = (not return_logits) or stop_at_layer is not None
            if stop_at_layer is not None and stop_at_layer < self.n_layers:
                def _stop(*_a, **_k):
                    raise _Stop

                # registered after the capture hooks, so blocks.{stop}.resid_pre is still recorded
                handles.append(self._blocks[stop_at_layer].register_forward_pre_hook(_stop))
            ctx = torch.enable_grad() if grad else torch.no_grad()
            logits = None
            with ctx:
                try:
                    if run_base:
                        self.adapter.base()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                    else:
                        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
                except _Stop:
                    pass
        finally:
            for h in handles:
                h.remove()
            if restore_fwd is not None:
                restore_fwd()
            if restore_attn is not None:
                restore_attn()
            _ACTIVE.reset(token)
        return Run(logits=logits, cache=state.cache)

    __call__ = forward

    @staticmethod
    def _order_key(name: str):
        L = HookedModel._layer_of(name)
        if L is None:
            return (10**9, 0)
        return (L, site_order(parse_hook(name)[1]))

    def _skip_below(self, start: int) -> Callable[[], None]:
        """Make the embedding and blocks 0..start-1 no-ops (on their instances); returns the undo.

        The embedding gives zeros of the right shape, each skipped block returns its input
        hidden_states (the decoder layers of the supported families, and GPT2Block, return a plain
        tensor); block `start` gets its real input from _inject_fn."""
        emb = self.adapter.embed()
        weight = getattr(emb, "weight", None)
        dtype = weight.dtype if weight is not None else self.dtype
        d = self.d_model

        def zeros(*args, **kwargs):
            ids = args[0] if args else next(iter(kwargs.values()))
            return torch.zeros((*ids.shape, d), dtype=dtype, device=ids.device)

        def passthrough(hidden_states, *args, **kwargs):
            return hidden_states

        saved = []
        try:
            for mod, fn in [(emb, zeros)] + [(b, passthrough) for b in self._blocks[:start]]:
                saved.append((mod, mod.__dict__.get("forward")))    # an instance forward (accelerate) or None
                mod.forward = fn
        except BaseException:
            self._restore_forwards(saved)
            raise
        return lambda: self._restore_forwards(saved)

    @staticmethod
    def _restore_forwards(saved) -> None:
        for mod, old in reversed(saved):
            mod.__dict__.pop("forward", None)
            if old is not None:
                mod.forward = old

    @staticmethod
    def _with_input(args, kwargs, x):
        """A forward pre-hook's (args, kwargs) with the hidden states (positional or keyword) set to x."""
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

    @classmethod
    def _inject_fn(cls, x: torch.Tensor):
        return lambda mod, args, kwargs: cls._with_input(args, kwargs, x)

    @classmethod
    def _register(cls, mod: nn.Module, side: str, state: _RunState, items):
        """One hook on mod running a group's points (name, get, put) in order: on the module's input
        hidden states before its forward (side "pre") or on its output (or the output tuple's first
        element) after it ("post"). The hook returns None (nothing replaced) unless a point did."""
        def apply(x):
            changed = False
            for name, get, put in items:
                new = state.point(name, x, get, put)
                if new is not None:
                    x, changed = new, True
            return x if changed else None

        def pre(mod, args, kwargs):
            x = apply(args[0] if args else kwargs["hidden_states"])
            return None if x is None else cls._with_input(args, kwargs, x)

        def post(mod, args, out):
            is_tuple = isinstance(out, tuple)
            x = apply(out[0] if is_tuple else out)
            return None if x is None else ((x, *out[1:]) if is_tuple else x)

        return {"pre": lambda: mod.register_forward_pre_hook(pre, with_kwargs=True),
                "post": lambda: mod.register_forward_hook(post)}[side]()

    def _set_attn_impl(self, impl: str) -> Callable[[], None]:
        configs = {}
        for m in self.model.modules():
            c = getattr(m, "config", None)
            if c is not None and hasattr(c, "_attn_implementation") and id(c) not in configs:
                configs[id(c)] = (c, c._attn_implementation_internal if hasattr(c, "_attn_implementation_internal")
                                  else c._attn_implementation)
        for c, _ in configs.values():
            c._attn_implementation = impl

        def restore():
            for c, old in configs.values():
                if hasattr(c, "_attn_implementation_internal"):
                    c._attn_implementation_internal = old
                else:
                    c._attn_implementation = old

        return restore

    def run_with_cache(self, texts_or_ids, names: Iterable[str] | None = None, **kw) -> tuple[torch.Tensor, dict]:
        """(logits, cache) for a text, a list of texts (right-padded) or a tensor of ids."""
        mask = kw.pop("attention_mask", None)
        if isinstance(texts_or_ids, str) or (isinstance(texts_or_ids, (list, tuple)) and texts_or_ids
                                              and isinstance(texts_or_ids[0], str)):
            ids, mask = self.tokenize(texts_or_ids)
        else:
            ids = texts_or_ids
        names = self.hook_names() if names is None else names
        run = self.forward(ids, mask, cache=names, **kw)
        return run.logits, run.cache

    @torch.no_grad()
    def generate(self, text: str, max_new_tokens: int = 20, **kw) -> str:
        """Greedy continuation (a convenience for checks; the LLM package has its own)."""
        ids, mask = self.tokenize([text])
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id, **kw)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
