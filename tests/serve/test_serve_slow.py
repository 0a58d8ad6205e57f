"""The viewer against idle and slow clients (real sockets on 127.0.0.1): a half-sent or trickled
request is closed within the read timeout, connections are bounded, and a normal request is
answered while 300 idle connections are open, in a server limited to 256 file descriptors.
Unit ids that do not parse to a sane size answer 400."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from populate import build_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("slow") / "autointerp.db"
    build_store(p).close()
    return p


@pytest.fixture
def quick_server(store_path):
    from autointerp.serve import make_server

    srv = make_server(store_path, "127.0.0.1", 0, quiet=True, read_timeout=1.5, max_connections=8)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _closed_within(sock, limit: float) -> float | None:
    """Seconds until the server closes this connection (recv gives b'' or a reset), None if not by `limit`."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


def test_half_sent_request_is_closed(quick_server):
    port = quick_server.server_address[1]
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTT")
    took = _closed_within(s, 6.0)
    assert took is not None and took < 1.5 + 1.5, took
    s.close()


def test_trickled_headers_are_closed_by_the_total_read_timeout(quick_server):
    port = quick_server.server_address[1]
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\n")
    t0 = time.monotonic()
    closed = None
    for ch in b"X-Slow: " + b"a" * 40:             # one byte every 0.3 s: each read well within 1.5 s
        try:
            s.sendall(bytes([ch]))
        except OSError:
            closed = time.monotonic() - t0
            break
        time.sleep(0.3)
        s.settimeout(0.01)
        try:
            if s.recv(1) == b"":
                closed = time.monotonic() - t0
                break
        except socket.timeout:
            pass
        except OSError:
            closed = time.monotonic() - t0
            break
    assert closed is not None and closed < 1.5 + 1.5, closed
    s.close()


def test_connections_bounded_and_normal_request_answered(quick_server):
    port = quick_server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
    time.sleep(1.2)                                  # idle long enough to be evicted for a newcomer
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        assert r.status == 200
    assert len(quick_server._conns) <= 8
    for s in idle:
        s.close()


@pytest.mark.parametrize("path", ["/unit/tiny-llama/L2/N" + "9" * 5000, "/unit/tiny-llama/L2/N%D9%A3",
                                  "/unit/tiny-llama/L" + "1" * 30 + "/H1", "/circuit/" + "9" * 5000, "/circuit/%D9%A3"])
def test_unit_ids_of_insane_size_are_400(quick_server, path):
    port = quick_server.server_address[1]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
    assert e.value.code == 400


def test_300_idle_connections_under_a_256_fd_limit(store_path):
    """The issue's probe: 300 half-open connections to a viewer limited to 256 descriptors; a
    normal request must still be answered (it was not: one thread and one fd per connection)."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
            "from autointerp.cli import main; main(sys.argv[1:])")
    p = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", "0", "--quiet", "--store", str(store_path)],
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert "http://127.0.0.1:" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        idle = []
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")    # never finished
            idle.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/search?q=day", timeout=30) as r:
            assert r.status == 200
        assert time.monotonic() - t0 < 20
        for s in idle:
            s.close()
    finally:
        p.terminate()
        p.wait(10)
