"""Items in the tiny models' word-level vocabulary."""

from autointerp.tasks.items import PairItem

CLEAN = [
    ("when mary and john went to the store , john gave a drink to", "when mary and john went to the store , dog gave a drink to", " mary", " john"),
    ("when john and mary went to the park , mary gave a drink to", "when john and mary went to the park , cat gave a drink to", " john", " mary"),
    ("then mary and john ran to the house , john gave a drink to", "then mary and john ran to the house , tree gave a drink to", " mary", " john"),
    ("the cat sat on the mat and the dog ran to the", "the dog sat on the mat and the cat ran to the", " mat", " park"),
    ("the capital of France is", "the capital of Paris is", " Paris", " France"),
]


def items(n=None):
    out = [PairItem(clean=c, corrupt=x, answer=a, wrong=w) for c, x, a, w in CLEAN]
    return out[:n] if n else out


def same_items(n=None):
    """clean == corrupt."""
    return [PairItem(clean=c, corrupt=c, answer=a, wrong=w) for c, _, a, w in CLEAN][:n or None]
