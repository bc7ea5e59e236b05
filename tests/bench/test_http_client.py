"""The API benchmark's own HTTP client (bench/api_vs_lnbits.py, `Http`) against a real HTTP/1.1
server: keep-alive reuse, Content-Length and chunked bodies, bodiless answers, a server that
closes the connection, and a reconnect after an idle close. Its figures rest on it."""

import importlib.util
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench_module():
    if "api_vs_lnbits" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "api_vs_lnbits", ROOT / "bench/api_vs_lnbits.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["api_vs_lnbits"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["api_vs_lnbits"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set = set()

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        Handler.connections.add(self.client_address)
        received = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps(
            {"echo": json.loads(received), "auth": self.headers["Authorization"]}
        ).encode()
        self._send(201, answer, Content_Length=str(len(answer)))

    def do_GET(self) -> None:
        Handler.connections.add(self.client_address)
        if self.path == "/chunked":
            chunks = [b'{"parts": ', b'"one', b' two"}']
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
            self._send(200, body, Transfer_Encoding="chunked")
        elif self.path == "/empty":
            self._send(204, b"")
        elif self.path == "/close":
            self._send(200, b"not json", Content_Length="8", Connection="close")
            self.close_connection = True
        else:
            self._send(404, b'{"error": 1}', Content_Length="12")


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.connections = set()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_requests_on_one_keep_alive_connection(server):
    client = _bench_module().Http(server, {"Authorization": "Bearer k"})
    for index in range(3):
        status, payload = client.request("POST", "/pay", {"n": index})
        assert (status, payload) == (201, {"echo": {"n": index}, "auth": "Bearer k"})
    assert client.request("GET", "/chunked") == (200, {"parts": "one two"})
    assert client.request("GET", "/empty") == (204, None)
    assert client.request("GET", "/missing") == (404, {"error": 1})
    assert len(Handler.connections) == 1  # all on one connection
    client.close()


def test_a_connection_the_server_closes_is_reopened(server):
    client = _bench_module().Http(server, {})
    assert client.request("GET", "/close") == (200, "not json")
    assert client.sock is None
    assert client.request("GET", "/empty") == (204, None)
    client.sock.close()  # as if the server had dropped the idle connection
    client.sock = _reconnected_dead_socket(client)
    assert client.request("POST", "/pay", {"again": True})[0] == 201
    assert len(Handler.connections) == 3
    client.close()


def _reconnected_dead_socket(client):
    """A socket the server has closed: the client's next send or read fails on it."""
    import socket

    dead = socket.create_connection(("127.0.0.1", client.port))
    dead.shutdown(socket.SHUT_RDWR)
    return dead


def _pay(port: int, bolt11s: list[str], *, seconds: float) -> dict:
    """One benchmark client paying `bolt11s` against the test server; `seconds` 0 is a
    fixed-count run (every invoice), more is a timed one."""
    bench = _bench_module()
    job = bench.ClientJob("satledger", "pay", port, {}, bolt11s=bolt11s)
    start_at = time.time() + 0.05
    out: dict = {}
    bench._client_thread(job, start_at, start_at + seconds, out)
    return out


def test_a_fixed_count_payer_takes_every_invoice(server):
    out = _pay(server, [f"lnbc{i}" for i in range(7)], seconds=0)
    assert (out["used"], out["ran_out"], len(out["latencies"])) == (7, False, 7)


def test_a_timed_payer_stops_at_the_deadline_and_says_what_it_took(server):
    invoices = [f"lnbc{i}" for i in range(1_000_000)]
    out = _pay(server, invoices, seconds=0.3)
    assert 0 < out["used"] < len(invoices)  # the rest goes back for the next round
    assert out["used"] == len(out["latencies"])
    assert out["ran_out"] is False


def test_a_timed_payer_whose_invoices_run_out_early_reports_it(server):
    began = time.monotonic()
    out = _pay(server, ["lnbc1", "lnbc2", "lnbc3"], seconds=30)
    assert (out["used"], out["ran_out"]) == (3, True)
    assert time.monotonic() - began < 10  # it did not wait for the deadline
