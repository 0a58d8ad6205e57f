"""SAELens interop both ways (issue #27), run with a Python that has sae-lens AND autointerp:

    .peers/saelens/bin/python scripts/interop_saelens.py from-saelens OUTDIR
        builds a standard, a TopK and a JumpReLU SAE with sae-lens (random weights, a non-zero
        b_dec and thresholds), saves each with sae-lens' own save_model, loads the folder here
        (autointerp.models.sae.load_sae) and encodes the same inputs with both.
    .peers/saelens/bin/python scripts/interop_saelens.py into-saelens SAE_DIR
        loads an SAE saved here (SAE.save: e.g. `autointerp sae train`) with sae-lens'
        SAE.load_from_disk and encodes the same inputs with both.

Prints one JSON object: per SAE, the max |difference| of the latents and of the reconstructions,
the fraction of latents active in each, and the sae-lens version. Exit code 1 if a latent differs
by more than TOL (float32 round-off). Keep sae-lens out of the project's venv: it pins
transformer-lens and more; a separate venv that sees the project's torch is enough (README)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

TOL = 1e-4


def _compare(lens, ours, x: torch.Tensor) -> dict:
    with torch.no_grad():
        a = lens.encode(x).float()
        b = ours.encode(x).float()
        ra = lens.decode(a).float()
        rb = ours.decode(b, x).float()
    return {"latent_max_abs_diff": float((a - b).abs().max()), "recons_max_abs_diff": float((ra - rb).abs().max()),
            "active_frac_saelens": float((a != 0).float().mean()), "active_frac_autointerp": float((b != 0).float().mean()),
            "d_in": int(x.shape[-1]), "d_sae": int(a.shape[-1])}


def from_saelens(out: Path) -> dict:
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    from autointerp.models.sae import load_sae

    torch.manual_seed(0)
    d_in, d_sae = 32, 96
    x = torch.randn(64, d_in) * 2
    res = {}
    for name, cls, cfg in (
            ("standard", StandardSAE, StandardSAEConfig(d_in=d_in, d_sae=d_sae)),
            ("topk", TopKSAE, TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8)),
            ("jumprelu", JumpReLUSAE, JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))):
        cfg.metadata.hook_name = "blocks.1.hook_resid_post"          # TransformerLens' spelling, as sae-lens writes it
        sae = cls(cfg)
        with torch.no_grad():
            for p in sae.parameters():
                p.copy_(torch.randn_like(p) * 0.3)
            if name == "jumprelu":
                sae.threshold.copy_(torch.rand_like(sae.threshold) * 0.5)
        d = out / name
        sae.save_model(d)
        ours = load_sae(d, name=name)
        res[name] = {**_compare(sae, ours, x), "hook_here": ours.hook, "architecture_here": ours.architecture}
    return res


def into_saelens(path: Path) -> dict:
    from sae_lens import SAE as LensSAE

    from autointerp.models.sae import load_sae

    ours = load_sae(path)
    lens = LensSAE.load_from_disk(str(path), device="cpu")
    torch.manual_seed(1)
    x = torch.randn(64, ours.d_in) * 2
    return {path.name: {**_compare(lens, ours, x), "class_in_saelens": type(lens).__name__}}


def main(argv: list[str]) -> int:
    import sae_lens

    if len(argv) != 2 or argv[0] not in ("from-saelens", "into-saelens"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, arg = argv
    if mode == "from-saelens":
        res = from_saelens(Path(arg) if arg != "-" else Path(tempfile.mkdtemp(prefix="saelens-")))
    else:
        res = into_saelens(Path(arg))
    print(json.dumps({"sae_lens": sae_lens.__version__, "torch": torch.__version__, "saes": res}, indent=1))
    return 0 if all(r["latent_max_abs_diff"] <= TOL for r in res.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
