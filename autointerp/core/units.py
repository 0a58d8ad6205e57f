"""Unit ids: the short strings used in the CLI, the store, JSON and the viewer.

    L5/N131   MLP neuron 131 of layer 5   (a column of blocks.5.mlp.post)
    L9/H9     attention head 9 of layer 9 (a head of blocks.9.attn.z)

``Unit`` is the only formatter and parser of these ids: build one with Unit.neuron / Unit.head /
Unit(layer, kind, index) and write ``.id`` (or str()); read one with Unit.parse. UNIT_RE matches a
whole id (anchored); UNIT_IN_TEXT_RE finds ids inside text (links, prose).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from ..errors import UnitError
from .hooks import act_name, parse_hook

UNIT_RE = re.compile(r"^L(\d+)/([NH])(\d+)$")
UNIT_IN_TEXT_RE = re.compile(r"\bL(\d+)/([NH])(\d+)\b")
KIND_LETTER = {"neuron": "N", "head": "H"}
LETTER_KIND = {v: k for k, v in KIND_LETTER.items()}


@dataclass(frozen=True, order=True)
class Unit:
    layer: int
    kind: str  # "neuron" | "head"
    index: int

    def __post_init__(self):
        if self.kind not in KIND_LETTER:
            raise UnitError(f"bad unit kind {self.kind!r}: use 'neuron' or 'head'")

    @classmethod
    def parse(cls, text: str) -> "Unit":
        m = UNIT_RE.match(text.strip().upper()) if isinstance(text, str) else None
        if not m:
            raise UnitError(
                f"bad unit id {text!r}: use L<layer>/N<neuron> (e.g. L5/N131) or L<layer>/H<head> (e.g. L9/H9)"
            )
        return cls.from_match(m)

    @classmethod
    def from_match(cls, m: "re.Match[str]") -> "Unit":
        """The unit of a regex match whose groups are (layer, 'N'|'H' in any case, index)."""
        return cls(int(m.group(1)), LETTER_KIND[m.group(2).upper()], int(m.group(3)))

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

    @property
    def letter(self) -> str:
        return KIND_LETTER[self.kind]

    @property
    def id(self) -> str:
        return f"L{self.layer}/{self.letter}{self.index}"

    def __str__(self) -> str:
        return self.id

    @property
    def hook(self) -> str:
        """The hook point whose last axis (neurons) or head axis (heads) holds this unit."""
        return act_name("mlp.post" if self.kind == "neuron" else "attn.z", self.layer)

    def check(self, n_layers: int, n_neurons: int, n_heads: int) -> "Unit":
        """Raise UnitError if this unit does not exist in a model of these sizes."""
        if not 0 <= self.layer < n_layers:
            raise UnitError(f"{self}: layer {self.layer} out of range (model has layers 0..{n_layers - 1})")
        size, what = (n_neurons, "neurons") if self.kind == "neuron" else (n_heads, "heads")
        if not 0 <= self.index < size:
            raise UnitError(f"{self}: index {self.index} out of range (layer has {what} 0..{size - 1})")
        return self


def layer_of(name: str) -> int | None:
    """The layer a component name refers to: a unit id (L9/H9 -> 9) or a hook name
    (blocks.3.mlp.out -> 3; ln_final.out -> None)."""
    return Unit.parse(name).layer if Unit.is_id(name) else parse_hook(name)[0]
