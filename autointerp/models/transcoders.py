"""A transcoder set: one MLP transcoder per layer (some layers may have none), as written by
`autointerp sae train --kind transcoder`:

    DIR/transcoder_set.json      {"name", "model", "layers": [...], "report": {...}}
    DIR/layer_<L>/cfg.json       each layer's transcoder in the SAELens format (models/sae.py)
    DIR/layer_<L>/sae_weights.safetensors

The latents of layer L are the units L<L>/F<i>@<name>: every transcoder in a set carries the set's
name, and the layer tells them apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .sae import SAE, SAEError, safe_name

SET_FILE = "transcoder_set.json"


def model_fingerprint(hm) -> str:
    """A short hash of the model's shape and first embedding rows: tells models apart whatever spec
    (alias, path) loaded them."""
    w = hm.adapter.embed().weight.detach()
    h = hashlib.sha256(f"{hm.n_layers}:{tuple(w.shape)}".encode())
    h.update(w.reshape(-1)[:4096].float().cpu().numpy().round(5).tobytes())
    return h.hexdigest()[:16]


def layer_dir(root: Path, layer: int) -> Path:
    return Path(root) / f"layer_{int(layer)}"


@dataclass
class TranscoderSet:
    name: str
    model: str | None
    by_layer: dict[int, SAE]
    path: str | None = None
    report: dict = field(default_factory=dict)
    fingerprint: str | None = None

    @property
    def layers(self) -> list[int]:
        return sorted(self.by_layer)

    @property
    def id(self) -> str:
        """Content id of the set: the hash of its transcoders' ids."""
        h = hashlib.sha256("|".join(f"{L}:{self.by_layer[L].id}" for L in self.layers).encode())
        return h.hexdigest()[:24]

    def check_model(self, hm) -> "TranscoderSet":
        """Refuse a set trained for another model (by the model's fingerprint, and by the widths)."""
        if self.fingerprint and self.fingerprint != model_fingerprint(hm):
            raise SAEError(f"transcoder set {self.name} was trained on another model ({self.model}), not {hm.spec}")
        for L, tc in self.by_layer.items():
            if L >= hm.n_layers:
                raise SAEError(f"transcoder set {self.name} has layer {L}; {hm.spec} has {hm.n_layers} layers "
                               "(a set for another model)")
            if tc.d_in != hm.d_model or tc.d_out != hm.d_model:
                raise SAEError(f"transcoder set {self.name} reads d_in={tc.d_in}, writes {tc.d_out}; {hm.spec} has "
                               f"d_model={hm.d_model} (a set for another model: {self.model})")
            hm.fold_sae_input(tc)              # a set read at TL's ln2.hook_normalized: the norm folded in
        return self

    def save(self, root: str | Path) -> Path:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        for L, tc in self.by_layer.items():
            tc.save(layer_dir(root, L), model_name=self.model)
        (root / SET_FILE).write_text(json.dumps({"name": self.name, "model": self.model, "layers": self.layers,
                                                 "fingerprint": self.fingerprint, "report": self.report}, indent=1))
        return root


def load_transcoder_set(root: str | Path, name: str | None = None) -> TranscoderSet:
    """The set in folder `root` (one line SAEError if there is none)."""
    root = Path(root).expanduser()
    f = root / SET_FILE
    if not f.is_file():
        raise SAEError(f"--transcoders {root}: no transcoder set there (expected {SET_FILE} and layer_<L>/ folders, "
                       "as `autointerp sae train --kind transcoder` writes)")
    try:
        meta = json.loads(f.read_text())
        layers = [int(L) for L in meta["layers"]]
    except (ValueError, KeyError, TypeError) as e:
        raise SAEError(f"{f} is not a valid transcoder set file ({e})") from None
    nm = name or meta.get("name") or safe_name(root.resolve().name)
    by_layer = {}
    for L in layers:
        tc = SAE.load(layer_dir(root, L), name=nm)
        if not tc.is_transcoder or tc.layer != L:
            raise SAEError(f"{layer_dir(root, L)} holds a {tc.architecture} of layer {tc.layer}, not a transcoder "
                           f"of layer {L}")
        by_layer[L] = tc
    return TranscoderSet(name=nm, model=meta.get("model"), by_layer=by_layer, path=str(root.resolve()),
                         report=meta.get("report") or {}, fingerprint=meta.get("fingerprint"))
