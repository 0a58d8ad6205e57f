"""Unit ids: the short strings used in the CLI, the store, JSON and the viewer.

    L5/N131          MLP neuron 131 of layer 5   (a column of blocks.5.mlp.post)
    L9/H9            attention head 9 of layer 9 (a head of blocks.9.attn.z)
    L6/F1234@res6k   latent 1234 of the SAE (or transcoder) registered as 'res6k', which reads
                     layer 6 (a column of blocks.6.<site>.sae.latents)
    L6/F1234         the same latent before it is bound to an SAE (the CLI binds it with --sae)

``Unit`` is the only formatter and parser of these ids: build one with Unit.neuron / Unit.head /
Unit.feature / Unit(layer, kind, index) and write ``.id`` (or str()); read one with Unit.parse.
UNIT_RE matches a whole id (anchored); UNIT_IN_TEXT_RE finds ids inside text (links, prose).
The SAE name keeps its case (it is a name in the store's `saes` table); the rest of an id is
read case-insensitively and written upper case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from ..errors import UnitError
from .hooks import act_name, parse_hook

SAE_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,62}[A-Za-z0-9])?"
SAE_NAME_RE = re.compile(rf"^{SAE_NAME}$")
UNIT_RE = re.compile(rf"^L([0-9]+)/([NHF])([0-9]+)(?:@({SAE_NAME}))?$")
UNIT_IN_TEXT_RE = re.compile(rf"\bL([0-9]+)/([NHF])([0-9]+)(?:@({SAE_NAME}))?(?![\w@])")
_PARSE_RE = re.compile(rf"^[Ll]([0-9]+)/([NHFnhf])([0-9]+)(?:@({SAE_NAME}))?$")
KIND_LETTER = {"neuron": "N", "head": "H", "feature": "F"}
MAX_DIGITS = 9             # a layer or index of at most 999,999,999: far beyond any model, and an SQLite integer
LETTER_KIND = {v: k for k, v in KIND_LETTER.items()}


@dataclass(frozen=True, order=True)
class Unit:
    layer: int
    kind: str  # "neuron" | "head" | "feature"
    index: int
    sae: str = ""  # features: the SAE's registered name ("" until bound)

    def __post_init__(self):
        if self.kind not in KIND_LETTER:
            raise UnitError(f"bad unit kind {self.kind!r}: use 'neuron', 'head' or 'feature'")
        if self.sae and (self.kind != "feature" or not SAE_NAME_RE.match(self.sae)):
            raise UnitError(f"bad SAE name {self.sae!r} for a {self.kind}: only features name an SAE "
                            "(letters, digits, _ . -)")

    @classmethod
    def parse(cls, text: str) -> "Unit":
        m = _PARSE_RE.match(text.strip()) if isinstance(text, str) else None
        if not m:
            raise UnitError(
                f"bad unit id {text!r}: use L<layer>/N<neuron> (e.g. L5/N131), L<layer>/H<head> (e.g. L9/H9) "
                "or L<layer>/F<latent>[@<sae>] (e.g. L6/F1234@res6k)"
            )
        return cls.from_match(m)

    @classmethod
    def from_match(cls, m: "re.Match[str]") -> "Unit":
        """The unit of a regex match whose groups are (layer, 'N'|'H'|'F' in any case, index[, sae])."""
        sae = m.group(4) if m.re.groups >= 4 else None
        for what, digits in (("layer", m.group(1)), ("index", m.group(3))):
            if not (digits.isascii() and digits.isdigit()):
                raise UnitError(f"bad unit id {m.group(0)[:40]!r}: the {what} must be ASCII digits")
            if len(digits.lstrip("0")) > MAX_DIGITS:
                raise UnitError(f"bad unit id {m.group(0)[:24]!r}...: the {what} is out of range ({len(digits)} digits; "
                                f"at most {MAX_DIGITS})")
        return cls(int(m.group(1)), LETTER_KIND[m.group(2).upper()], int(m.group(3)), sae or "")

    @classmethod
    def is_id(cls, text: object) -> bool:
        """Whether `text` is exactly a unit id as stored (L5/N131, upper case, no spaces)."""
        return isinstance(text, str) and UNIT_RE.match(text) is not None

    @classmethod
    def find_all(cls, text: str) -> Iterator["Unit"]:
        """The units named in a text, in order (duplicates kept)."""
        for m in UNIT_IN_TEXT_RE.finditer(text):
            yield cls.from_match(m)

    @classmethod
    def neuron(cls, layer: int, index: int) -> "Unit":
        return cls(layer, "neuron", index)

    @classmethod
    def head(cls, layer: int, index: int) -> "Unit":
        return cls(layer, "head", index)

    @classmethod
    def feature(cls, layer: int, index: int, sae: str = "") -> "Unit":
        return cls(layer, "feature", index, sae)

    def with_sae(self, sae: str) -> "Unit":
        """This feature bound to an SAE name (a feature already bound to another name is refused)."""
        if self.kind != "feature":
            raise UnitError(f"{self} is not an SAE latent (L<layer>/F<latent>); --sae applies to latents only")
        if self.sae and self.sae != sae:
            raise UnitError(f"{self} names SAE {self.sae!r}, not {sae!r}")
        return Unit(self.layer, self.kind, self.index, sae)

    @property
    def letter(self) -> str:
        return KIND_LETTER[self.kind]

    @property
    def id(self) -> str:
        base = f"L{self.layer}/{self.letter}{self.index}"
        return f"{base}@{self.sae}" if self.sae else base

    def __str__(self) -> str:
        return self.id

    @property
    def hook(self) -> str:
        """The hook point whose last axis (neurons) or head axis (heads) holds this unit. A feature's
        hook depends on its SAE (the SAE object's latents_hook); asking a Unit is an error."""
        if self.kind == "feature":
            raise UnitError(f"{self}: an SAE latent's hook is the SAE's (blocks.<L>.<site>.sae.latents); ask the SAE")
        return act_name("mlp.post" if self.kind == "neuron" else "attn.z", self.layer)

    def check(self, n_layers: int, n_neurons: int, n_heads: int, n_latents: int | None = None) -> "Unit":
        """Raise UnitError if this unit does not exist in a model of these sizes (features: in an
        SAE of n_latents latents)."""
        if not 0 <= self.layer < n_layers:
            raise UnitError(f"{self}: layer {self.layer} out of range (model has layers 0..{n_layers - 1})")
        if self.kind == "feature":
            if n_latents is None:
                raise UnitError(f"{self} is an SAE latent: give the SAE (--sae PATH or a registered name)")
            if not 0 <= self.index < n_latents:
                raise UnitError(f"{self}: latent {self.index} out of range (the SAE has latents 0..{n_latents - 1})")
            return self
        size, what = (n_neurons, "neurons") if self.kind == "neuron" else (n_heads, "heads")
        if not 0 <= self.index < size:
            raise UnitError(f"{self}: index {self.index} out of range (layer has {what} 0..{size - 1})")
        return self


def layer_of(name: str) -> int | None:
    """The layer a component name refers to: a unit id (L9/H9 -> 9) or a hook name
    (blocks.3.mlp.out -> 3; ln_final.out -> None)."""
    return Unit.parse(name).layer if Unit.is_id(name) else parse_hook(name)[0]
