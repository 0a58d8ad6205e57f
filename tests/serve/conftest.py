import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from populate import build_store  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A viewer on 127.0.0.1 at a free port over a populated store: (base_url, store_path)."""
    from autointerp.serve import make_server

    p = tmp_path_factory.mktemp("serve") / "autointerp.db"
    s = build_store(p)
    with s.tx():  # an explanation with markup in it: the viewer must escape it
        s.db["explanations"].insert(dict(key="xss", model_id="tiny-llama", unit="L0/N7", layer=0, explainer="llm-evil",
                                         method="chat", text="<script>alert(1)</script> & <b>bold</b>", created_at="x"))
    s.close()
    srv = make_server(p, "127.0.0.1", 0, quiet=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}", p
    srv.shutdown()
    srv.server_close()
