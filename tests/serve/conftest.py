import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from populate import MODEL, T0, build_store  # noqa: E402

from autointerp.store import pack_f16, pack_i32  # noqa: E402

LONG_UNIT = "L1/N9"   # one record of 300 tokens (one of them 240 characters long), activations of both signs
LONG_TOKENS = [f" word{i}" for i in range(300)]
LONG_TOKENS[150] = " " + "x" * 240
LONG_ACTS = [round((1.0 if i % 3 == 0 else -0.15 if i % 3 == 1 else 0.0) * (1 + i % 7) / 7, 3) for i in range(300)]


BAD_REPORTS = {
    "badimage0001": "![x]",
    "badimage0002": "# Report\n\n![x] not an image\n#tag\n![a](b c)\n- item L2/H1\n<script>alert(1)</script>",
}


def add_long_record(s) -> None:
    with s.tx():
        s.db["corpora"].insert(dict(id="corpus-long", name="long", model_id=MODEL, context_len=300, n_contexts=1,
                                    settings_json="{}", created_at=T0))
        s.db["contexts"].insert(dict(corpus_id="corpus-long", idx=0, token_ids=pack_i32(range(300)),
                                     tokens_json=json.dumps(LONG_TOKENS)))
        s.db["mining_runs"].insert(dict(id="run-long", model_id=MODEL, corpus_id="corpus-long", settings_json="{}",
                                        n_done=1, status="done", created_at=T0, updated_at=T0))
        s.db["records"].insert(dict(run_id="run-long", unit=LONG_UNIT, kind="top", bin=0, ctx_idx=0,
                                    max_act=max(LONG_ACTS), acts=pack_f16(LONG_ACTS), extra=None))


@pytest.fixture
def long_record():
    """(unit, activations) of the long record add_long_record stores."""
    return LONG_UNIT, LONG_ACTS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A viewer on 127.0.0.1 at a free port over a populated store: (base_url, store_path)."""
    from autointerp.serve import make_server

    p = tmp_path_factory.mktemp("serve") / "autointerp.db"
    s = build_store(p)
    with s.tx():  # an explanation with markup in it: the viewer must escape it
        s.db["explanations"].insert(dict(key="xss", model_id="tiny-llama", unit="L0/N7", layer=0, explainer="llm-evil",
                                         method="chat", text="<script>alert(1)</script> & <b>bold</b>", created_at="x"))
    # investigations whose reports once hung the renderer (a line starting '![' that is not an image)
    for inv_id, md in BAD_REPORTS.items():
        s.put_investigation(inv_id, task="ioi", model_id="tiny-llama", settings={})
        s.update_investigation(inv_id, status="done", report_md=md)
    add_long_record(s)
    s.close()
    srv = make_server(p, "127.0.0.1", 0, quiet=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}", p
    srv.shutdown()
    srv.server_close()
