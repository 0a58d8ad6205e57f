"""SAEs named on a command line, bound for the pipeline: a folder, a saelens: id or a name the
store registered (resolve_sae), and a latent's unit id with its SAE (bind_unit). Loading is
models/sae.py; the registry store/saes.py."""

from __future__ import annotations

from pathlib import Path


def resolve_sae(spec: str, store=None, name: str | None = None):
    """The SAE named by a folder, a saelens: id, or a name/id registered in the store; its name is
    the store's for it (so unit ids stay the same across runs)."""
    from ..models.sae import SAEError, load_sae

    p = Path(spec).expanduser()
    if p.is_dir() or str(spec).startswith("saelens:") or "/" in str(spec) or store is None:
        sae = load_sae(p if p.is_dir() else spec, name=name)
    else:
        row = store.get_sae(spec)
        if row is None:
            raise SAEError(f"--sae {spec}: no SAE folder there and no SAE of that name in {store.path}")
        if not row["path"] or not Path(row["path"]).is_dir():
            raise SAEError(f"--sae {spec}: the store's SAE {row['name']} was loaded from {row['path']}, which is gone")
        sae = load_sae(row["path"], name=row["name"])
        if sae.id != row["id"]:
            raise SAEError(f"--sae {spec}: the files at {row['path']} changed since the store registered them "
                           f"({sae.id[:12]} != {row['id'][:12]}); give the folder with --sae-name NEW")
    if store is not None:
        sae.name = store.sae_name_for(sae.id, sae.name)
    return sae


def bind_unit(unit: str, saes: list):
    """A unit id with its SAE: L6/F12 + --sae -> L6/F12@name, checked against the SAE's size and layer."""
    from ..core.units import Unit
    from ..errors import UnitError

    u = Unit.parse(unit)
    if not u.record.needs_sae:
        if saes:
            raise UnitError(f"--unit {u}: --sae applies to SAE latents (L<layer>/F<latent>), not a {u.kind}")
        return u
    cands = [s for s in saes if (not u.sae or s.name == u.sae)]
    if not cands:
        raise UnitError(f"--unit {u}: give the SAE with --sae PATH_OR_NAME" if not u.sae else
                        f"--unit {u}: none of the given SAEs is named {u.sae!r}")
    if len(cands) > 1:
        at = [s for s in cands if s.layer == u.layer]
        if len(at) != 1:
            raise UnitError(f"--unit {u}: several SAEs given; name one (L{u.layer}/F{u.index}@NAME)")
        cands = at
    sae = cands[0]
    if sae.layer != u.layer:
        raise UnitError(f"--unit {u}: SAE {sae.name} reads layer {sae.layer} ({sae.hook}), not layer {u.layer}")
    if not 0 <= u.index < sae.d_sae:
        raise UnitError(f"--unit {u}: latent {u.index} out of range (SAE {sae.name} has latents 0..{sae.d_sae - 1})")
    return Unit.latent(u.layer, u.index, sae.name)


def bind_saes(unit, sae_specs=(), store=None, sae_name: str | None = None):
    """(the unit, the SAEs named for it): an SAE latent is bound to its SAE, given by `sae_specs`
    (--sae) or by its own @name in the store; any other unit comes back as it is, with no SAEs
    (and `sae_specs` given for it is an error)."""
    from ..core.units import Unit

    u = unit if isinstance(unit, Unit) else Unit.parse(unit)
    if not sae_specs and not u.record.needs_sae:
        return u, []
    specs = sae_specs or ((u.sae,) if u.sae else ())
    saes = [resolve_sae(x, store, sae_name) for x in specs]
    return bind_unit(str(u), saes), saes
