"""The import contract of autointerp/ (rules and the allowed arrows: tests/layering_check.py).

KNOWN_VIOLATIONS lists what still breaks the contract, each entry a (file, rule) pair with the
reason. The test fails on any violation not listed, and on any listed one that is gone: the list
can only shrink. Fixing a site means deleting its entry here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from layering_check import ALLOWED, FACES, GROUND, allowed_is_acyclic, check_tree

ROOT = Path(__file__).resolve().parents[1] / "autointerp"

KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {
}


def test_allowed_arrows_are_a_dag_and_keep_the_faces_apart():
    assert allowed_is_acyclic() == []
    assert ALLOWED["core"] <= {"errors"}, "core imports no stage"
    for face in FACES - {"cli"}:
        assert not (ALLOWED[face] & FACES), f"{face} may not import another face"
    assert "investigate" not in ALLOWED["serve"], "serve must not import investigate"
    for stage, deps in ALLOWED.items():
        if stage not in FACES and stage not in {"__main__", "pipeline"}:
            assert not (deps & FACES), f"stage {stage} may not import a face"
            assert "pipeline" not in deps
    assert "explain" not in ALLOWED["score"] and "score" not in ALLOWED["explain"], "score and explain stay apart"
    for stage in ("mine", "explain", "score", "tasks", "patching", "models", "llm", "corpus", "validate", "compare"):
        assert "store" not in ALLOWED[stage], f"{stage} gets a Store object; it does not import store/"
    assert GROUND <= ALLOWED["mine"]


def test_autointerp_keeps_the_contract():
    violations, edges = check_tree(ROOT)
    found: dict[tuple[str, str], list[int]] = {}
    for v in violations:
        found.setdefault(v.key, []).append(v.line)
    new = {k: lines for k, lines in found.items() if k not in KNOWN_VIOLATIONS}
    gone = sorted(k for k in KNOWN_VIOLATIONS if k not in found)
    msg = []
    if new:
        msg.append("new violations of the layering (fix them; see tests/layering_check.py for the rules):")
        msg += [f"  {f}:{','.join(map(str, ls))}  {r}" for (f, r), ls in sorted(new.items())]
    if gone:
        msg.append("fixed, so delete from KNOWN_VIOLATIONS in tests/test_layering.py:")
        msg += [f"  {f}  {r}" for f, r in gone]
    assert not msg, "\n".join(msg)
    assert ("investigate", "patching") in edges and ("patching", "tasks") in edges  # the checker sees imports


def test_every_package_is_in_the_table():
    pkgs = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    pkgs |= {p.stem for p in ROOT.glob("*.py")}
    assert pkgs - set(ALLOWED) == set(), "add new packages to ALLOWED in tests/layering_check.py"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [p for p in root.rglob("*") if p.is_dir()] + [root]:
        (d / "__init__.py").touch()
    return root


def test_checker_fails_on_planted_violations(tmp_path):
    root = _write(tmp_path / "autointerp", {
        "errors.py": "class E(Exception): pass\n",
        "core/keys.py": "from ..errors import E\n",
        "core/bad.py": "from ..store import base\n",                                  # arrow core->store
        "store/base.py": ('def _x(): pass\n'
                          'def q(db):\n    return db.execute("select * from t")\n'),   # SQL at home: fine
        "mine/a.py": ('from ..store.base import _x\n'                                  # arrow + private
                      'def f(db):\n    db.execute("x")\n'                              # sql (call)
                      'Q = "insert into t values (1)"\n'),                             # sql (string)
        "mine/doc.py": '"""Reads rows: select a from b, as the store does."""\n',      # a docstring: fine
        "score/b.py": "import openai\nfrom ..explain import c\n",                      # openai + arrow
        "explain/c.py": "from ..score import b\n",                                     # arrow + cycle
        "llm/ok.py": "import openai\nimport tenacity\n",                               # at home: fine
        "patching/d.py": 'def h(L):\n    return f"blocks.{L}.attn.z", "blocks." + str(L)\n',  # hook names x2
        "core/e.py": 'def h(L):\n    return f"blocks.{L}.attn.z", f"L{L}/N{0}"\n',     # at home: fine
        "models/e.py": 'def h(L):\n    return f"blocks.{L}.mlp.post"\n',               # at home: fine
        "tasks/f.py": 'def u(l, i, k):\n    return f"L{l}/N{i}", f"L{l}/{k}{i}"\n',    # unit ids x2
        "serve/g.py": "from ..investigate import h\n",                                 # face -> face
        "investigate/h.py": "from ..patching import d\n",                              # fine
        "widgets/w.py": "from ..core import keys\n",                                   # unknown package
    })
    violations, edges = check_tree(root)
    got = {(v.file, v.rule) for v in violations}
    expected = {
        ("autointerp/core/bad.py", "arrow core->store"),
        ("autointerp/mine/a.py", "arrow mine->store"),
        ("autointerp/mine/a.py", "private store.base._x"),
        ("autointerp/mine/a.py", "sql"),
        ("autointerp/score/b.py", "openai"),
        ("autointerp/score/b.py", "arrow score->explain"),
        ("autointerp/explain/c.py", "arrow explain->score"),
        ("autointerp", "cycle explain->score->explain"),
        ("autointerp/patching/d.py", "hook-name"),
        ("autointerp/tasks/f.py", "unit-id"),
        ("autointerp/serve/g.py", "arrow serve->investigate"),
        ("autointerp/widgets", "unknown package (add it to ALLOWED)"),
    }
    assert got == expected
    assert sum(1 for v in violations if v.key == ("autointerp/mine/a.py", "sql")) == 2
    assert sum(1 for v in violations if v.key == ("autointerp/patching/d.py", "hook-name")) == 2
    assert sum(1 for v in violations if v.key == ("autointerp/tasks/f.py", "unit-id")) == 2
    assert ("investigate", "patching") in edges


def test_relative_imports_resolve_to_top_level_packages(tmp_path):
    root = _write(tmp_path / "autointerp", {
        "mine/sub/deep.py": "from ...corpus import x\nfrom .. import records\nfrom . import sibling\n",
        "mine/__init__.py": "from .records import r\nfrom ..models import m\n",
        "__main__.py": "from .cli import main\n",
        "store/base.py": "from ..core.units import Unit\n",
    })
    violations, edges = check_tree(root)
    assert violations == []
    assert edges == {("mine", "corpus"), ("mine", "models"), ("__main__", "cli"), ("store", "core")}


@pytest.mark.parametrize("src", ['X = "select a from b"', "import tenacity", 'f = lambda L: f"blocks.{L}.mlp.post"'])
def test_each_rule_is_reported_alone(tmp_path, src):
    root = _write(tmp_path / "autointerp", {"mine/x.py": src + "\n"})
    violations, _ = check_tree(root)
    assert len(violations) == 1 and violations[0].file == "autointerp/mine/x.py"


def test_module_cycles_and_private_names_inside_a_package(tmp_path):
    root = _write(tmp_path / "autointerp", {
        "errors.py": "class E(Exception): pass\n",
        "llm/base.py": "def get():\n    from .embedded import Emb\n    return Emb\n",   # a cycle through a local import
        "llm/embedded.py": "from .base import get\nclass Emb: pass\n",
        "llm/serve.py": "from .embedded import _cache\nfrom . import base\n",            # private across modules
        "llm/__init__.py": "from .base import get\n",                                    # re-exports: no cycle
        "llm/budget.py": "from ._util import x\n_y = 1\n",                               # a private module: fine here
        "llm/_util.py": "from .budget import _y\nx = 1\n",                               # private name + cycle
    })
    violations, _ = check_tree(root)
    got = {(v.file, v.rule) for v in violations}
    assert got == {
        ("autointerp/llm", "cycle llm._util->llm.budget->llm._util"),
        ("autointerp/llm", "cycle llm.base->llm.embedded->llm.base"),
        ("autointerp/llm/serve.py", "private llm.embedded._cache"),
        ("autointerp/llm/_util.py", "private llm.budget._y"),
    }


def test_settings_are_resolved_at_the_face_and_the_cli_mutates_no_global(tmp_path):
    root = _write(tmp_path / "autointerp", {
        "errors.py": "class E(Exception): pass\n",
        "config.py": "class Settings:\n    @classmethod\n    def load(cls):\n        return cls()\nFLAGS = {}\n",
        "cli/ok.py": "from ..config import Settings\ndef f():\n    return Settings.load()\n",        # at the face: fine
        "llm/bad.py": "from ..config import Settings\ndef f():\n    return Settings.load()\n",       # library code
        "cli/common.py": "class S:\n    pass\nSTATE = S()\n",
        "cli/flags.py": ("from .. import config\nfrom .common import STATE\nCACHE = {}\n"
                         "def cb(v):\n    config.FLAGS['k'] = v\n    STATE.debug = v\n    CACHE.setdefault(1, v)\n"
                         "    config.FLAGS.pop('k')\n"),                                               # lines 5-8
        "cli/glob.py": "X = 0\ndef f():\n    global X\n    X = 1\n",                                      # line 3
        "cli/local.py": ("def f(ctx, param):\n    d = {}\n    d['a'] = 1\n    ctx.meta['k'] = 1\n"
                         "    param.type = int\n    return d\n"),                                         # locals: fine
    })
    violations, _ = check_tree(root)
    got = sorted((v.file, v.rule, v.line) for v in violations)
    assert got == [("autointerp/cli/flags.py", "global-state", n) for n in (5, 6, 7, 8)] + [
        ("autointerp/cli/glob.py", "global-state", 3), ("autointerp/llm/bad.py", "settings-load", 3)]
