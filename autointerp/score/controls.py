"""The null control of every score: a mismatched explanation scored on the same records.

A score of an explanation means something only next to what a wrong explanation gets on the
same records with the same scorer. The control explanation is drawn, with a seed and the unit's
id, from a fixed set of decoys that describe common text features (so it is rarely right by
accident, and it is the same for every run of a unit). The **margin** is score minus control,
with a paired bootstrap interval over the same records (score.metrics.paired_margin).
"""

from __future__ import annotations

from ..core.keys import content_hash

DECOYS = (
    "recipes for chocolate cake",
    "names of football clubs",
    "words about the weather, such as rain and snow",
    "programming keywords such as def, return and class",
    "the names of chemical elements",
    "words about love and romance",
    "musical instruments such as piano and guitar",
    "verbs in the past tense about cooking",
    "colours such as red, blue and green",
    "parts of the human body",
    "names of planets in the solar system",
    "animals that live on farms",
    "units of measurement such as metres and kilograms",
    "words related to computers and the internet",
    "emotions such as anger and joy",
    "currency names such as dollar and euro",
)


def control_explanation(unit: str, seed: int = 0, *, exclude: tuple[str, ...] = ()) -> str:
    """The control explanation of a unit: a decoy chosen by (seed, unit), not one of `exclude`."""
    pool = [d for d in DECOYS if d.lower() not in {e.lower().strip() for e in exclude}]
    return pool[int(content_hash("control", seed, unit), 16) % len(pool)]
