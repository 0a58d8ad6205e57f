"""Unit ids: the short strings used in the CLI, the store, JSON and the viewer.

    L5/N131          MLP neuron 131 of layer 5   (a column of blocks.5.mlp.post)
    L9/H9            attention head 9 of layer 9 (a head of blocks.9.attn.z)
    L6/F1234@res6k   latent 1234 of the SAE (or transcoder) registered as 'res6k', which reads
                     layer 6 (a column of blocks.6.<site>.sae.latents)
    L6/F1234         the same latent before it is bound to an SAE (the CLI binds it with --sae)

``Unit`` is the only formatter and parser of these ids: build one with Unit.neuron / Unit.head /
Unit.latent / Unit(layer, kind, index) and write ``.id`` (or str()); read one with Unit.parse.
UNIT_RE matches a whole id (anchored); UNIT_IN_TEXT_RE finds ids inside text (links, prose).
The SAE name keeps its case (it is a name in the store's `saes` table); the rest of an id is
read case-insensitively and written upper case.

The kinds are UnitKind records registered by name (UNIT_KINDS): id letter, hook site, what
counts them, firing rule, whether they can be intervened on. The word for an SAE's (or
transcoder's) unit is "latent" everywhere (SAELens' and Neuronpedia's word; "feature" is kept
for the concept a latent may stand for).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterator

from ..errors import UnitError
from .hooks import act_name, parse_hook

SAE_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,62}[A-Za-z0-9])?"
SAE_NAME_RE = re.compile(rf"^{SAE_NAME}$")


# ---- unit kinds: one record each; code that differs by kind asks the record -----------------------
@dataclass(frozen=True)
class UnitKind:
    """What a kind of unit is. Neurons, heads and SAE latents are the built-in entries; a new kind
    is one `register_unit_kind(UnitKind(...))` (tests/dummy_unit_kind.py adds one).

    Transcoder latents are SAE latents (letter F) whose SAE is a transcoder: the SAE object says
    where they read and write (SAE.hook / SAE.output_hook), the unit kind is the same."""

    name: str                   # "neuron": Unit.kind, and the word in messages
    letter: str                 # "N": unit ids L5/N131
    plural: str                 # "neurons": mine/batch --units
    site: str | None            # the hook site holding it per layer (mlp.post); None: the SAE's latents hook
    size: str                   # what counts it per layer: a HookedModel attribute (d_mlp, n_heads) or d_sae
    axis: str = "neuron"        # how patching indexes it: "neuron" (last axis of the hook) or "head" (head axis)
    example: str = ""           # an id for messages (L5/N131)
    sparse: bool = False        # firing rule: exactly zero when off (SAE latents), so random records that fire are rare
    intervene: bool = True      # causal validation can set its activation (an MLP neuron, a latent; not a head)
    logits: bool = False        # a direct logit effect is stored for it by mining
    noun: str = ""              # the viewer's word ("latent" for an SAE latent)

    @property
    def needs_sae(self) -> bool:
        """Its hook and size come from an SAE (bound with --sae or @name in the id)."""
        return self.site is None


UNIT_KINDS: dict[str, UnitKind] = {}


def register_unit_kind(kind: UnitKind) -> UnitKind:
    """Add a unit kind (its letter must be new). Returns it."""
    if not re.fullmatch(r"[A-Z]", kind.letter):
        raise ValueError(f"unit kind {kind.name!r}: the letter must be one upper-case letter, not {kind.letter!r}")
    other = next((k for k in UNIT_KINDS.values() if k.letter == kind.letter and k.name != kind.name), None)
    if other is not None:
        raise ValueError(f"unit kind {kind.name!r}: letter {kind.letter} is {other.name!r}'s")
    UNIT_KINDS[kind.name] = kind
    return kind


def unit_kind(name: str) -> UnitKind:
    if name not in UNIT_KINDS:
        raise UnitError(f"bad unit kind {name!r}: use {', '.join(repr(k) for k in UNIT_KINDS)}")
    return UNIT_KINDS[name]


def kind_of_letter(letter: str) -> UnitKind:
    for k in UNIT_KINDS.values():
        if k.letter == letter.upper():
            return k
    raise UnitError(f"bad unit kind letter {letter!r}: use {', '.join(k.letter for k in UNIT_KINDS.values())}")


def kind_of_plural(plural: str) -> UnitKind:
    for k in UNIT_KINDS.values():
        if k.plural == plural:
            return k
    raise UnitError(f"bad units {plural!r}: use {', '.join(k.plural for k in UNIT_KINDS.values())}")


NEURON = register_unit_kind(UnitKind("neuron", "N", "neurons", "mlp.post", "d_mlp", example="L5/N131", logits=True,
                                     noun="neuron"))
HEAD = register_unit_kind(UnitKind("head", "H", "heads", "attn.z", "n_heads", axis="head", example="L9/H9",
                                   intervene=False, noun="head"))
LATENT = register_unit_kind(UnitKind("latent", "F", "latents", None, "d_sae", example="L6/F1234@res6k", sparse=True,
                                     logits=True, noun="latent"))

UNITS_BOTH = "both"        # mine --units both: neurons and heads (the runs' name for the pair before lists existed)


def unit_choices() -> list[str]:
    """What `mine --units` takes, item by item: every registered kind's plural, and 'both'."""
    return [k.plural for k in UNIT_KINDS.values()] + [UNITS_BOTH]


def parse_units(text: str) -> tuple[UnitKind, ...]:
    """The kinds named by a units text: one plural ('neurons'), a comma-separated list
    ('neurons,resids'), or 'both' (neurons and heads); in registry order, each once. Raises
    UnitError (one line) for an unknown or empty item."""
    names: set[str] = set()
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == UNITS_BOTH:
            names |= {NEURON.name, HEAD.name}
            continue
        kind = next((k for k in UNIT_KINDS.values() if k.plural == part), None)
        if kind is None:
            raise UnitError(f"bad units {text!r}: use {', '.join(unit_choices())}, or a comma-separated list of them")
        names.add(kind.name)
    return tuple(k for k in UNIT_KINDS.values() if k.name in names)


def units_text(kinds: "tuple[UnitKind, ...] | list[UnitKind]") -> str:
    """The canonical text of a set of kinds (parse_units' inverse): 'both' for exactly neurons and
    heads (so a run's id and settings are those it had before lists), else the plurals in
    registry order, comma-separated."""
    names = {k.name for k in kinds}
    if names == {NEURON.name, HEAD.name}:
        return UNITS_BOTH
    return ",".join(k.plural for k in UNIT_KINDS.values() if k.name in names)


@functools.lru_cache(maxsize=None)
def _regexes(letters: str) -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    cls = f"[{letters}]"
    return (re.compile(rf"^L([0-9]+)/({cls})([0-9]+)(?:@({SAE_NAME}))?$"),
            re.compile(rf"\bL([0-9]+)/({cls})([0-9]+)(?:@({SAE_NAME}))?(?![\w@])"),
            re.compile(rf"^[Ll]([0-9]+)/({cls}|{cls.lower()})([0-9]+)(?:@({SAE_NAME}))?$"))


def _current() -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    return _regexes("".join(k.letter for k in UNIT_KINDS.values()))


def __getattr__(name: str):
    """UNIT_RE (a whole id, anchored) and UNIT_IN_TEXT_RE (ids inside text), over the letters of the
    unit kinds registered when they are read."""
    if name == "UNIT_RE":
        return _current()[0]
    if name == "UNIT_IN_TEXT_RE":
        return _current()[1]
    raise AttributeError(name)


# the part of an id shared by every unit of one layer and kind ('L6/F' of L6/F12@res6k), any letter
# (a kind registered by the writer may be unknown to the reader). Ids with one prefix sort
# together, so a store reads one layer and kind of a model as one index range
_PREFIX_RE = re.compile(r"^L([0-9]+)/([A-Z])")


def id_prefix(unit_id: str) -> tuple[str, int, str] | None:
    """(prefix, layer, kind letter) of a stored unit id: ('L6/F', 6, 'F') for L6/F12@res6k; None
    for a string that is not one. Every id that starts with the prefix is that layer and kind."""
    m = _PREFIX_RE.match(unit_id)
    return (m.group(0), int(m.group(1)), m.group(2)) if m else None


MAX_DIGITS = 9             # a layer or index of at most 999,999,999: far beyond any model, and an SQLite integer


@dataclass(frozen=True, order=True)
class Unit:
    layer: int
    kind: str  # a registered UnitKind's name: "neuron" | "head" | "latent" | ...
    index: int
    sae: str = ""  # latents: the SAE's registered name ("" until bound)

    def __post_init__(self):
        if self.kind not in UNIT_KINDS:
            raise UnitError(f"bad unit kind {self.kind!r}: use {', '.join(repr(k) for k in UNIT_KINDS)}")
        if self.sae and (not self.record.needs_sae or not SAE_NAME_RE.match(self.sae)):
            raise UnitError(f"bad SAE name {self.sae!r} for a {self.kind}: only latents name an SAE "
                            "(letters, digits, _ . -)")

    @property
    def record(self) -> UnitKind:
        """This unit's kind (what differs by kind: hook, size, firing rule, intervention)."""
        return UNIT_KINDS[self.kind]

    @classmethod
    def parse(cls, text: str) -> "Unit":
        m = _current()[2].match(text.strip()) if isinstance(text, str) else None
        if not m:
            forms = [f"L<layer>/{k.letter}<{k.name}>{'[@<sae>]' if k.needs_sae else ''}"
                     + (f" (e.g. {k.example})" if k.example else "") for k in UNIT_KINDS.values()]
            raise UnitError(f"bad unit id {text!r}: use " + ", ".join(forms[:-1]) + " or " + forms[-1])
        return cls.from_match(m)

    @classmethod
    def from_match(cls, m: "re.Match[str]") -> "Unit":
        """The unit of a regex match whose groups are (layer, a kind's letter in any case, index[, sae])."""
        sae = m.group(4) if m.re.groups >= 4 else None
        for what, digits in (("layer", m.group(1)), ("index", m.group(3))):
            if not (digits.isascii() and digits.isdigit()):
                raise UnitError(f"bad unit id {m.group(0)[:40]!r}: the {what} must be ASCII digits")
            if len(digits.lstrip("0")) > MAX_DIGITS:
                raise UnitError(f"bad unit id {m.group(0)[:24]!r}...: the {what} is out of range ({len(digits)} digits; "
                                f"at most {MAX_DIGITS})")
        return cls(int(m.group(1)), kind_of_letter(m.group(2)).name, int(m.group(3)), sae or "")

    @classmethod
    def is_id(cls, text: object) -> bool:
        """Whether `text` is exactly a unit id as stored (L5/N131, upper case, no spaces)."""
        return isinstance(text, str) and _current()[0].match(text) is not None

    @classmethod
    def find_all(cls, text: str) -> Iterator["Unit"]:
        """The units named in a text, in order (duplicates kept)."""
        for m in _current()[1].finditer(text):
            yield cls.from_match(m)

    @classmethod
    def neuron(cls, layer: int, index: int) -> "Unit":
        return cls(layer, NEURON.name, index)

    @classmethod
    def head(cls, layer: int, index: int) -> "Unit":
        return cls(layer, HEAD.name, index)

    @classmethod
    def latent(cls, layer: int, index: int, sae: str = "") -> "Unit":
        return cls(layer, LATENT.name, index, sae)

    def with_sae(self, sae: str) -> "Unit":
        """This latent bound to an SAE name (a latent already bound to another name is refused)."""
        if not self.record.needs_sae:
            raise UnitError(f"{self} is not an SAE latent (L<layer>/F<latent>); --sae applies to latents only")
        if self.sae and self.sae != sae:
            raise UnitError(f"{self} names SAE {self.sae!r}, not {sae!r}")
        return Unit(self.layer, self.kind, self.index, sae)

    @property
    def letter(self) -> str:
        return self.record.letter

    @property
    def id(self) -> str:
        base = f"L{self.layer}/{self.letter}{self.index}"
        return f"{base}@{self.sae}" if self.sae else base

    def __str__(self) -> str:
        return self.id

    @property
    def hook(self) -> str:
        """The hook point whose last axis (neurons) or head axis (heads) holds this unit. A latent's
        hook depends on its SAE (the SAE object's latents_hook); asking a Unit is an error."""
        if self.record.needs_sae:
            raise UnitError(f"{self}: an SAE latent's hook is the SAE's (blocks.<L>.<site>.sae.latents); ask the SAE")
        return act_name(self.record.site, self.layer)

    def check(self, n_layers: int, n_neurons: int | None = None, n_heads: int | None = None,
              n_latents: int | None = None, **sizes: int) -> "Unit":
        """Raise UnitError if this unit does not exist in a model of these sizes (latents: in an
        SAE of n_latents latents). Other kinds' sizes by their record's `size` name (d_model=...)."""
        if not 0 <= self.layer < n_layers:
            raise UnitError(f"{self}: layer {self.layer} out of range (model has layers 0..{n_layers - 1})")
        sizes = {"d_mlp": n_neurons, "n_heads": n_heads, "d_sae": n_latents, **sizes}
        k = self.record
        size = sizes.get(k.size)
        if k.needs_sae:
            if size is None:
                raise UnitError(f"{self} is an SAE latent: give the SAE (--sae PATH or a registered name)")
            if not 0 <= self.index < size:
                raise UnitError(f"{self}: latent {self.index} out of range (the SAE has latents 0..{size - 1})")
            return self
        if size is None:
            raise UnitError(f"{self}: the size of a {k.name} layer ({k.size}) is not known here")
        if not 0 <= self.index < size:
            raise UnitError(f"{self}: index {self.index} out of range (layer has {k.plural} 0..{size - 1})")
        return self


def layer_of(name: str) -> int | None:
    """The layer a component name refers to: a unit id (L9/H9 -> 9) or a hook name
    (blocks.3.mlp.out -> 3; ln_final.out -> None)."""
    return Unit.parse(name).layer if Unit.is_id(name) else parse_hook(name)[0]
