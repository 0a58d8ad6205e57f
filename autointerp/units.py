"""Unit ids: the short strings used in the CLI, the store, JSON and the viewer.

    L5/N131   MLP neuron 131 of layer 5   (a column of blocks.5.mlp.post)
    L9/H9     attention head 9 of layer 9 (a head of blocks.9.attn.z)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UnitError

_UNIT_RE = re.compile(r"^L(\d+)/([NH])(\d+)$")


@dataclass(frozen=True, order=True)
class Unit:
    layer: int
    kind: str  # "neuron" | "head"
    index: int

    @classmethod
    def parse(cls, text: str) -> "Unit":
        m = _UNIT_RE.match(text.strip().upper())
        if not m:
            raise UnitError(
                f"bad unit id {text!r}: use L<layer>/N<neuron> (e.g. L5/N131) or L<layer>/H<head> (e.g. L9/H9)"
            )
        kind = "neuron" if m.group(2) == "N" else "head"
        return cls(int(m.group(1)), kind, int(m.group(3)))

    @classmethod
    def neuron(cls, layer: int, index: int) -> "Unit":
        return cls(layer, "neuron", index)

    @classmethod
    def head(cls, layer: int, index: int) -> "Unit":
        return cls(layer, "head", index)

    def __str__(self) -> str:
        return f"L{self.layer}/{'N' if self.kind == 'neuron' else 'H'}{self.index}"

    @property
    def hook(self) -> str:
        """The hook point whose last axis (neurons) or head axis (heads) holds this unit."""
        return f"blocks.{self.layer}.mlp.post" if self.kind == "neuron" else f"blocks.{self.layer}.attn.z"

    def check(self, n_layers: int, n_neurons: int, n_heads: int) -> "Unit":
        """Raise UnitError if this unit does not exist in a model of these sizes."""
        if not 0 <= self.layer < n_layers:
            raise UnitError(f"{self}: layer {self.layer} out of range (model has layers 0..{n_layers - 1})")
        size, what = (n_neurons, "neurons") if self.kind == "neuron" else (n_heads, "heads")
        if not 0 <= self.index < size:
            raise UnitError(f"{self}: index {self.index} out of range (layer has {what} 0..{size - 1})")
        return self
