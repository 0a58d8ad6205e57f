"""SAEs in the SAELens format: save/load round trip, encode/decode against hand-written maths for
each architecture, bad input as one clear error, attachment to a HookedModel (latents, recons,
error; the splice that edits one latent)."""

from __future__ import annotations

import json

import pytest
import torch

from autointerp.errors import HookError, UsageError
from autointerp.models.sae import SAE, SAEError, hook_from_saelens, load_sae
from tinykit import rand_sae as _rand_sae


def _reference(sae: SAE, x: torch.Tensor):
    """SAELens' maths written out by hand (no shared code with SAE.encode)."""
    xin = x
    if sae.normalize_activations == "constant_norm_rescale":
        c = (sae.d_in ** 0.5) / x.norm(dim=-1, keepdim=True)
        xin = x * c
    tc = sae.is_transcoder
    pre = (xin - (0 if tc or not sae.apply_b_dec_to_input else sae.b_dec)) @ sae.W_enc + sae.b_enc
    if sae.architecture in ("jumprelu", "jumprelu_transcoder"):
        z = torch.where(pre > sae.threshold, torch.clamp(pre, min=0), torch.zeros_like(pre))
    elif sae.architecture == "topk":
        z = torch.zeros_like(pre)
        for idx in torch.cartesian_prod(*[torch.arange(n) for n in pre.shape[:-1]]).tolist():
            row = pre[tuple(idx)]
            order = sorted(range(row.numel()), key=lambda i: -float(row[i]))[: sae.k]
            for i in order:
                z[tuple(idx) + (i,)] = max(float(row[i]), 0.0)
    else:
        z = torch.clamp(pre, min=0)
    y = z @ sae.W_dec + sae.b_dec
    if sae.W_skip is not None:
        y = y + x @ sae.W_skip.T
    if sae.normalize_activations == "constant_norm_rescale" and not tc:
        y = y / c
    return z, y


ARCHS = [("standard", {}), ("jumprelu", {}), ("topk", {"k": 7}), ("standard", {"normalize_activations": "constant_norm_rescale"}),
         ("transcoder", {"hook": "blocks.1.mlp.in", "hook_out": "blocks.1.hook_mlp_out"}),
         ("jumprelu_transcoder", {"hook": "blocks.1.mlp.in", "hook_out": "blocks.1.mlp.out"}),
         ("skip_transcoder", {"hook": "blocks.1.mlp.in", "hook_out": "blocks.1.mlp.out"})]


@pytest.mark.parametrize("arch,kw", ARCHS, ids=[a + ("-norm" if "normalize_activations" in k else "") for a, k in ARCHS])
def test_saelens_format_round_trip_and_reference_maths(tmp_path, arch, kw):
    sae = _rand_sae(arch, **kw)
    d = sae.save(tmp_path / arch)
    cfg = json.loads((d / "cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["d_in"] == 64 and cfg["d_sae"] == 128
    back = load_sae(d)
    assert back.architecture == arch and back.d_sae == 128 and len(back.id) == 24 and back.name == arch
    assert back.hook == sae.hook and back.hook_out == sae.hook_out
    x = torch.randn(2, 5, 64) * 3
    z, y = back(x)
    rz, ry = _reference(back, x)
    assert torch.allclose(z, rz, atol=1e-5) and torch.allclose(y, ry, atol=1e-4)
    assert (z > 0).any() and (z == 0).any()
    if arch == "topk":
        assert int((z != 0).sum(-1).max()) <= 7
    assert load_sae(d).id == back.id                                # the id is a content hash
    t = (d / "cfg.json").read_text().replace('"d_sae": 128', '"d_sae": 128, "note": 1')
    (d / "cfg.json").write_text(t)
    assert load_sae(d).id != back.id


def test_saelens_v5_style_config_with_top_level_hook_name(tmp_path):
    sae = _rand_sae("jumprelu")
    d = sae.save(tmp_path / "s")
    cfg = json.loads((d / "cfg.json").read_text())
    cfg.pop("metadata")
    cfg["hook_name"] = "blocks.2.hook_resid_pre"
    (d / "cfg.json").write_text(json.dumps(cfg))
    assert load_sae(d).hook == "blocks.2.resid_pre"
    assert hook_from_saelens("blocks.3.attn.hook_z") == "blocks.3.attn.z"


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: (d / "sae_weights.safetensors").unlink(), "has no sae_weights.safetensors"),
    (lambda d: (d / "cfg.json").write_text("{nope"), "not valid JSON"),
    (lambda d: (d / "cfg.json").write_text((d / "cfg.json").read_text().replace('"jumprelu"', '"gated"')),
     "unknown SAE architecture 'gated'"),
    (lambda d: (d / "cfg.json").write_text((d / "cfg.json").read_text().replace('"d_sae": 128', '"d_sae": 100')),
     "config says d_in=64, d_sae=100"),
    (lambda d: (d / "sae_weights.safetensors").write_bytes(b"garbage"), "not a readable safetensors"),
    (lambda d: (d / "cfg.json").write_text((d / "cfg.json").read_text().replace("blocks.1.resid_post", "blocks.1.hook_bogus")),
     "not a hook point autointerp knows"),
    # TransformerLens names of tensors autointerp has not: refused, naming what to use instead
    (lambda d: (d / "cfg.json").write_text((d / "cfg.json").read_text().replace("blocks.1.resid_post", "blocks.1.hook_resid_mid")),
     r"TransformerLens' blocks.1.hook_resid_mid .* use blocks.1.resid_pre and blocks.1.attn.out"),
    (lambda d: (d / "cfg.json").write_text((d / "cfg.json").read_text().replace("blocks.1.resid_post", "blocks.1.hook_mlp_in")),
     r"TransformerLens' blocks.1.hook_mlp_in is the residual before ln2 .*: use blocks.1.mlp.in"),
    (lambda d: (d / "cfg.json").write_text((d / "cfg.json").read_text().replace("blocks.1.resid_post", "blocks.1.ln1.hook_normalized")),
     r"blocks.1.ln1.hook_normalized is attention's input before the norm's weight; .*: use blocks.1.resid_pre"),
])
def test_bad_sae_dirs_fail_with_one_line(tmp_path, mutate, msg):
    d = _rand_sae("jumprelu").save(tmp_path / "s")
    mutate(d)
    with pytest.raises(SAEError, match=msg) as e:
        load_sae(d)
    assert isinstance(e.value, UsageError) and "\n" not in str(e.value)
    with pytest.raises(SAEError, match="no SAE directory"):
        load_sae(tmp_path / "missing")


def test_attached_sae_latents_recons_error_and_one_latent_splice(tiny_llama):
    hm = tiny_llama
    sae = _rand_sae("standard", d_in=hm.d_model)
    with pytest.raises(HookError, match="no SAE is attached"):
        hm.forward(torch.tensor([[2, 3, 4]]), cache=[sae.latents_hook])
    hm.attach_sae(sae)
    try:
        ids = torch.tensor([[2, 3, 4, 5, 6, 7]])
        run = hm.forward(ids, cache=["blocks.1.resid_post", sae.latents_hook, sae.recons_hook, sae.error_hook])
        x = run["blocks.1.resid_post"]
        z, y = _reference(sae, x)
        assert torch.allclose(run[sae.latents_hook], z, atol=1e-5)
        assert torch.allclose(run[sae.recons_hook], y, atol=1e-4)
        assert torch.allclose(run[sae.recons_hook] + run[sae.error_hook], x, atol=1e-5)
        base = hm.forward(ids)
        assert torch.allclose(run.logits, base.logits)                 # reading latents changes nothing
        i = int(z[0, 3].argmax())

        def kill(v):
            v = v.clone()
            v[..., i] = 0
            return v

        edited = hm.forward(ids, hooks={sae.latents_hook: kill}, cache=["blocks.1.resid_post", "blocks.2.resid_pre"])
        delta = x - edited["blocks.1.resid_post"]
        want = z[..., i:i + 1] * sae.W_dec[i]                           # only latent i's contribution left
        assert torch.allclose(delta, want, atol=1e-4) and want.abs().max() > 0
        assert not torch.allclose(edited.logits, base.logits)
        with pytest.raises(HookError, match="only .* takes hooks"):
            hm.forward(ids, hooks={sae.recons_hook: kill})
    finally:
        hm.detach_sae(sae)


def test_transcoder_attaches_at_mlp_in_and_splices_mlp_out(tiny_gpt2):
    hm = tiny_gpt2
    tc = _rand_sae("transcoder", d_in=hm.d_model, hook="blocks.0.mlp.in", hook_out="blocks.0.mlp.out")
    hm.attach_sae(tc)
    try:
        ids = torch.tensor([[2, 3, 4, 5, 6]])
        run = hm.forward(ids, cache=["blocks.0.mlp.in", "blocks.0.mlp.out", tc.latents_hook, tc.error_hook, tc.recons_hook])
        z, y = _reference(tc, run["blocks.0.mlp.in"])
        assert torch.allclose(run[tc.latents_hook], z, atol=1e-5)
        assert torch.allclose(run[tc.recons_hook] + run[tc.error_hook], run["blocks.0.mlp.out"], atol=1e-5)
        i = int(z[0, 2].argmax())
        edited = hm.forward(ids, hooks={tc.latents_hook: lambda v: v.index_fill(-1, torch.tensor([i]), 0.0)},
                            cache=["blocks.0.mlp.out"])
        assert torch.allclose(run["blocks.0.mlp.out"] - edited["blocks.0.mlp.out"], z[..., i:i + 1] * tc.W_dec[i], atol=1e-4)
    finally:
        hm.detach_sae(tc)


def test_sae_that_does_not_fit_the_hook_is_refused(tiny_llama):
    with pytest.raises(SAEError, match="reads d_in=32 values but blocks.1.resid_post"):
        tiny_llama.attach_sae(_rand_sae("standard", d_in=32))
    with pytest.raises(SAEError, match="layer 7 out of range"):
        tiny_llama.attach_sae(_rand_sae("standard", d_in=64, hook="blocks.7.hook_resid_post"))
    assert tiny_llama.saes == {}
