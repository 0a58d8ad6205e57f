"""compare/tasks.py (a built-in task on two models) and compare/plot.py (a diff's PNG), on random-init
GPT-2s whose word-level vocabulary covers the IOI generator's words, so answers are single tokens:
the logit differences are those of a plain HF forward pass, a model against itself differs by
nothing, a zeroed head moves them, and the plot refuses to overwrite a file unasked."""

import pytest
import torch

from autointerp.compare import check_tasks, compare_task, zero_head_outputs
from autointerp.errors import UsageError
from autointerp.tasks import generate_builtin


def _ioi_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, "<bos>": 2}
    for seed in range(4):
        for it in generate_builtin("ioi", 200, seed=seed):
            for w in f"{it.clean} {it.corrupt} {it.answer} {it.wrong}".split():
                vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", bos_token="<bos>")


@pytest.fixture(scope="module")
def pair():
    import copy

    from transformers import GPT2Config, GPT2LMHeadModel

    from autointerp.models import HookedModel

    tok = _ioi_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=2,
                     eos_token_id=1)
    a = HookedModel(GPT2LMHeadModel(cfg).eval(), tok, spec="ioi-a")
    b = HookedModel(copy.deepcopy(a.model), tok, spec="ioi-b")
    zero_head_outputs(b, ["L1/H1"])
    return a, b


def _ld(hm, clean, answer, wrong):
    tok = hm.tokenizer
    ids = torch.tensor([tok(clean, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = hm.model(input_ids=ids).logits[0, -1]
    ans, wr = (tok(clean + w, add_special_tokens=False)["input_ids"][-1] for w in (answer, wrong))
    return float(logits[ans] - logits[wr])


def test_a_model_against_itself_differs_by_nothing(pair):
    a, _ = pair
    t = compare_task(a, a, " IOI", n=12, seed=0)
    assert t.task == "ioi" and t.n_items == 12 and t.logit_diff_a == t.logit_diff_b and t.accuracy_a == t.accuracy_b
    assert all(o["delta"] == 0 for o in t.outliers)


def test_logit_differences_are_those_of_a_plain_forward_pass(pair):
    a, b = pair
    t = compare_task(a, b, "ioi", n=12, seed=0, n_outliers=12)
    assert t.task == "ioi" and t.n_items == 12 and len(t.outliers) == 12
    deltas = [abs(o["delta"]) for o in t.outliers]
    assert deltas == sorted(deltas, reverse=True) and deltas[0] > 1e-3       # the zeroed head moves them
    for o in t.outliers:
        assert o["ld_a"] == pytest.approx(_ld(a, o["clean"], o["answer"], o["wrong"]), abs=1e-3)
        assert o["ld_b"] == pytest.approx(_ld(b, o["clean"], o["answer"], o["wrong"]), abs=1e-3)
    assert t.logit_diff_a == pytest.approx(sum(o["ld_a"] for o in t.outliers) / 12, abs=1e-3)
    assert t.accuracy_b == pytest.approx(sum(o["ld_b"] > 0 for o in t.outliers) / 12, abs=1e-4)
    assert check_tasks(["ioi", "Capitals"]) == ["ioi", "capitals"]
    with pytest.raises(UsageError, match="--tasks: unknown task 'nope'"):
        check_tasks(["nope"])


def test_a_task_no_item_of_which_fits_is_one_clear_error(pair):
    a, b = pair
    with pytest.raises(UsageError, match="no item is well-formed for both models"):
        compare_task(a, b, "capitals", n=4)                  # city names are not in this vocabulary


def test_plot_writes_a_png_and_refuses_to_overwrite_unasked(pair, tmp_path):
    pytest.importorskip("matplotlib")
    from autointerp.compare.plot import plot_diff
    from autointerp.pipeline import DiffSettings, diff_models
    from autointerp.store import Store

    a, b = pair
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(it.clean for it in generate_builtin("ioi", 60, seed=5)))
    with Store(tmp_path / "s.db") as store:
        res = diff_models(store, settings=DiffSettings(corpus=str(text), n_tokens=512, context_len=16, top_k=4,
                                                       n_random=4, act_tokens=64, explain="none"), hm_a=a, hm_b=b)
    out = tmp_path / "d.png"
    assert plot_diff(res, out) == out and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = out.read_bytes()
    with pytest.raises(UsageError, match="--plot"):
        plot_diff(res, out)
    assert out.read_bytes() == first
    plot_diff(res, out, force=True, top=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
