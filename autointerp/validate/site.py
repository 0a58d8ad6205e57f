"""Where validation reads and intervenes on a unit, and the unit's direct logit effect.

    neuron L3/N42         blocks.3.mlp.post[..., 42]; effect W_out[42] * ln_final scale @ W_U
    latent L6/F12@name    blocks.6.<site>.sae.latents[..., 12] of the SAE of that name attached to
                          the hooked model; effect W_dec[12] (through W_out for an SAE on
                          mlp.post) * ln_final scale @ W_U (mine.sae.output_directions)

An intervention on a latent is a hook on its latents point: HookedModel splices the SAE in there
(the reconstruction from the edited latents plus the error term x - reconstruction(latents)), so
editing latent i changes the model's activation by exactly (z_i' - z_i) * W_dec[i] and nothing
else, and an unedited run is the model's own.
"""

from __future__ import annotations

import torch

from ..errors import UsageError


def unit_sae(hm, unit):
    """The attached SAE of an SAE-latent unit (None for a neuron or head)."""
    if not unit.record.needs_sae:
        return None
    sae = hm.sae_named(unit.sae, unit.layer) if unit.sae else None
    if sae is None:
        raise UsageError(f"{unit}: attach its SAE to the model first (validate_explanation(..., sae=SAE) or --sae PATH)")
    return sae


def unit_site(hm, unit) -> tuple[str, int]:
    """(hook point, index on its last axis) of a neuron or an SAE latent."""
    if not unit.record.intervene:
        raise UsageError(f"{unit}: causal validation covers MLP neurons and SAE latents, not heads")
    sae = unit_sae(hm, unit)
    return (sae.latents_hook if sae is not None else unit.hook), unit.index


@torch.no_grad()
def unit_logit_effect(hm, unit) -> torch.Tensor:
    """[vocab] direct logit effect of one unit of activation of a neuron or latent."""
    sae = unit_sae(hm, unit)
    if sae is None:
        from ..mine.logits import neuron_logit_effects

        return neuron_logit_effects(hm, unit.layer, torch.tensor([unit.index], device=hm.device))[0]
    from ..mine.sae import output_directions

    W = output_directions(hm, sae)
    if W is None:
        raise UsageError(f"{unit}: SAE {sae.name} writes {sae.output_hook}, which is not a residual-stream write; "
                         "its latents' logit effect (and so the intervention's direction) is not defined")
    w = W[unit.index].float().to(hm.device) * hm.ln_final_scale.float()
    return w @ hm.W_U.float()
