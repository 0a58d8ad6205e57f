"""What gets explained and scored: a subject.

    Subject.of_unit("smollm2-135m", "L5/N131")   a unit of one model
    Subject.of_diff(diff_id, "a_better")         one side of a model diff: the contexts where one
                                                 model predicts the text better than the other

A subject's explanations and scores live in the store's one explanations/scores tables; the
subject decides the columns that say whose they are (`columns`): model_id, unit and layer (and
the mining run) for a unit, diff_id and side for a diff side. `id` is the short string that
names it in content keys, messages and JSON ('L5/N131', 'diff:<diff id>:a_better').
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnitError
from .units import Unit

DIFF_PREFIX = "diff:"


@dataclass(frozen=True)
class Subject:
    """A unit of a model (model_id and unit set), or one side of a model diff (diff_id and side
    set); build one with of_unit / of_diff."""

    model_id: str | None = None
    unit: Unit | None = None
    diff_id: str | None = None
    side: str | None = None

    def __post_init__(self):
        if (self.unit is None) == (self.diff_id is None):
            raise UnitError("a subject is a unit (model_id, unit) or a diff side (diff_id, side), not both or neither")
        if self.unit is not None and not self.model_id:
            raise UnitError(f"the subject {self.unit} needs the model it is a unit of")
        if self.diff_id is not None and (not self.side or self.model_id is not None):
            raise UnitError(f"the diff subject {self.diff_id!r} needs a side and names no model")

    @classmethod
    def of_unit(cls, model_id: str, unit: "str | Unit") -> "Subject":
        return cls(model_id=model_id, unit=unit if isinstance(unit, Unit) else Unit.parse(unit))

    @classmethod
    def of_diff(cls, diff_id: str, side: str) -> "Subject":
        return cls(diff_id=diff_id, side=side)

    @property
    def id(self) -> str:
        """'L5/N131' for a unit, 'diff:<diff id>:<side>' for a diff side."""
        return str(self.unit) if self.unit is not None else f"{DIFF_PREFIX}{self.diff_id}:{self.side}"

    @property
    def kind(self) -> str | None:
        """The unit kind ('neuron', 'latent', ...); None for a diff side (scorers for every kind apply)."""
        return self.unit.kind if self.unit is not None else None

    @property
    def layer(self) -> int | None:
        return self.unit.layer if self.unit is not None else None

    def columns(self, run_id: str | None = None) -> dict:
        """The explanation row's columns naming this subject. run_id: the mining run a unit's
        records came from (a diff side's records are the diff's own, stored with it)."""
        if self.unit is not None:
            return {"model_id": self.model_id, "unit": str(self.unit), "layer": self.unit.layer, "run_id": run_id}
        return {"diff_id": self.diff_id, "side": self.side}

    def __str__(self) -> str:
        return self.id
