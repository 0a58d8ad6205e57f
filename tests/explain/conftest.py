"""Records built by hand (no model, no mining)."""

import pytest

from tinykit import make_rec


@pytest.fixture
def rec():
    return make_rec


# ---- a deterministic fake LLM: real LLM wrapper (recording, cache), fake backend -------------------
import re

import numpy as np

from autointerp.llm.base import LLM, Result


class FakeLLM(LLM):
    """Writes the explanations it is told to; simulates 'ideal': a token quoted in the
    explanation gets 10, any other 0; answers yes when a quoted word is in the text / marked."""

    backend = "fake"
    model = "fake-1"
    name = "fake:fake-1"
    supports_prompt_logprobs = True

    def __init__(self, replies=("the tokens \"cat\" and \"dog\"",), **kw):
        super().__init__(**kw)
        self.replies = list(replies)
        self.calls = {"complete": 0, "chat": 0, "logprobs": 0}

    def _complete(self, prompt, *, prefix, temperature, max_tokens, n, seed, stop):
        self.calls["complete"] += 1
        return Result([" " + self.replies[i % len(self.replies)] + "\nmore" for i in range(n)], len(prompt) // 4, 10 * n)

    def _chat(self, messages, *, temperature, max_tokens, n, seed, stop):
        self.calls["chat"] += 1
        return Result([self.replies[i % len(self.replies)] for i in range(n)], 10, 10 * n)

    @staticmethod
    def _words(text):
        m = re.search(r"Explanation[^:]*:(.*)", text)
        return {w.lower() for w in re.findall(r'"([^"]+)"', m.group(1) if m else text)}

    def _prompt_logprobs_batch(self, prefix, list_of_segments, candidates):
        self.calls["logprobs"] += 1
        out = []
        for segs in list_of_segments:
            full = prefix + "".join(segs)
            words = self._words("".join(segs))
            rows = []
            pos = len(prefix)
            for seg in segs:
                pos += len(seg)
                upto = full[:pos]
                if candidates == [" yes", " no"]:
                    text = upto.rsplit("Text:", 1)[-1]
                    marked = re.findall(r"<<(.*?)>>", text)
                    hit = (all(m.strip().lower() in words for m in marked) if marked
                           else any(re.search(rf"\b{re.escape(w)}\b", text.lower()) for w in words))
                    rows.append([0.8, 0.1] if hit else [0.1, 0.8])
                else:
                    tok = upto.rsplit("\n", 1)[-1].rstrip("\t").strip().lower()
                    p = np.zeros(len(candidates))
                    v = 10 if tok in words else 0
                    p[candidates.index(str(v))] = 0.9
                    if v == 10:
                        p[candidates.index("1")] = 0.9  # "1" also counts "10"'s mass
                    rows.append(p.tolist())
            out.append(np.asarray(rows))
        return Result(out, sum(len(prefix + "".join(s)) // 4 for s in list_of_segments), 0)


@pytest.fixture
def fake_llm_cls():
    return FakeLLM


@pytest.fixture
def prompts_dir():
    """The real prompt files (prompts/): the tests check their variables too."""
    from autointerp.config import REPO_ROOT

    return REPO_ROOT / "prompts"
