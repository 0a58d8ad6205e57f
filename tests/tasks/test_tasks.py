"""Built-in generators, validation (each rejection reason), export and import (line-numbered errors, atomic)."""

from __future__ import annotations

import json

import pytest

from autointerp.errors import DatasetError
from autointerp.store import Store
from autointerp.tasks import (BUILTIN_TASKS, PairItem, dumps, generate_builtin, get_dataset, import_dataset, read_items,
                              validate_items)
from autointerp.tasks.validate import final_logit_diffs, single_token_in_context

GOOD = ("when mary and john went to the store , john gave a drink to",
        "when mary and john went to the store , dog gave a drink to")


@pytest.mark.parametrize("task", list(BUILTIN_TASKS))
def test_builtin_generators(task):
    its = generate_builtin(task, 40, seed=3)
    assert len(its) == 40 and len({it.key() for it in its}) == 40
    for it in its:
        assert it.clean != it.corrupt and it.answer != it.wrong
    assert generate_builtin(task, 10, seed=3) == its[:10]          # deterministic prefix


def test_ioi_has_both_orders_and_fillers():
    its = generate_builtin("ioi", 200, seed=0)
    assert {it.meta["order"] for it in its} == {"ABBA", "BABA"}
    assert len({it.meta["place"] for it in its}) > 5 and len({it.meta["object"] for it in its}) > 5
    for it in its[:50]:
        io, s = it.meta["io"], it.meta["s"]
        assert it.answer == " " + io and it.wrong == " " + s
        assert it.clean.count(s) == 2 and it.corrupt.count(s) == 1


def _oriented(hm, clean, corrupt, a, b):
    """(answer, wrong) in the order the model prefers on the clean prompt."""
    ia, ib = hm.token_id(a), hm.token_id(b)
    ld = final_logit_diffs(hm, [clean], [ia], [ib])[0]
    return (a, b) if ld > 0 else (b, a)


def test_validation_rejects_each_bad_kind_with_its_reason(tiny_gpt2):
    hm = tiny_gpt2
    a, w = _oriented(hm, *GOOD, " mary", " john")
    good = PairItem(clean=GOOD[0], corrupt=GOOD[1], answer=a, wrong=w)
    cases = {
        "duplicate": good,
        "answer_equals_wrong": PairItem(clean=GOOD[0], corrupt=GOOD[1], answer=" mary", wrong=" mary"),
        "identical": PairItem(clean=GOOD[0], corrupt=GOOD[0], answer=a, wrong=w),
        "length_mismatch": PairItem(clean="the cat sat on the mat", corrupt="the big cat sat on the mat", answer=a, wrong=w),
        "misaligned": PairItem(clean="a cat sat on mat", corrupt="a catsat on mat dog", answer=a, wrong=w),
        "answer_not_single_token": PairItem(clean=GOOD[0], corrupt=GOOD[1], answer=" mary john", wrong=w),
        "wrong_not_single_token": PairItem(clean=GOOD[0], corrupt=GOOD[1], answer=a, wrong=" red blue"),
        "clean_logit_diff_not_positive": PairItem(clean=GOOD[0], corrupt=GOOD[1], answer=w, wrong=a),
    }
    kept, stats = validate_items(hm, [good, *cases.values()], margin=-1e9)
    assert kept == [good.model_copy(update=dict(clean_logit_diff=kept[0].clean_logit_diff,
                                                corrupt_logit_diff=kept[0].corrupt_logit_diff))]
    assert stats["rejected"] == {r: 1 for r in cases}
    assert stats["candidates"] == stats["accepted"] + sum(stats["rejected"].values())
    # the margin: a corruption must lower the logit difference by at least `margin`
    kept, stats = validate_items(hm, [good], margin=1e9)
    assert not kept and stats["rejected"] == {"corruption_too_weak": 1}


def test_single_token_in_context(tiny_gpt2):
    assert single_token_in_context(tiny_gpt2, "the cat sat on the", " mat") == tiny_gpt2.token_id(" mat")
    assert single_token_in_context(tiny_gpt2, "the cat sat on the", " big mat") is None


def _items():
    return [PairItem(clean=GOOD[0], corrupt=GOOD[1], answer=" mary", wrong=" john", meta={"k": 1}),
            PairItem(clean="the capital of France is", corrupt="the capital of Paris is", answer=" Paris", wrong=" France")]


@pytest.mark.parametrize("fmt", ["jsonl", "auto-circuit"])
def test_export_import_round_trip(tmp_path, fmt):
    p = tmp_path / f"d.{'jsonl' if fmt == 'jsonl' else 'json'}"
    p.write_text(dumps(_items(), fmt))
    items, lines, got_fmt = read_items(p)
    assert got_fmt == fmt
    assert [it.key() for it in items] == [it.key() for it in _items()]
    if fmt == "jsonl":
        assert lines == [1, 2] and items[0].meta == {"k": 1}
        assert all(json.loads(ln)["clean"] for ln in p.read_text().splitlines())
    else:
        doc = json.loads(p.read_text())
        assert set(doc["prompts"][0]) == {"clean", "corrupt", "answers", "wrong_answers"}


@pytest.mark.parametrize("line3,msg", [
    ('{"clean": "a", "corrupt": "b", "answer": " x"', "line 3: not valid JSON"),
    ('{"clean": "a", "corrupt": "b", "answer": " x"}', "line 3: missing field wrong"),
    ('["a", "b"]', "line 3: expected a JSON object"),
    ('{"clean": "a", "corrupt": "b", "answers": [" x", " y"], "wrong_answers": [" z"]}', "line 3: 'answers' has 2 entries"),
])
def test_malformed_jsonl_names_the_line(tmp_path, line3, msg):
    good = dumps(_items(), "jsonl").splitlines()
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join([good[0], good[1], line3]) + "\n")
    with pytest.raises(DatasetError, match=msg):
        read_items(p)


def test_auto_circuit_error_names_the_line(tmp_path):
    text = dumps(_items(), "auto-circuit")
    doc = json.loads(text)
    del doc["prompts"][1]["corrupt"]
    p = tmp_path / "ac.json"
    p.write_text(json.dumps(doc, indent=1))
    start = next(i for i, ln in enumerate(p.read_text().splitlines(), 1) if "the capital" in ln) - 1
    with pytest.raises(DatasetError, match=rf"line {start} \(prompts\[1\]\): missing field corrupt"):
        read_items(p)


def test_misaligned_import_names_the_line_and_stores_nothing(tiny_gpt2, tmp_path):
    store = Store(tmp_path / "s.db")
    rows = [json.loads(x) for x in dumps(_items(), "jsonl").splitlines()]
    rows.append({"clean": "the cat sat on the mat", "corrupt": "the big cat sat on the mat", "answer": " mat", "wrong": " park"})
    p = tmp_path / "mis.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DatasetError, match=r"line 3: clean and corrupt have different token counts \(6 vs 7\)"):
        import_dataset(store, tiny_gpt2, p)
    assert store.list_datasets() == []
    assert store.query("select count(*) as n from pairs")[0]["n"] == 0


def test_import_stores_a_dataset(tiny_gpt2, tmp_path, capsys):
    store = Store(tmp_path / "s.db")
    a, w = _oriented(tiny_gpt2, *GOOD, " mary", " john")
    p = tmp_path / "ok.jsonl"
    p.write_text(dumps([PairItem(clean=GOOD[0], corrupt=GOOD[1], answer=a, wrong=w)], "jsonl"))
    ds = import_dataset(store, tiny_gpt2, p, margin=-1e9)
    assert ds.name == "ok" and ds.n_items == 1
    back = get_dataset(store, "ok")
    assert back.items[0].key() == ds.items[0].key()
    assert back.stats["candidates"] == 1 and back.stats["accepted"] == 1
    with pytest.raises(DatasetError, match="exists"):
        import_dataset(store, tiny_gpt2, p, margin=-1e9)
    store.close()
    # from the CLI, a taken name fails before any model loads (the model spec does not even exist)
    from tinykit import run_cli

    for args in (["--import", p], ["--task", "ioi", "--name", "ok"]):
        code, out, err = run_cli(capsys, "pairs", *args, "--store", tmp_path / "s.db", "--model", tmp_path / "nope",
                                 "--out", tmp_path / "x.json", "--format", "auto-circuit")
        assert code == 2 and "dataset 'ok' exists" in err and "--dataset ok" in err and err.count("\n") == 1


def test_import_of_a_huge_line_is_bounded(tmp_path):
    """pairs --import of a 50 MB line: refused with its line, read in bounded pieces (1 GiB over baseline)."""
    import subprocess
    import sys
    import textwrap

    p = tmp_path / "huge.jsonl"
    with open(p, "wb") as f:
        f.write(json.dumps({"clean": "a b", "corrupt": "a c", "answer": " x", "wrong": " y"}).encode() + b"\n")
        f.write(b'{"clean": "' + b"the cat " * (50 << 17) + b'", "corrupt": "x", "answer": " a", "wrong": " b"}\n')
    assert p.stat().st_size > 50_000_000
    code = textwrap.dedent(f"""
        import resource
        from autointerp.tasks import read_items
        vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30),) * 2)
        try:
            read_items({str(p)!r})
            print("read")
        except Exception as e:
            print(type(e).__name__, e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("DatasetError") and "huge.jsonl line 2: longer than 1024 kB" in r.stdout, (r.stdout, r.stderr[-400:])


def test_import_caps_texts_and_documents(tmp_path, monkeypatch):
    from autointerp.tasks import io

    p = tmp_path / "long.jsonl"
    p.write_text(json.dumps({"clean": "a " * 15_000, "corrupt": "b", "answer": " x", "wrong": " y"}) + "\n")
    with pytest.raises(DatasetError, match=r"long\.jsonl line 1: field clean has 30,000 characters, over the 20,000 limit"):
        read_items(p)
    ac = tmp_path / "ac.json"
    ac.write_text(dumps(_items(), "auto-circuit"))
    monkeypatch.setattr(io, "MAX_DOC_BYTES", 100)
    with pytest.raises(DatasetError, match="over the 0 MB limit; use JSON lines"):
        read_items(ac)
