"""The serving benchmark's load generator against a trivial local HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.serving_bench import generate_load

pytestmark = pytest.mark.slow


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the benchmark's clients expect

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body == b"busy":  # ~20 ms of CPU: more than the clock ticks the CPU time is read in
            end = time.process_time() + 0.02
            while time.process_time() < end:
                pass
        status = 500 if body == b"fail" else 200
        self.send_response(status)
        if body == b"chunked":  # framing the socket generator must read too
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"2\r\n{}\r\n3\r\n[1]\r\n0\r\n\r\n")
            return
        if body == b"close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/invocations"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("client", ["socket", "httpx"])
@pytest.mark.parametrize("rows", [1, 100])
def test_counts_requests_rows_and_latency(server_url: str, rows: int, client: str) -> None:
    res = generate_load(
        server_url,
        [b"ok"],
        server="x",
        rows_per_request=rows,
        threads=2,
        seconds=0.5,
        warmup=0.2,
        client=client,
    )
    assert res.client == client and res.all_requests >= res.requests
    assert res.client_cpu_seconds > 0 and res.client_cpu_ms_per_request > 0
    assert res.requests > 0 and res.errors == 0
    assert res.rows_per_second == pytest.approx(res.requests_per_second * rows)
    assert res.requests_per_second == pytest.approx(res.requests / 0.5)
    assert 0 < res.p50_ms <= res.p99_ms


def test_counts_errors_apart_from_latencies(server_url: str) -> None:
    res = generate_load(server_url, [b"ok", b"fail"], threads=1, seconds=0.5, warmup=0.1)
    # One thread alternates the two bodies: about as many errors as successes.
    assert res.errors > 0 and res.requests > 0
    assert abs(res.errors - res.requests) <= 2


def test_refuses_non_local_targets() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        generate_load("http://example.com/invocations", [b"ok"], seconds=0.1)


def test_socket_generator_reads_chunked_answers_and_reconnects(server_url: str) -> None:
    res = generate_load(server_url, [b"chunked", b"close", b"ok"], threads=1, seconds=0.5, warmup=0.1)
    assert res.requests > 0 and res.errors == 0


def test_server_cpu_is_read_from_its_process(server_url: str) -> None:
    import os

    res = generate_load(server_url, [b"busy"], threads=1, seconds=0.5, warmup=0.1, server_pid=os.getpid())
    # The test server runs in this process: its CPU over the phase is this process's.
    assert res.server_cpu_seconds > 0 and res.server_cpu_ms_per_request > 0


WRK_REPORT = """Running 2s test @ http://127.0.0.1:5801/invocations
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.50us  300.10us   9.21ms   90.00%
    Req/Sec     4.90k   210.00     5.20k    70.00%
  Latency Distribution
     50%  750.00us
     75%    0.90ms
     90%    1.10ms
     99%    2.50ms
  9750 requests in 2.00s, 1.80MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 12
Requests/sec:   4875.00
Transfer/sec:    920.00KB
"""


def test_parse_wrk_reads_counts_errors_and_latency() -> None:
    from bench.serving_bench import parse_wrk

    parsed = parse_wrk(WRK_REPORT)
    assert parsed == {
        "requests": 9750, "non_2xx": 12, "socket_errors": 3, "p50_ms": 0.75, "p99_ms": 2.5,
    }  # fmt: skip
    with pytest.raises(ValueError, match="request count"):
        parse_wrk("wrk: connection refused")


@pytest.mark.skipif(not __import__("shutil").which("wrk"), reason="wrk is not installed")
def test_wrk_generator_counts_requests_and_errors(server_url: str) -> None:
    res = generate_load(
        server_url, [b"ok", b"fail"], threads=2, seconds=1, warmup=0, client="wrk", rows_per_request=1
    )
    assert res.client == "wrk" and res.all_requests == res.requests + res.errors
    assert res.requests > 0 and res.errors > 0 and abs(res.requests - res.errors) <= res.all_requests // 4
    assert 0 < res.p50_ms <= res.p99_ms and res.client_cpu_seconds > 0
