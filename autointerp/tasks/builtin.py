"""Built-in reference tasks with hand-written templates and filler lists.

Every generator returns PairItem candidates; validation on the subject model decides which are
kept. `tokenize` (optional, str -> token ids, no special tokens) lets a generator pick corrupt
fillers with the same token count as the clean ones (e.g. names) and pick the answer form the
tokenizer uses (greater-than: two-digit tokens as in GPT-2, or one digit per token as in Llama).

    ioi           indirect object identification (Wang et al. 2022): ABBA and BABA templates with
                  names, places and objects; corrupt = the second mention of the subject replaced
                  by a third name (the "ABC" distribution). answer = IO, wrong = S.
    greater_than  "The war lasted from the year 1732 to the year 17" (Hanna et al. 2023);
                  corrupt = the start year's digits set to 01 / 0; answer a later, wrong an earlier year.
    pronouns      "John went to the store because" -> " he" vs " she"; corrupt = a name of the other gender.
    successor     "The day after Monday is" -> " Tuesday"; corrupt = another day; wrong = its successor.
    capitals      "The capital of France is" -> " Paris"; corrupt = another country; wrong = its capital.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

from ..errors import UsageError
from .items import PairItem

Tokenize = Callable[[str], list[int]]

NAMES = ["Mary", "John", "Tom", "James", "Dan", "Sarah", "Anna", "Paul", "Mark", "Kate", "Emma", "Lisa",
         "Michael", "David", "Alice", "Bob", "Jack", "Ryan", "Laura", "Sam", "Peter", "George", "Rachel",
         "Andrew", "Chris", "Jessica", "Daniel", "Emily", "Kevin", "Amy", "Steve", "Linda", "Brian", "Susan",
         "Eric", "Helen", "Frank", "Jane", "Adam", "Robert", "Joseph", "Thomas", "William", "Richard"]
PLACES = ["store", "park", "school", "office", "restaurant", "hospital", "station", "garden", "house", "beach",
          "library", "market"]
OBJECTS = ["drink", "book", "ring", "ball", "gift", "key", "letter", "bone", "basketball", "computer", "necklace",
           "kiss", "snack", "bag"]
# {A} = indirect object (the answer), {B} = subject (repeated). Written in BABA order; ABBA swaps the first clause.
IOI_TEMPLATES = [
    "Then, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {B} and {A} had a lot of fun at the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {B} and {A} were working at the {PLACE}. {B} decided to give a {OBJECT} to",
    "After {B} and {A} went to the {PLACE}, {B} gave a {OBJECT} to",
    "When {B} and {A} got a {OBJECT} at the {PLACE}, {B} decided to give it to",
    "While {B} and {A} were working at the {PLACE}, {B} gave a {OBJECT} to",
    "Afterwards, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Friends {B} and {A} found a {OBJECT} at the {PLACE}. {B} gave it to",
    "Then, {B} and {A} had a long argument, and afterwards {B} said to",
]

MALE = ["John", "Tom", "James", "Paul", "Mark", "Michael", "David", "Jack", "Ryan", "Peter", "George", "Andrew",
        "Daniel", "Kevin", "Steve", "Brian", "Eric", "Frank", "Adam", "Robert"]
FEMALE = ["Mary", "Sarah", "Anna", "Kate", "Emma", "Lisa", "Alice", "Laura", "Rachel", "Jessica", "Emily", "Amy",
          "Linda", "Susan", "Helen", "Jane", "Julia", "Karen", "Nancy", "Lucy"]
PRONOUN_TEMPLATES = [
    "{N} went to the {PLACE} because",
    "{N} was very tired, so",
    "After the meeting, {N} said that",
    "{N} called the doctor because",
    "When {N} got home,",
    "{N} could not sleep, so",
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
SUCCESSOR_TEMPLATES = {
    "day": ["The day after {X} is", "If today is {X}, tomorrow is", "Yesterday was {X}, so today is"],
    "month": ["The month after {X} is", "If this month is {X}, next month is", "Last month was {X}, so this month is"],
}

CAPITALS = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
            "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo", "England": "London", "Greece": "Athens",
            "Ireland": "Dublin", "Austria": "Vienna", "Poland": "Warsaw", "Norway": "Oslo", "Portugal": "Lisbon",
            "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Cuba": "Havana", "Thailand": "Bangkok",
            "Turkey": "Ankara", "Sweden": "Stockholm", "Finland": "Helsinki", "Hungary": "Budapest",
            "Denmark": "Copenhagen", "Belgium": "Brussels", "Argentina": "Buenos Aires", "India": "Delhi"}
CAPITAL_TEMPLATES = ["The capital of {C} is", "The capital city of {C} is", "She flew to the capital of {C}, which is"]

GT_NOUNS = ["war", "expedition", "reign", "drought", "project", "strike", "construction", "trial", "famine", "dynasty"]
GT_TEMPLATES = ["The {NOUN} lasted from the year {YEAR} to the year {CENT}",
                "The {NOUN} started in the year {YEAR} and ended in the year {CENT}"]


def _tlen(tokenize: Tokenize | None, word: str) -> int:
    return len(tokenize(" " + word)) if tokenize else 1


def _other(x: str, pool: list[str], rng: random.Random, tokenize: Tokenize | None, exclude=()) -> str | None:
    """A filler from `pool`, not x or in exclude, with the same token count as x where possible."""
    cands = [p for p in pool if p != x and p not in exclude]
    if tokenize:
        same = [p for p in cands if _tlen(tokenize, p) == _tlen(tokenize, x)]
        cands = same or cands
    return rng.choice(cands) if cands else None


def gen_ioi(rng: random.Random, tokenize: Tokenize | None) -> Iterator[PairItem]:
    while True:
        ti = rng.randrange(len(IOI_TEMPLATES))
        t = IOI_TEMPLATES[ti]
        a, b = rng.sample(NAMES, 2)
        c = _other(b, NAMES, rng, tokenize, exclude=(a,))
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        order = rng.choice(["ABBA", "BABA"])
        if order == "ABBA":
            t = t.replace("{B} and {A}", "{A} and {B}", 1)
        # the second mention of {B} is the last one in every template
        head, _, tail = t.rpartition("{B}")
        fill = dict(A=a, B=b, PLACE=place, OBJECT=obj)
        clean = (head + b + tail).format(**fill)
        corrupt = (head + c + tail).format(**fill)
        yield PairItem(clean=clean, corrupt=corrupt, answer=" " + a, wrong=" " + b,
                       meta=dict(task="ioi", template=ti, order=order, io=a, s=b, c=c, place=place, object=obj))


def gen_greater_than(rng: random.Random, tokenize: Tokenize | None) -> Iterator[PairItem]:
    # one token per digit (Llama-style) or two-digit tokens (GPT-2-style)?
    digits = bool(tokenize) and len(tokenize("1732")) >= 4
    while True:
        ti = rng.randrange(len(GT_TEMPLATES))
        cent, noun = rng.randint(11, 19), rng.choice(GT_NOUNS)
        if digits:   # the next token is the tens digit: later = a larger digit, earlier = a smaller one
            d, u = rng.randint(2, 8), rng.randint(0, 9)
            year, cyear = f"{cent}{d}{u}", f"{cent}0{u}"
            ans, wrong = str(rng.randint(d + 1, 9)), str(rng.randint(0, d - 1))
        else:        # the next token is two digits
            yy = rng.randint(10, 89)
            year, cyear = f"{cent}{yy:02d}", f"{cent}01"
            ans, wrong = f"{rng.randint(yy + 1, 99):02d}", f"{rng.randint(1, yy - 1):02d}"
        fill = dict(NOUN=noun, CENT=str(cent))
        clean = GT_TEMPLATES[ti].format(YEAR=year, **fill)
        corrupt = GT_TEMPLATES[ti].format(YEAR=cyear, **fill)
        yield PairItem(clean=clean, corrupt=corrupt, answer=ans, wrong=wrong,
                       meta=dict(task="greater_than", template=ti, year=year, digit_tokens=digits))


def gen_pronouns(rng: random.Random, tokenize: Tokenize | None) -> Iterator[PairItem]:
    while True:
        ti = rng.randrange(len(PRONOUN_TEMPLATES))
        male = rng.random() < 0.5
        name = rng.choice(MALE if male else FEMALE)
        other = _other(name, FEMALE if male else MALE, rng, tokenize)
        place = rng.choice(PLACES)
        t = PRONOUN_TEMPLATES[ti]
        yield PairItem(clean=t.format(N=name, PLACE=place), corrupt=t.format(N=other, PLACE=place),
                       answer=" he" if male else " she", wrong=" she" if male else " he",
                       meta=dict(task="pronouns", template=ti, name=name, other=other, gender="m" if male else "f"))


def gen_successor(rng: random.Random, tokenize: Tokenize | None) -> Iterator[PairItem]:
    while True:
        series = rng.choice(["day", "month"])
        seq = {"day": DAYS, "month": MONTHS}[series]
        ti = rng.randrange(len(SUCCESSOR_TEMPLATES[series]))
        t = SUCCESSOR_TEMPLATES[series][ti]
        i = rng.randrange(len(seq))
        x = seq[i]
        # the corrupt value must not be x's neighbour (its successor would be x or x's answer)
        y = _other(x, seq, rng, tokenize, exclude=(seq[(i - 1) % len(seq)], seq[(i + 1) % len(seq)]))
        j = seq.index(y)
        yield PairItem(clean=t.format(X=x), corrupt=t.format(X=y), answer=" " + seq[(i + 1) % len(seq)],
                       wrong=" " + seq[(j + 1) % len(seq)], meta=dict(task="successor", kind=series, template=ti, x=x, y=y))


def gen_capitals(rng: random.Random, tokenize: Tokenize | None) -> Iterator[PairItem]:
    countries = list(CAPITALS)
    while True:
        ti = rng.randrange(len(CAPITAL_TEMPLATES))
        c = rng.choice(countries)
        d = _other(c, countries, rng, tokenize)
        t = CAPITAL_TEMPLATES[ti]
        yield PairItem(clean=t.format(C=c), corrupt=t.format(C=d), answer=" " + CAPITALS[c], wrong=" " + CAPITALS[d],
                       meta=dict(task="capitals", template=ti, country=c, other=d))


BUILTIN_TASKS: dict[str, Callable[[random.Random, Tokenize | None], Iterator[PairItem]]] = {
    "ioi": gen_ioi,
    "greater_than": gen_greater_than,
    "pronouns": gen_pronouns,
    "successor": gen_successor,
    "capitals": gen_capitals,
}
ALIASES = {"greater-than": "greater_than", "gt": "greater_than", "gender": "pronouns", "gendered_pronouns": "pronouns",
           "days": "successor", "months": "successor", "capital": "capitals", "capital_cities": "capitals"}


def builtin_name(task: str) -> str | None:
    """The built-in task named by `task` (or an alias of it), else None."""
    t = task.strip().lower()
    t = ALIASES.get(t, t)
    return t if t in BUILTIN_TASKS else None


def generate_builtin(task: str, n: int, *, seed: int = 0, tokenize: Tokenize | None = None,
                     max_tries: int | None = None) -> list[PairItem]:
    """Up to `n` distinct candidate items of a built-in task (fewer if the templates run out)."""
    name = builtin_name(task)
    if name is None:
        raise UsageError(f"unknown built-in task {task!r}: choose from {', '.join(BUILTIN_TASKS)}")
    rng = random.Random(seed)
    out, seen = [], set()
    gen = BUILTIN_TASKS[name](rng, tokenize)
    for _ in range(max_tries or 20 * n + 100):
        if len(out) >= n:
            break
        it = next(gen)
        if it.key() not in seen:
            seen.add(it.key())
            out.append(it)
    return out
