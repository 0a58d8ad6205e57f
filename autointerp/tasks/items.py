"""The typed records of the task pipeline: one counterfactual item and a named dataset of them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator


class PairItem(BaseModel):
    """One counterfactual item.

    clean / corrupt: prompts with the same number of tokens that differ only where the task
    intends (e.g. a name swapped); answer / wrong: single next tokens as the model tokenises
    them in context (usually with a leading space, " Mary"). On the clean prompt the model should
    prefer `answer` over `wrong`; the corruption should remove (or reverse) that preference.
    """

    clean: str
    corrupt: str
    answer: str
    wrong: str
    meta: dict[str, Any] = Field(default_factory=dict)
    clean_logit_diff: float | None = None     # filled in by validation on a subject model
    corrupt_logit_diff: float | None = None

    @field_validator("clean", "corrupt", "answer", "wrong")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not isinstance(v, str) or v == "":
            raise ValueError("must be a non-empty string")
        return v

    def key(self) -> tuple[str, str, str, str]:
        return (self.clean, self.corrupt, self.answer, self.wrong)


class Dataset(BaseModel):
    """A named, validated list of items (the `datasets` + `pairs` tables)."""

    name: str
    task: str
    source: str                               # builtin | llm | import
    model_id: str | None = None               # the model it was validated on
    items: list[PairItem]
    stats: dict[str, Any] = Field(default_factory=dict)   # acceptance counts per rejection reason
    created_at: str | None = None

    @property
    def n_items(self) -> int:
        return len(self.items)
