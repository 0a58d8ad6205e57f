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

    >>> act_name("attn.z", 3)
    'blocks.3.attn.z'
    >>> parse_hook("blocks.6.resid_post.sae.latents")
    (6, 'resid_post.sae.latents')
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
               + "} or " + " / ".join(FINAL_SITES))


class HookNameError(HookError, ValueError):
    """A malformed hook name or an unknown site (a ValueError, and a one-line UsageError for the CLI)."""


def split_sae(site: str) -> tuple[str, str | None]:
    """('resid_post', 'sae.latents') for 'resid_post.sae.latents'; (site, None) for a plain site."""
    for suf in SAE_SUFFIXES:
        if site.endswith("." + suf):
            return site[: -len(suf) - 1], suf
    return site, None


def _check_site(site: str, full: str) -> str:
    base, _ = split_sae(site)
    if base not in LAYER_SITES:
        raise HookNameError(f"unknown hook {full!r}: use {VALID_FORMS}")
    return site


def act_name(name: str, layer: int | None = None) -> str:
    """The canonical hook name for a site (and layer): act_name('mlp.post', 5) == 'blocks.5.mlp.post'.

    A final site takes no layer (act_name('ln_final.out')); a full name with layer=None is
    validated and returned as is.
    """
    if not isinstance(name, str):
        raise HookNameError(f"hook site must be a string, got {type(name).__name__}")
    if name in FINAL_SITES:
        if layer is not None:
            raise HookNameError(f"{name!r} is a final site and takes no layer (got layer={layer})")
        return name
    if name.startswith("blocks."):
        L, site = parse_hook(name)
        if layer is not None and layer != L:
            raise HookNameError(f"{name!r} names layer {L}, not layer {layer}")
        return name
    _check_site(name, name)
    if layer is None:
        raise HookNameError(f"hook site {name!r} needs a layer (e.g. act_name({name!r}, 0))")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise HookNameError(f"layer must be an int >= 0, got {layer!r}")
    return f"blocks.{layer}.{name}"


def parse_hook(name: str) -> tuple[int | None, str]:
    """(layer, site) of a hook name: (3, 'attn.z') for 'blocks.3.attn.z', (None, 'ln_final.out')."""
    if not isinstance(name, str):
        raise HookNameError(f"hook name must be a string, got {type(name).__name__}")
    if name in FINAL_SITES:
        return None, name
    parts = name.split(".", 2)
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or (len(parts[1]) > 1 and parts[1][0] == "0"):
        raise HookNameError(f"unknown hook {name!r}: use {VALID_FORMS}")
    return int(parts[1]), _check_site(parts[2], name)


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
    return f"{base}.{suffix}"


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
