import pytest
import torch
import torch.nn.functional as F

from autointerp.errors import HookError, UnitError
from autointerp.models import HookedModel, ablate, patch_value
from autointerp.core.units import Unit

TEXTS = ["the cat sat on the mat and ran to the park", "a big dog ran", "when mary and john went to the store"]


def batch(m):
    return m.tokenize(TEXTS)


def test_shapes_and_info(tiny):
    ids, mask = batch(tiny)
    run = tiny.forward(ids, mask, cache=tiny.hook_names())
    b, p = ids.shape
    H, KV, dh, d, dm = tiny.n_heads, tiny.n_kv_heads, tiny.d_head, tiny.d_model, tiny.d_mlp
    for L in range(tiny.n_layers):
        c = lambda s: tuple(run.cache[f"blocks.{L}.{s}"].shape)  # noqa: E731
        assert c("resid_pre") == c("resid_post") == c("attn.out") == c("mlp.out") == (b, p, d)
        assert c("attn.q") == c("attn.z") == (b, p, H, dh)
        assert c("attn.k") == c("attn.v") == (b, p, KV, dh)
        assert c("attn.pattern") == (b, H, p, p)
        assert c("mlp.post") == (b, p, dm)
    assert tuple(run.cache["ln_final.out"].shape) == (b, p, d)
    assert set(run.cache) == set(tiny.hook_names())
    assert run.logits.shape == (b, p, tiny.vocab_size)
    info = tiny.info()
    assert set(info) == {"family", "n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "vocab_size"}
    if tiny.family == "llama":
        assert (H, KV) == (4, 2)  # grouped-query attention


def test_cache_only_requested(tiny):
    ids, mask = batch(tiny)
    run = tiny.forward(ids, mask, cache=["blocks.1.mlp.post"])
    assert list(run.cache) == ["blocks.1.mlp.post"]


@pytest.mark.parametrize("point", ["resid_pre", "attn.q", "attn.k", "attn.v", "attn.z", "attn.out",
                                   "mlp.post", "mlp.out", "resid_post", "attn.pattern"])
def test_patch_own_value_reproduces_logits(tiny, point):
    ids, mask = batch(tiny)
    name = f"blocks.1.{point}"
    clean = tiny.forward(ids, mask, cache=[name])
    patched = tiny.forward(ids, mask, hooks={name: lambda v: clean.cache[name].clone()})
    assert torch.equal(clean.logits, patched.logits)
    # the SliceHook helper (partial slice) too
    kw = {"heads": [1]} if point.startswith("attn.") and point != "attn.out" else {"positions": [0, 2]}
    patched2 = tiny.forward(ids, mask, hooks={name: patch_value(clean.cache[name], **kw)})
    assert torch.equal(clean.logits, patched2.logits)


def test_patch_ln_final_and_logits_match_plain_model(tiny):
    ids, mask = batch(tiny)
    run = tiny.forward(ids, mask, cache=["ln_final.out"])
    plain = tiny.model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(run.logits, plain, atol=1e-5)
    assert torch.allclose(tiny.unembed(run.cache["ln_final.out"]), run.logits, atol=1e-5)
    patched = tiny.forward(ids, mask, hooks={"ln_final.out": lambda v: run.cache["ln_final.out"]})
    assert torch.equal(patched.logits, run.logits)


def test_pattern_run_matches_sdpa(tiny):
    ids, mask = batch(tiny)
    a = tiny.forward(ids, mask).logits
    b = tiny.forward(ids, mask, cache=["blocks.0.attn.pattern"]).logits
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)
    assert tiny.model.config._attn_implementation != "autointerp_eager"  # restored


def test_mlp_post_matches_manual(tiny):
    ids, mask = batch(tiny)
    L = 1
    run = tiny.forward(ids, mask, cache=[f"blocks.{L}.resid_pre", f"blocks.{L}.attn.out", f"blocks.{L}.mlp.post",
                                         f"blocks.{L}.mlp.out"])
    x = run.cache[f"blocks.{L}.resid_pre"] + run.cache[f"blocks.{L}.attn.out"]
    post = run.cache[f"blocks.{L}.mlp.post"]
    if tiny.family == "gpt2":
        blk = tiny.model.transformer.h[L]
        h = blk.ln_2(x) @ blk.mlp.c_fc.weight + blk.mlp.c_fc.bias
        manual = F.gelu(h, approximate="tanh")
    else:
        blk = tiny.model.model.layers[L]
        n = blk.post_attention_layernorm(x)
        manual = F.silu(n @ blk.mlp.gate_proj.weight.T) * (n @ blk.mlp.up_proj.weight.T)
    assert torch.allclose(post, manual, atol=1e-5)
    # neurons through W_out (+bias) give mlp.out
    b_out = tiny.b_out(L)
    out = post @ tiny.W_out(L) + (b_out if b_out is not None else 0)
    assert torch.allclose(out, run.cache[f"blocks.{L}.mlp.out"], atol=1e-5)


def test_heads_sum_to_attn_out(tiny):
    ids, mask = batch(tiny)
    L = 2
    run = tiny.forward(ids, mask, cache=[f"blocks.{L}.attn.z", f"blocks.{L}.attn.out"])
    per_head = torch.einsum("bphd,hdm->bphm", run.cache[f"blocks.{L}.attn.z"], tiny.W_O(L))
    b_O = tiny.b_O(L)
    total = per_head.sum(2) + (b_O if b_O is not None else 0)
    assert torch.allclose(total, run.cache[f"blocks.{L}.attn.out"], atol=1e-5)


def test_zero_ablate_head(tiny):
    ids, mask = batch(tiny)
    L, h = 1, 2
    names = [n for n in tiny.hook_names() if n != "ln_final.out"]
    clean = tiny.forward(ids, mask, cache=names)
    abl = tiny.forward(ids, mask, cache=names, hooks={f"blocks.{L}.attn.z": ablate("zero", heads=h)})
    z_c, z_a = clean.cache[f"blocks.{L}.attn.z"], abl.cache[f"blocks.{L}.attn.z"]
    assert torch.all(z_a[:, :, h] == 0)
    others = [i for i in range(tiny.n_heads) if i != h]
    assert torch.equal(z_a[:, :, others], z_c[:, :, others])
    diff = clean.cache[f"blocks.{L}.attn.out"] - abl.cache[f"blocks.{L}.attn.out"]
    expected = z_c[:, :, h] @ tiny.W_O(L)[h]
    assert torch.allclose(diff, expected, atol=1e-5)
    for n in names:
        if int(n.split(".")[1]) < L or n in (f"blocks.{L}.resid_pre", f"blocks.{L}.attn.q", f"blocks.{L}.attn.k",
                                             f"blocks.{L}.attn.v", f"blocks.{L}.attn.pattern"):
            assert torch.equal(clean.cache[n], abl.cache[n]), n
    assert not torch.equal(clean.logits, abl.logits)


def test_ablate_modes_neurons_positions(tiny):
    ids, mask = batch(tiny)
    name = "blocks.0.mlp.post"
    ref = tiny.forward(ids, mask, cache=[name]).cache[name]
    run = tiny.forward(ids, mask, cache=[name], hooks={name: ablate("mean", ref, neurons=[3, 5], positions=[1])})
    v = run.cache[name]
    assert torch.allclose(v[:, 1, [3, 5]], ref.mean((0, 1))[[3, 5]].expand(v.shape[0], 2))
    assert torch.equal(v[:, 0], ref[:, 0]) and torch.equal(v[:, 1, :3], ref[:, 1, :3])
    run = tiny.forward(ids, mask, cache=[name], hooks={name: ablate("resample", ref, neurons=slice(0, 4))})
    v = run.cache[name]
    assert all(any(torch.equal(v[i, :, :4], ref[j, :, :4]) for j in range(len(ref))) for i in range(len(v)))
    pat = "blocks.1.attn.pattern"
    run = tiny.forward(ids, mask, cache=[pat], hooks={pat: ablate("zero", heads=[0])})
    assert torch.all(run.cache[pat][:, 0] == 0) and not torch.all(run.cache[pat][:, 1] == 0)


def test_padding_invariance(tiny):
    names = ["blocks.0.attn.q", "blocks.1.attn.pattern", "blocks.2.mlp.post", "blocks.2.resid_post", "ln_final.out"]
    ids, mask = batch(tiny)
    padded = tiny.forward(ids, mask, cache=names)
    for i, text in enumerate(TEXTS):
        one_ids, one_mask = tiny.tokenize([text])
        n = one_ids.shape[1]
        single = tiny.forward(one_ids, one_mask, cache=names)
        for name in names:
            a, b = padded.cache[name][i], single.cache[name][0]
            if name.endswith("pattern"):
                a = a[:, :n, :n]
            else:
                a = a[:n]
            assert torch.allclose(a, b, atol=1e-5), name
        assert torch.allclose(padded.logits[i, :n], single.logits[0], atol=1e-5)


def test_pattern_rows_sum_to_one_and_causal(tiny):
    ids, mask = tiny.tokenize([TEXTS[0]])
    pat = tiny.forward(ids, mask, cache=["blocks.0.attn.pattern"]).cache["blocks.0.attn.pattern"]
    assert torch.allclose(pat.sum(-1), torch.ones(pat.shape[:-1]), atol=1e-5)
    p = pat.shape[-1]
    upper = torch.ones(p, p, dtype=torch.bool).triu(1)
    assert torch.all(pat[..., upper] == 0)


def test_stop_at_layer_and_no_logits(tiny):
    ids, mask = batch(tiny)
    names = ["blocks.0.resid_pre", "blocks.0.attn.z", "blocks.1.mlp.post", "blocks.1.resid_post"]
    full = tiny.forward(ids, mask, cache=names + ["ln_final.out"])
    early = tiny.forward(ids, mask, cache=names, stop_at_layer=2)
    base = tiny.forward(ids, mask, cache=names + ["ln_final.out"], return_logits=False)
    assert early.logits is None and base.logits is None
    for n in names:
        assert torch.equal(full.cache[n], early.cache[n]) and torch.equal(full.cache[n], base.cache[n])
    assert torch.equal(full.cache["ln_final.out"], base.cache["ln_final.out"])
    with pytest.raises(HookError):
        tiny.forward(ids, mask, cache=["blocks.2.mlp.post"], stop_at_layer=2)


def test_grad_mode(tiny):
    ids, mask = batch(tiny)
    names = ["blocks.0.attn.z", "blocks.1.mlp.post", "blocks.2.resid_pre"]
    run = tiny.forward(ids, mask, cache=names, grad=True)
    run.logits[:, -1, 3].sum().backward()
    for n in names:
        assert run.cache[n].grad is not None and run.cache[n].grad.shape == run.cache[n].shape
        assert run.cache[n].grad.abs().sum() > 0
    plain = tiny.forward(ids, mask)
    assert torch.allclose(run.logits, plain.logits, atol=1e-6)
    assert not any(p.requires_grad for p in tiny.model.parameters())


def test_errors(tiny):
    with pytest.raises(UnitError):
        tiny.check_unit("L9/N0")
    with pytest.raises(UnitError):
        tiny.check_unit(Unit.neuron(0, tiny.d_mlp))
    with pytest.raises(UnitError):
        tiny.check_unit("L0/H4")
    assert tiny.check_unit("L2/H3") == Unit.head(2, 3)
    with pytest.raises(HookError, match="blocks.<L>"):
        tiny.check_hook("blocks.0.hook_bogus")
    assert tiny.check_hook("blocks.0.hook_resid_pre") == "blocks.0.resid_pre"      # TransformerLens' spelling
    with pytest.raises(HookError, match="out of range"):
        tiny.check_hook("blocks.3.mlp.post")
    ids, mask = batch(tiny)
    with pytest.raises(HookError):
        tiny.forward(ids, mask, cache=["nope"])
    with pytest.raises(HookError, match="shape"):
        tiny.forward(ids, mask, hooks={"blocks.0.mlp.post": lambda v: torch.zeros(2, 2, 2)})


def test_tokens_and_weights(tiny):
    ids, mask = tiny.tokenize(["the cat", "the cat sat"])
    assert ids.shape == (2, 3) and mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert ids[0, 2] == tiny.tokenizer.pad_token_id
    bos_ids, _ = tiny.tokenize(["the cat"], prepend_bos=True)
    assert bos_ids[0, 0] == tiny.tokenizer.bos_token_id and bos_ids.shape[1] == 3
    assert tiny.to_str_tokens(ids[1]) == ["the", "cat", "sat"]
    assert tiny.token_id("cat") is not None and tiny.token_id("the cat") is None
    assert tiny.W_U.shape == (tiny.d_model, tiny.vocab_size)
    assert tiny.W_out(0).shape == (tiny.d_mlp, tiny.d_model)
    assert tiny.W_O(0).shape == (tiny.n_heads, tiny.d_head, tiny.d_model)
    assert tiny.ln_final_scale.shape == (tiny.d_model,)
    logits, cache = tiny.run_with_cache(["the cat sat"], ["blocks.0.mlp.out"])
    assert logits.shape[-1] == tiny.vocab_size and list(cache) == ["blocks.0.mlp.out"]


def test_stop_at_last_layer_reaches_ln_final(tiny):
    ids, mask = batch(tiny)
    full = tiny.forward(ids, mask, cache=["ln_final.out"])
    run = tiny.forward(ids, mask, cache=["ln_final.out"], stop_at_layer=tiny.n_layers)
    assert run.logits is None and torch.equal(run.cache["ln_final.out"], full.cache["ln_final.out"])
    # blocks 0..L-1 run; the input of block L (= output of block L-1) is still available
    names = ["blocks.0.resid_pre", "blocks.1.resid_pre"]
    full = tiny.forward(ids, mask, cache=names)
    for L in (0, 1):
        early = tiny.forward(ids, mask, cache=[f"blocks.{L}.resid_pre"], stop_at_layer=L)
        assert torch.equal(early.cache[f"blocks.{L}.resid_pre"], full.cache[f"blocks.{L}.resid_pre"])


def _later(m, L):
    """Every layer hook of layers L.. and ln_final.out."""
    return [n for n in m.hook_names() if not n.startswith("blocks.") or int(n.split(".")[1]) >= L]


def test_start_at_layer_matches_the_full_run_and_skips_the_blocks_before(tiny):
    ids, mask = batch(tiny)
    full = tiny.forward(ids, mask, cache=tiny.hook_names())
    calls = []
    handles = [tiny.adapter.mlp(b).register_forward_hook(lambda mod, a, o, i=i: calls.append(i))
               for i, b in enumerate(tiny._blocks)]
    handles.append(tiny.adapter.embed().register_forward_hook(lambda mod, a, o: calls.append(("embed", o.abs().sum()))))
    try:
        for L in range(tiny.n_layers):
            calls.clear()
            names = _later(tiny, L)
            run = tiny.forward(ids, mask, cache=names, start_at_layer=L, resid=full.cache[f"blocks.{L}.resid_pre"])
            assert calls == [("embed", 0.0)] + list(range(L, tiny.n_layers))   # blocks < L never ran
            assert set(run.cache) == set(names)
            for n in names:
                assert torch.allclose(run.cache[n], full.cache[n], atol=1e-5), (L, n)
            assert torch.allclose(run.logits, full.logits, atol=1e-5)
            # with a stop too, and hooks on the start layer: patching resid_pre there sees resid
            stop = tiny.forward(ids, mask, cache=[f"blocks.{L}.resid_post", f"blocks.{L}.resid_pre"], stop_at_layer=L + 1,
                                start_at_layer=L, resid=full.cache[f"blocks.{L}.resid_pre"],
                                hooks={f"blocks.{L}.attn.z": ablate("zero", heads=1)})
            ref = tiny.forward(ids, mask, cache=[f"blocks.{L}.resid_post"], hooks={f"blocks.{L}.attn.z": ablate("zero", heads=1)})
            assert stop.logits is None
            assert torch.equal(stop.cache[f"blocks.{L}.resid_pre"], full.cache[f"blocks.{L}.resid_pre"])
            assert torch.allclose(stop.cache[f"blocks.{L}.resid_post"], ref.cache[f"blocks.{L}.resid_post"], atol=1e-5)
    finally:
        for h in handles:
            h.remove()
    # the real forwards are back: a plain run is the full run again
    assert not any("forward" in vars(m) for m in [tiny.adapter.embed(), *tiny._blocks])
    assert torch.allclose(tiny.forward(ids, mask).logits, full.logits, atol=1e-5)   # (full ran eager attention)


def test_start_at_layer_resid_is_what_block_reads(tiny):
    """An arbitrary resid (not the model's own) gives what a full run patched to it gives."""
    ids, mask = batch(tiny)
    x = torch.randn(*ids.shape, tiny.d_model, generator=torch.Generator().manual_seed(3))
    ref = tiny.forward(ids, mask, cache=["blocks.2.mlp.post"], hooks={"blocks.1.resid_pre": lambda v: x})
    run = tiny.forward(ids, mask, cache=["blocks.2.mlp.post"], start_at_layer=1, resid=x)
    assert torch.allclose(run.cache["blocks.2.mlp.post"], ref.cache["blocks.2.mlp.post"], atol=1e-5)
    assert torch.allclose(run.logits, ref.logits, atol=1e-5)


def test_start_at_layer_grad(tiny):
    ids, mask = batch(tiny)
    names = ["blocks.1.resid_pre", "blocks.2.attn.z"]
    full = tiny.forward(ids, mask, cache=names, grad=True)
    full.logits[:, -1, 3].sum().backward()
    run = tiny.forward(ids, mask, cache=names, grad=True, start_at_layer=1, resid=full.cache["blocks.1.resid_pre"].detach())
    run.logits[:, -1, 3].sum().backward()
    for n in names:
        assert run.cache[n].grad is not None
        assert torch.allclose(run.cache[n].grad, full.cache[n].grad, atol=1e-5), n


def test_start_at_layer_errors(tiny):
    ids, mask = batch(tiny)
    x = tiny.forward(ids, mask, cache=["blocks.1.resid_pre"]).cache["blocks.1.resid_pre"]
    with pytest.raises(HookError, match="blocks.0.mlp.post.*not computed with start_at_layer=1"):
        tiny.forward(ids, mask, hooks={"blocks.0.mlp.post": lambda v: v}, start_at_layer=1, resid=x)
    with pytest.raises(HookError, match="blocks.0.resid_post.*not computed"):
        tiny.forward(ids, mask, cache=["blocks.0.resid_post"], start_at_layer=1, resid=x)
    with pytest.raises(HookError, match="go together"):
        tiny.forward(ids, mask, start_at_layer=1)
    with pytest.raises(HookError, match="go together"):
        tiny.forward(ids, mask, resid=x)
    with pytest.raises(HookError, match="out of range"):
        tiny.forward(ids, mask, start_at_layer=tiny.n_layers, resid=x)
    with pytest.raises(HookError, match="out of range"):
        tiny.forward(ids, mask, start_at_layer=-1, resid=x)
    with pytest.raises(HookError, match=r"out of range 0\.\.1 \(stop_at_layer=1\)"):
        tiny.forward(ids, mask, start_at_layer=2, stop_at_layer=1, resid=x)
    with pytest.raises(HookError, match="resid has shape"):
        tiny.forward(ids, mask, start_at_layer=1, resid=x[:, :-1])

    def boom(v):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tiny.forward(ids, mask, hooks={"blocks.2.mlp.post": boom}, start_at_layer=1, resid=x)
    assert not any("forward" in vars(m) for m in [tiny.adapter.embed(), *tiny._blocks])
    assert tiny.forward(ids, mask, cache=["blocks.1.resid_pre"]).cache["blocks.1.resid_pre"].equal(x)
