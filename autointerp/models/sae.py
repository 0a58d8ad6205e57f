"""Sparse autoencoders and transcoders in the SAELens on-disk format, loaded without sae-lens.

A directory holds ``cfg.json`` and ``sae_weights.safetensors``:

    W_enc [d_in, d_sae]   b_enc [d_sae]   W_dec [d_sae, d_out]   b_dec [d_out]
    threshold [d_sae]     (JumpReLU only)     W_skip [d_out, d_in]  (skip transcoders only)

(d_out = d_in for an SAE.) The architectures are classes registered by name in models/sae_arch.py;
the facts of the format follow SAELens' own classes (sae_lens/saes/):

    standard     latents = relu((x' - b_dec*a) @ W_enc + b_enc)             a = apply_b_dec_to_input
    jumprelu     pre = (x' - b_dec*a) @ W_enc + b_enc;  latents = relu(pre) * (pre > threshold)
    topk         pre as above; keep the k largest of each row, relu them, zero the rest
    transcoder   (and jumprelu_transcoder, skip_transcoder) read the hook `hook_name` (the MLP
                 input) and predict `hook_name_out` (the MLP output); b_dec is never subtracted
                 from the input and the output is not de-normalised
    recons       latents @ W_dec + b_dec  (+ x @ W_skip.T for a skip transcoder), de-normalised

x' is x normalised by `normalize_activations`: none | expected_average_only_in (a constant folded
into the weights by SAELens when it is known; nothing at run time) | constant_norm_rescale
(x * sqrt(d_in) / |x|, undone on the output) | layer_norm (centre and divide by the std, undone
on the output).

Hook names may be TransformerLens names as SAELens writes them (blocks.6.hook_resid_post,
blocks.6.hook_mlp_out, blocks.6.attn.hook_z...: core/hooks.py's alias table) or autointerp's own
(blocks.6.resid_post); either way the SAE is attached at an autointerp hook point. TL's
blocks.6.hook_mlp_in (the residual before ln2) is another tensor than autointerp's
blocks.6.mlp.in, so an SAE or transcoder trained on it is refused with a line saying so.

TL's blocks.6.ln2.hook_normalized (the MLP input before the norm's weight and bias: x, where
mlp.in = x * w + b; the input of the Dunefsky et al. GPT-2 transcoders) is read exactly at
blocks.6.mlp.in by folding the norm into the SAE when it is attached to a model
(HookedModel.attach_sae / TranscoderSet.check_model -> SAE.fold_input_norm): W_enc's rows are
divided by w and the shift b moves into the biases; an SAE's decoder (it reconstructs x) is
multiplied by w and b added, so its recons is in mlp.in's units; a skip transcoder's W_skip is
divided by w likewise. The SAE keeps its id; a folded SAE belongs to that model (attaching it to
another is refused) and is not saved (save the original folder).

An SAE's identity is a content hash of its config and weights (SAE.id); its name (for unit ids
L6/F12@name) is the directory's name unless the config names it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.hooks import HookNameError, TLNameRefused, act_name, parse_hook, sae_hook
from ..core.units import SAE_NAME_RE
from ..errors import HookError, ModelSpecError, UsageError
from .sae_arch import ARCHITECTURES, CFG_FILE, WEIGHTS_FILE, Architecture

NORMALISATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


# TL's normalised MLP input (before the norm's weight and bias): read at mlp.in with the norm folded in
_NORMED_INPUT = re.compile(r"^blocks\.(\d+)\.ln2\.hook_normalized$")


class SAEError(UsageError):
    """A bad SAE directory or config, or an SAE that does not fit the model (one line, exit 2)."""


def hook_from_saelens(name: str) -> str:
    """The autointerp hook point of a SAELens/TransformerLens hook name (or of an autointerp name)."""
    if not isinstance(name, str) or not name:
        raise SAEError(f"the SAE config names no hook point (hook_name is {name!r})")
    try:
        L, site = parse_hook(name)       # TL's spellings are aliases there; TL's other tensors are refused
    except TLNameRefused as e:
        raise SAEError(f"SAE hook: {e}") from None
    except HookNameError:
        raise SAEError(f"SAE hook {name!r} is not a hook point autointerp knows (use e.g. blocks.6.hook_resid_post, "
                       f"blocks.6.hook_mlp_out, blocks.6.mlp.in or blocks.6.resid_post)") from None
    if L is None:
        raise SAEError(f"SAE hook {name!r}: an SAE attaches to a layer's hook point, not {name}")
    return act_name(site, L)


def _meta(cfg: dict, key: str):
    if cfg.get(key) is not None:
        return cfg[key]
    for sub in ("metadata", "meta"):
        if isinstance(cfg.get(sub), dict) and cfg[sub].get(key) is not None:
            return cfg[sub][key]
    return None


def safe_name(text: str) -> str:
    """A unit-id-safe SAE name from any text (a directory name): letters, digits, _ . - only."""
    s = re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(text)).strip("-_.")[:64].strip("-_.")
    return s or "sae"


@dataclass
class SAE:
    """An SAE or transcoder's weights and config; encode / decode on the last axis (float32)."""

    architecture: str
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    hook: str                                  # autointerp hook point read (the input)
    hook_out: str | None = None                # transcoders: the hook point predicted
    threshold: torch.Tensor | None = None
    W_skip: torch.Tensor | None = None
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    name: str = "sae"
    cfg: dict = field(default_factory=dict)    # the config as read (stored with the SAE)
    id: str = ""                               # content hash of config and weights
    path: str | None = None
    input_norm: str | None = None              # "ln2": reads mlp.in before its norm's affine (TL's ln2.hook_normalized),
    #                                            folded into the weights when attached (fold_input_norm)
    folded_for: str | None = None              # the model whose norm was folded in

    # ---- construction -------------------------------------------------------------
    def __post_init__(self):
        a = self.architecture
        if a not in ARCHITECTURES:
            raise SAEError(f"unknown SAE architecture {a!r}: use {', '.join(ARCHITECTURES)}")
        arch = ARCHITECTURES[a]
        if self.normalize_activations not in NORMALISATIONS:
            raise SAEError(f"unknown normalize_activations {self.normalize_activations!r}: use {', '.join(NORMALISATIONS)}")
        if not SAE_NAME_RE.match(self.name):
            raise SAEError(f"bad SAE name {self.name!r}: letters, digits, _ . - (it becomes part of unit ids L6/F12@name)")
        d_in, d_sae = self.W_enc.shape if self.W_enc.ndim == 2 else (None, None)
        shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, self.W_dec.shape[-1]),
                  "b_dec": (self.W_dec.shape[-1],)}
        for nm, want in arch.extra_shapes(d_in, d_sae, self.W_dec.shape[-1]).items():
            if getattr(self, nm) is None:
                raise SAEError(f"a {a} {'' if arch.transcoder else 'SAE '}needs a `{nm}` tensor in {WEIGHTS_FILE}")
            shapes[nm] = want
        for nm, want in shapes.items():
            t = getattr(self, nm)
            if d_in is None or tuple(t.shape) != want or self.W_dec.ndim != 2:
                raise SAEError(f"SAE tensor {nm} has shape {tuple(t.shape)}, expected {want} "
                               f"(W_enc is {tuple(self.W_enc.shape)})")
        problem = arch.check(self, d_sae)
        if problem:
            raise SAEError(problem)
        if self.is_transcoder:
            if self.hook_out is None:
                raise SAEError(f"a {a} needs an output hook (hook_name_out in {CFG_FILE})")
        elif self.W_dec.shape[-1] != d_in:
            raise SAEError(f"an SAE's decoder must write d_in={d_in} values, W_dec is {tuple(self.W_dec.shape)}"
                           " (a transcoder's architecture says so)")
        for nm in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
            t = getattr(self, nm)
            if t is not None:
                t = t.detach().float().contiguous()
                if not torch.isfinite(t).all():
                    raise SAEError(f"SAE tensor {nm} holds NaN or infinite values")
                setattr(self, nm, t)
        m = _NORMED_INPUT.match(self.hook) if isinstance(self.hook, str) else None
        if m and self.folded_for is None:
            if self.normalize_activations not in ("none", "expected_average_only_in"):
                raise SAEError(f"SAE {self.name} reads {self.hook} with normalize_activations="
                               f"{self.normalize_activations}: folding the norm's weight into it is not exact; only "
                               "none / expected_average_only_in are supported there")
            self.input_norm, self.hook = "ln2", act_name("mlp.in", int(m.group(1)))
        self.hook = hook_from_saelens(self.hook)
        if self.hook_out is not None:
            self.hook_out = hook_from_saelens(self.hook_out)
            if parse_hook(self.hook_out)[0] != parse_hook(self.hook)[0]:
                raise SAEError(f"transcoder reads {self.hook} and writes {self.hook_out}: both must be of one layer")

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> "SAE":
        """An SAE from a SAELens-format directory (cfg.json + sae_weights.safetensors)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        p = Path(path)
        if not p.is_dir():
            raise SAEError(f"no SAE directory at {p} (expected a folder with {CFG_FILE} and {WEIGHTS_FILE})")
        cfg_p, w_p = p / CFG_FILE, p / WEIGHTS_FILE
        for f in (cfg_p, w_p):
            if not f.is_file():
                raise SAEError(f"SAE directory {p} has no {f.name}")
        try:
            cfg = json.loads(cfg_p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise SAEError(f"{cfg_p} is not valid JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise SAEError(f"{cfg_p} must hold a JSON object")
        try:
            w = load_file(str(w_p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise SAEError(f"{w_p} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e})") from None
        missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in w]
        if missing:
            raise SAEError(f"{w_p} lacks {', '.join(missing)} (has {', '.join(sorted(w)) or 'nothing'})")
        h = hashlib.sha256()
        h.update(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode())
        with open(w_p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        sae = cls.from_config(cfg, w, name=name or cfg.get("autointerp_name") or safe_name(p.resolve().name))
        sae.id, sae.path = h.hexdigest()[:24], str(p.resolve())
        return sae

    @classmethod
    def from_config(cls, cfg: dict, w: dict[str, torch.Tensor], name: str = "sae") -> "SAE":
        arch = cfg.get("architecture", "standard")
        for key in ("d_in", "d_sae"):
            if not isinstance(cfg.get(key), int):
                raise SAEError(f"SAE config lacks an integer {key!r}")
        if _meta(cfg, "hook_head_index") is not None:
            raise SAEError("SAEs on one attention head (hook_head_index) are not supported")
        if cfg.get("reshape_activations", "none") not in ("none", "hook_z"):
            raise SAEError(f"unknown reshape_activations {cfg['reshape_activations']!r}")
        k = cfg.get("k")
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        sae = cls(architecture=arch, W_enc=w["W_enc"], b_enc=w["b_enc"], W_dec=w["W_dec"], b_dec=w["b_dec"],
                  threshold=w.get("threshold"), W_skip=w.get("W_skip"), k=k, hook=_meta(cfg, "hook_name"),
                  hook_out=_meta(cfg, "hook_name_out") if getattr(ARCHITECTURES.get(arch), "transcoder", False) else None,
                  apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                  normalize_activations=cfg.get("normalize_activations") or "none", name=name, cfg=dict(cfg))
        if sae.d_in != cfg["d_in"] or sae.d_sae != cfg["d_sae"]:
            raise SAEError(f"SAE config says d_in={cfg['d_in']}, d_sae={cfg['d_sae']}; the weights are "
                           f"d_in={sae.d_in}, d_sae={sae.d_sae}")
        if sae.is_transcoder and isinstance(cfg.get("d_out"), int) and cfg["d_out"] != sae.d_out:
            raise SAEError(f"transcoder config says d_out={cfg['d_out']}; W_dec writes {sae.d_out}")
        return sae

    def save(self, path: str | Path, model_name: str | None = None) -> Path:
        """Write the SAELens format (cfg.json + sae_weights.safetensors); returns the directory."""
        from safetensors.torch import save_file

        if self.folded_for is not None:
            raise SAEError(f"SAE {self.name} has {self.folded_for}'s ln2 norm folded into its weights: save the "
                           f"original folder ({self.path or 'its source'}), not this copy")
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        w = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            w["threshold"] = self.threshold
        if self.W_skip is not None:
            w["W_skip"] = self.W_skip
        save_file({k: v.detach().float().contiguous().cpu() for k, v in w.items()}, str(p / WEIGHTS_FILE))
        cfg = {**self.cfg, "architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae,
               "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": self.apply_b_dec_to_input,
               "normalize_activations": self.normalize_activations, "reshape_activations":
                   "hook_z" if self.hook.endswith("attn.z") else "none",
               "metadata": {**(self.cfg.get("metadata") or {}), "hook_name": self.hook,
                            **({"model_name": model_name} if model_name else {})}}
        cfg["hook_name"] = cfg["metadata"]["hook_name"] = self.read_hook
        if self.k is not None:
            cfg["k"] = self.k
        if self.is_transcoder:
            cfg.update(d_out=self.d_out, hook_name_out=self.hook_out, hook_layer_out=self.layer)
        (p / CFG_FILE).write_text(json.dumps(cfg, indent=1))
        return p

    # ---- facts -------------------------------------------------------------------
    @property
    def read_hook(self) -> str:
        """The hook the SAE was trained on: `hook`, or TL's ln2.hook_normalized for one read there."""
        return f"blocks.{self.layer}.ln2.hook_normalized" if self.input_norm == "ln2" else self.hook

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    @property
    def is_transcoder(self) -> bool:
        return self.arch.transcoder

    @property
    def arch(self) -> Architecture:
        """The registered architecture (models/sae_arch.py)."""
        return ARCHITECTURES[self.architecture]

    @property
    def layer(self) -> int:
        return int(parse_hook(self.hook)[0])

    @property
    def latents_hook(self) -> str:
        return sae_hook(self.hook, "sae.latents")

    @property
    def recons_hook(self) -> str:
        return sae_hook(self.hook, "sae.recons")

    @property
    def error_hook(self) -> str:
        return sae_hook(self.hook, "sae.error")

    @property
    def output_hook(self) -> str:
        """The hook point the reconstruction stands for (an SAE's own; a transcoder's output)."""
        return self.hook_out or self.hook

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "architecture": self.architecture, "hook": self.hook,
                "hook_out": self.hook_out, "d_in": self.d_in, "d_sae": self.d_sae, "d_out": self.d_out, "k": self.k,
                "normalize_activations": self.normalize_activations, "path": self.path,
                **({"reads": "ln2.hook_normalized (norm folded in)"} if self.input_norm or self.folded_for else {})}

    def __repr__(self) -> str:
        return (f"SAE({self.name!r}, {self.architecture}, {self.hook}" + (f" -> {self.hook_out}" if self.hook_out else "")
                + f", d_in={self.d_in}, d_sae={self.d_sae}, id={self.id[:12]})")

    def to(self, device) -> "SAE":
        for nm in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
            t = getattr(self, nm)
            if t is not None:
                setattr(self, nm, t.to(device))
        return self

    # ---- maths -------------------------------------------------------------------
    def _norm_in(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        n = self.normalize_activations
        if n == "constant_norm_rescale":
            coeff = math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True)
            return x * coeff, ("scale", coeff)
        if n == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            xc = x - mu
            std = xc.std(dim=-1, keepdim=True)
            return xc / (std + 1e-5), ("ln", mu, std)
        return x, None

    @staticmethod
    def _norm_out(y: torch.Tensor, ctx: tuple | None) -> torch.Tensor:
        if ctx is None:
            return y
        if ctx[0] == "scale":
            return y / ctx[1]
        return y * ctx[2] + ctx[1]

    def pre_acts(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """(encoder pre-activations [..., d_sae], normalisation context) of inputs [..., d_in]."""
        if x.shape[-1] != self.d_in:
            raise HookError(f"SAE {self.name} reads d_in={self.d_in} values; {self.hook} gives {x.shape[-1]}")
        x = x.float()
        xn, ctx = self._norm_in(x)
        if self.apply_b_dec_to_input and not self.is_transcoder:
            xn = xn - self.b_dec
        lead = xn.shape[:-1]
        pre = torch.addmm(self.b_enc, xn.reshape(-1, xn.shape[-1]), self.W_enc)   # bias fused into the matmul
        return pre.reshape(*lead, pre.shape[-1]), ctx

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Latents of pre-activations. Outside autograd `pre` is consumed (overwritten in place:
        one [tokens, d_sae] buffer fewer per batch); pass a clone to keep it."""
        return self.arch.activate(self, pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents [..., d_sae] of inputs [..., d_in] (float32)."""
        pre, _ = self.pre_acts(x)
        return self.activate(pre)

    def decode(self, latents: torch.Tensor, x: torch.Tensor | None = None, ctx: tuple | None = None) -> torch.Tensor:
        """Reconstruction [..., d_out] of latents. `x` (the input) is needed to undo a run-time
        normalisation and for a skip transcoder's skip path."""
        y = latents.float() @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise HookError("a skip transcoder's decode needs its input x")
            y = y + x.float() @ self.W_skip.T
        if self.is_transcoder:
            return y
        if ctx is None and x is not None and self.normalize_activations in ("constant_norm_rescale", "layer_norm"):
            _, ctx = self._norm_in(x.float())
        return self._norm_out(y, ctx)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents, reconstruction) of inputs [..., d_in]."""
        pre, ctx = self.pre_acts(x)
        z = self.activate(pre)
        return z, self.decode(z, x, ctx)

    __call__ = forward

    def fold_input_norm(self, scale: torch.Tensor | None, shift: torch.Tensor | None, model: str) -> "SAE":
        """Read mlp.in = x * scale + shift exactly as the SAE read x (TL's ln2.hook_normalized):
        in place, once, for `model` (module doc). A second call for the same model does nothing."""
        if self.folded_for is not None:
            if self.folded_for != model:
                raise SAEError(f"SAE {self.name} has {self.folded_for}'s ln2 norm folded in; load it again for {model}")
            return self
        if self.input_norm is None:
            return self
        dev = self.W_enc.device
        w = torch.ones(self.d_in, device=dev) if scale is None else scale.detach().float().to(dev).reshape(-1)
        b = torch.zeros(self.d_in, device=dev) if shift is None else shift.detach().float().to(dev).reshape(-1)
        if w.numel() != self.d_in or b.numel() != self.d_in:
            raise SAEError(f"SAE {self.name} reads d_in={self.d_in} values; {model}'s ln2 norm has {w.numel()}")
        if bool((w == 0).any()):
            raise SAEError(f"SAE {self.name} reads ln2.hook_normalized, but {model}'s ln2 weight has zeros: the norm "
                           "cannot be folded into it")
        inv = 1.0 / w
        if self.is_transcoder:                 # pre = x @ W_enc + b_enc;  out += x @ W_skip.T;  x = (m - b) / w
            self.b_enc = self.b_enc - (b * inv) @ self.W_enc
            if self.W_skip is not None:
                self.b_dec = self.b_dec - self.W_skip @ (b * inv)
                self.W_skip = (self.W_skip * inv[None, :]).contiguous()
        else:                                  # pre = (x - a*b_dec) @ W_enc + b_enc;  recons in m: (z @ W_dec + b_dec) * w + b
            if not self.apply_b_dec_to_input:
                self.b_enc = self.b_enc - (b * inv) @ self.W_enc
            self.W_dec = (self.W_dec * w[None, :]).contiguous()
            self.b_dec = self.b_dec * w + b    # with a=1: (m - b_dec') / w = x - b_dec
        self.W_enc = (self.W_enc * inv[:, None]).contiguous()
        self.input_norm, self.folded_for = None, model
        return self

    def check_fits(self, d_in: int, what: str | None = None) -> "SAE":
        """Raise SAEError unless the hook point gives d_in values per position."""
        if d_in != self.d_in:
            raise SAEError(f"SAE {self.name} reads d_in={self.d_in} values but {what or self.hook} has {d_in}")
        return self


def load_sae(spec: str | Path, name: str | None = None) -> SAE:
    """An SAE from a directory, or `saelens:RELEASE/SAE_ID` fetched with sae-lens (the optional
    extra autointerp[sae]) and saved in a local cache folder first."""
    s = str(spec)
    if s.startswith("saelens:"):
        return _from_saelens(s[len("saelens:"):], name)
    return SAE.load(s, name=name)


def _from_saelens(text: str, name: str | None) -> SAE:
    if ":" in text:
        release, sae_id = text.split(":", 1)
    elif "/" in text:
        release, sae_id = text.split("/", 1)
    else:
        raise SAEError(f"saelens:{text}: use saelens:RELEASE:SAE_ID (e.g. saelens:gemma-scope-2b-pt-res-canonical:"
                       "layer_12/width_16k/canonical)")
    try:
        from sae_lens import SAE as LensSAE  # optional: pip install 'autointerp[sae]'
    except ImportError:
        raise ModelSpecError("fetching a pretrained SAE needs sae-lens: pip install 'autointerp[sae]' "
                             "(or give --sae a local SAELens directory)") from None
    from ..config import cache_dir

    out = Path(cache_dir()) / "saes" / safe_name(f"{release}--{sae_id}")
    if not (out / CFG_FILE).is_file():
        got = LensSAE.from_pretrained(release, sae_id, device="cpu")
        sae_obj = got[0] if isinstance(got, tuple) else got
        sae_obj.save_model(str(out))
    return SAE.load(out, name=name or safe_name(f"{release}-{sae_id}"))
