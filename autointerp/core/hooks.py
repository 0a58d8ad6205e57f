"""Activation names: the one authority (like TransformerLens' ``utils.get_act_name``).

Every package speaks these names; only models/ knows which module of which architecture carries
them. A name is ``blocks.<L>.<site>`` for a per-layer site or a bare final site:

    blocks.L.resid_pre     input of block L            blocks.L.resid_post   output of block L
    blocks.L.attn.q/k/v    projection outputs (heads)  blocks.L.attn.z       per-head output
    blocks.L.attn.pattern  attention pattern           blocks.L.attn.out     attention's residual write
    blocks.L.mlp.in        MLP input (normalised)      blocks.L.mlp.post     MLP neurons
    blocks.L.mlp.out       MLP's residual write        ln_final.out          input of the unembedding

SAE sites extend a layer site with a suffix: ``blocks.6.resid_post.sae.latents`` (the latents of
an SAE attached at blocks.6.resid_post), ``.sae.recons`` (its reconstruction) and ``.sae.error``
(the hook's value minus the reconstruction). A transcoder is named by its input site
(``blocks.6.mlp.in.sae.latents``); its recons and error are of its output site (mlp.out). The
names are reserved here; models/ decides whether an SAE is attached.

TransformerLens' spellings are accepted wherever a hook name is taken, as aliases of the SAME
tensor (TL_ALIASES: ``blocks.3.attn.hook_z`` is ``blocks.3.attn.z``, ``blocks.3.hook_resid_pre`` is
``blocks.3.resid_pre``...): parse_hook, act_name and canonical return autointerp's name. A TL name
whose tensor differs from every autointerp hook (TL_REFUSED: ``hook_mlp_in`` is the residual before
ln2, ``ln2.hook_normalized`` and ``ln_final.hook_normalized`` are before the norm's weight...) is
refused with one line saying what to use instead. Each mapping was measured side by side with
TransformerLens (scripts/compare_tl_hooks.py; the README's hook-name table).

    >>> act_name("attn.z", 3)
    'blocks.3.attn.z'
    >>> parse_hook("blocks.6.resid_post.sae.latents")
    (6, 'resid_post.sae.latents')
    >>> canonical("blocks.3.attn.hook_z")
    'blocks.3.attn.z'
"""

from __future__ import annotations

from typing import Iterable

from ..errors import HookError

# per-layer sites in forward order (the order hooks on one layer run in)
LAYER_SITES = ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn.out",
               "mlp.in", "mlp.post", "mlp.out", "resid_post")
FINAL_SITES = ("ln_final.out",)
# sites whose value has a heads axis ([b, p, heads, d_head])
HEAD_SITES = ("attn.q", "attn.k", "attn.v", "attn.z")
# an SAE attached at a layer site adds these sites under it: <site>.<suffix>
SAE_SUFFIXES = ("sae.latents", "sae.recons", "sae.error")

VALID_FORMS = ("blocks.<L>.{" + ",".join(LAYER_SITES) + "}, blocks.<L>.<site>.{" + ",".join(SAE_SUFFIXES)
               + "} or " + " / ".join(FINAL_SITES) + " (or TransformerLens' spelling, e.g. blocks.<L>.attn.hook_z)")

# TransformerLens' per-layer hook names (blocks.L.<name>) that are the same tensor as an autointerp
# site (max |diff| 0 side by side, fold_ln etc. off: scripts/compare_tl_hooks.py).
TL_ALIASES = {
    "hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post",
    "attn.hook_q": "attn.q", "attn.hook_k": "attn.k", "attn.hook_v": "attn.v",     # before rotary, kv heads ungrouped
    "attn.hook_pattern": "attn.pattern", "attn.hook_z": "attn.z", "hook_attn_out": "attn.out",
    "mlp.hook_post": "mlp.post", "hook_mlp_out": "mlp.out",
}
# TransformerLens names with no same tensor here -> what to use instead ({L}: the layer). One line each.
TL_REFUSED = {
    "hook_mlp_in": "is the residual before ln2 (resid_pre + attn.out); autointerp's blocks.{L}.mlp.in is the MLP "
                   "input after the norm (weight included): use blocks.{L}.mlp.in, or blocks.{L}.resid_pre and "
                   "blocks.{L}.attn.out",
    "hook_resid_mid": "(the residual between attention and MLP) has no autointerp hook: use blocks.{L}.resid_pre "
                      "and blocks.{L}.attn.out (their sum), or blocks.{L}.mlp.in for the normed MLP input",
    "ln2.hook_normalized": "is the MLP input before the norm's weight (and bias); autointerp's blocks.{L}.mlp.in is "
                           "after them: use blocks.{L}.mlp.in (an SAE or transcoder trained on TL's tensor is read "
                           "there with the norm folded in)",
    "ln2.hook_scale": "(the norm's scale) has no autointerp hook: use blocks.{L}.mlp.in (the normed MLP input)",
    "ln1.hook_normalized": "is attention's input before the norm's weight; autointerp has no such hook: use "
                           "blocks.{L}.resid_pre (before ln1)",
    "ln1.hook_scale": "(the norm's scale) has no autointerp hook: use blocks.{L}.resid_pre (before ln1)",
    "attn.hook_rot_q": "is the query after rotary; autointerp's blocks.{L}.attn.q is before it: use blocks.{L}.attn.q",
    "attn.hook_rot_k": "is the key after rotary; autointerp's blocks.{L}.attn.k is before it: use blocks.{L}.attn.k",
    "attn.hook_attn_scores": "holds the scores before the softmax: use blocks.{L}.attn.pattern (after it)",
    "attn.hook_result": "(each head's output times W_O) has no autointerp hook: use blocks.{L}.attn.z (each head's "
                        "output before W_O) or blocks.{L}.attn.out (their sum)",
    "hook_attn_in": "(the residual copied per head) has no autointerp hook: use blocks.{L}.resid_pre",
    "hook_q_input": "(the residual copied per head) has no autointerp hook: use blocks.{L}.resid_pre",
    "hook_k_input": "(the residual copied per head) has no autointerp hook: use blocks.{L}.resid_pre",
    "hook_v_input": "(the residual copied per head) has no autointerp hook: use blocks.{L}.resid_pre",
    "mlp.hook_pre": "(the MLP's pre-activation) has no autointerp hook: use blocks.{L}.mlp.post (the neurons, after "
                    "the activation and gate)",
    "mlp.hook_pre_linear": "(the gated MLP's linear branch) has no autointerp hook: use blocks.{L}.mlp.post (the "
                           "neurons, after the activation and gate)",
}
# SAELens' HookedSAETransformer names an attached SAE's sites under its hook point
# (blocks.L.hook_resid_post.hook_sae_acts_post): the same tensors as these SAE sites ({P}: the point)
TL_SAE_ALIASES = {"hook_sae_acts_post": "sae.latents", "hook_sae_error": "sae.error"}
TL_SAE_REFUSED = {
    "hook_sae_input": "is the SAE's input, the hook point's value (flattened over heads for attn.z): use {P}",
    "hook_sae_acts_pre": "(the latents before the activation) has no autointerp hook: use {P}.sae.latents (after it)",
    "hook_sae_recons": "is the reconstruction before de-normalisation: use {P}.sae.recons (de-normalised; the same "
                       "where normalize_activations is none)",
    "hook_sae_output": "is the reconstruction plus the error (the hook's value) with use_error_term, the "
                       "reconstruction without: use {P}.sae.recons or {P}",
}
# TransformerLens' names outside the blocks
TL_FINAL_ALIASES: dict[str, str] = {}
TL_FINAL_REFUSED = {
    "ln_final.hook_normalized": "is before the final norm's weight (and bias); autointerp's ln_final.out is after "
                                "them (the unembedding's input): use ln_final.out",
    "ln_final.hook_scale": "(the final norm's scale) has no autointerp hook: use ln_final.out",
    "hook_embed": "has no autointerp hook: use blocks.0.resid_pre (the embedding, plus the position embedding "
                  "where the model has one)",
    "hook_pos_embed": "has no autointerp hook: use blocks.0.resid_pre (the embedding plus the position embedding)",
}


class HookNameError(HookError, ValueError):
    """A malformed hook name or an unknown site (a ValueError, and a one-line UsageError for the CLI)."""


def split_sae(site: str) -> tuple[str, str | None]:
    """('resid_post', 'sae.latents') for 'resid_post.sae.latents'; (site, None) for a plain site."""
    for suf in SAE_SUFFIXES:
        if site.endswith("." + suf):
            return site[: -len(suf) - 1], suf
    return site, None


class TLNameRefused(HookNameError):
    """A TransformerLens hook name whose tensor is not any autointerp hook's (the line says what to use)."""


def _refused(name: str, why: str, layer: int | str = "<L>", point: str = "") -> TLNameRefused:
    return TLNameRefused(f"TransformerLens' {name} {why.format(L=layer, P=point)}")


def _check_site(site: str, full: str, layer: int | str = "<L>") -> str:
    """autointerp's site for a site (or its TL alias), with an SAE suffix kept; refuses TL's other tensors."""
    for tl, ours in TL_SAE_ALIASES.items():           # SAELens' SAE sites under a (TL-spelt) point
        if site.endswith("." + tl):
            site = f"{site[: -len(tl) - 1]}.{ours}"
            break
    for tl, why in TL_SAE_REFUSED.items():
        if site.endswith("." + tl):
            point = _check_site(site[: -len(tl) - 1], full, layer)
            raise _refused(full, why, layer, f"blocks.{layer}.{point}")
    base, suf = split_sae(site)
    if base in TL_ALIASES:
        base = TL_ALIASES[base]
    elif base in TL_REFUSED:
        raise _refused(full, TL_REFUSED[base], layer)
    if base not in LAYER_SITES:
        raise HookNameError(f"unknown hook {full!r}: use {VALID_FORMS}")
    return base if suf is None else f"{base}.{suf}"


def _final(name: str) -> str | None:
    """autointerp's final site for a final name (or its TL alias); None when name is not one."""
    if name in FINAL_SITES:
        return name
    if name in TL_FINAL_ALIASES:
        return TL_FINAL_ALIASES[name]
    if name in TL_FINAL_REFUSED:
        raise _refused(name, TL_FINAL_REFUSED[name])
    return None


def canonical(name: str) -> str:
    """autointerp's spelling of a hook name (TL's accepted): canonical('blocks.3.hook_resid_pre') == 'blocks.3.resid_pre'.

    Raises HookNameError (one line) for an unknown name, or for a TL name whose tensor differs
    from every autointerp hook (the line says what to use instead).
    """
    L, site = parse_hook(name)
    return site if L is None else f"blocks.{L}.{site}"


def act_name(name: str, layer: int | None = None) -> str:
    """The canonical hook name for a site (and layer): act_name('mlp.post', 5) == 'blocks.5.mlp.post'.

    A final site takes no layer (act_name('ln_final.out')); a full name with layer=None is
    validated and returned as is.
    """
    if not isinstance(name, str):
        raise HookNameError(f"hook site must be a string, got {type(name).__name__}")
    final = _final(name)
    if final is not None:
        if layer is not None:
            raise HookNameError(f"{name!r} is a final site and takes no layer (got layer={layer})")
        return final
    if name.startswith("blocks."):
        L, site = parse_hook(name)
        if layer is not None and layer != L:
            raise HookNameError(f"{name!r} names layer {L}, not layer {layer}")
        return f"blocks.{L}.{site}"
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise HookNameError(f"layer must be an int >= 0, got {layer!r}")
    site = _check_site(name, name, "<L>" if layer is None else layer)
    if layer is None:
        raise HookNameError(f"hook site {name!r} needs a layer (e.g. act_name({name!r}, 0))")
    return f"blocks.{layer}.{site}"


def parse_hook(name: str) -> tuple[int | None, str]:
    """(layer, site) of a hook name: (3, 'attn.z') for 'blocks.3.attn.z', (None, 'ln_final.out').

    TL's spelling gives autointerp's site: (3, 'attn.z') for 'blocks.3.attn.hook_z'."""
    if not isinstance(name, str):
        raise HookNameError(f"hook name must be a string, got {type(name).__name__}")
    final = _final(name)
    if final is not None:
        return None, final
    parts = name.split(".", 2)
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or (len(parts[1]) > 1 and parts[1][0] == "0"):
        raise HookNameError(f"unknown hook {name!r}: use {VALID_FORMS}")
    return int(parts[1]), _check_site(parts[2], name, int(parts[1]))


def is_hook(name: str) -> bool:
    try:
        parse_hook(name)
    except HookNameError:
        return False
    return True


def is_head_site(name: str) -> bool:
    """Whether a hook name's value has a heads axis (attn.q/k/v/z)."""
    return parse_hook(name)[1] in HEAD_SITES


def sae_hook(base: str, suffix: str = "sae.latents") -> str:
    """The SAE site under a hook point: sae_hook('blocks.6.resid_post') == 'blocks.6.resid_post.sae.latents'."""
    L, site = parse_hook(base)
    if L is None or split_sae(site)[1] is not None:
        raise HookNameError(f"an SAE attaches to a layer site (blocks.<L>.<site>), not {base!r}")
    if suffix not in SAE_SUFFIXES:
        raise HookNameError(f"unknown SAE site {suffix!r}: use {', '.join(SAE_SUFFIXES)}")
    return f"blocks.{L}.{site}.{suffix}"


def site_order(site: str) -> int:
    """Position of a (plain or SAE) layer site in forward order; an SAE site runs right after its base."""
    base, _ = split_sae(site)
    return LAYER_SITES.index(base)


def hook_names(n_layers: int, layers: Iterable[int] | None = None, sites: Iterable[str] = LAYER_SITES,
               final: bool | None = None) -> list[str]:
    """Every name for these layers (all of 0..n_layers-1 by default) and sites, in forward order;
    the final sites are included when all layers are (or when final=True)."""
    ls = range(n_layers) if layers is None else list(layers)
    sites = list(sites)
    names = [act_name(s, L) for L in ls for s in sites]
    if final if final is not None else layers is None:
        names += list(FINAL_SITES)
    return names
