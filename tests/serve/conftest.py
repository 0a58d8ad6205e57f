import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from populate import build_store  # noqa: E402


BAD_REPORTS = {
    "badimage0001": "![x]",
    "badimage0002": "# Report\n\n![x] not an image\n#tag\n![a](b c)\n- item L2/H1\n<script>alert(1)</script>",
}


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
    s.close()
    srv = make_server(p, "127.0.0.1", 0, quiet=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}", p
    srv.shutdown()
    srv.server_close()
