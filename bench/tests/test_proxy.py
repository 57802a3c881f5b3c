"""The delay proxy adds its round trip and counts round trips exactly, for RESP (a real
redis-server) and for HTTP (a kept-alive HTTP/1.1 server), on loopback."""

import http.client
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from bench.proxy import DelayProxy

RTT_MS = 60


@pytest.fixture
def proxied(redis_server):
    with DelayProxy(redis_server.port, rtt_ms=RTT_MS) as proxy:
        client = redis.Redis(port=proxy.port, driver_info=None)  # no CLIENT SETINFO, as the app's clients
        client.ping()  # connected: the handshake is not in what the tests measure
        yield proxy, client
        client.close()


def test_it_adds_the_round_trip_to_each_command_and_counts_one_per_command(proxied):
    proxy, client = proxied
    with proxy.measure() as seen:
        started = time.perf_counter()
        for i in range(5):
            client.set(f"proxy:{i}", i)
        elapsed = time.perf_counter() - started
    assert seen.counts.round_trips == 5 and seen.counts.connections == 0
    assert 5 * RTT_MS / 1000 <= elapsed < 5 * RTT_MS / 1000 + 0.5


def test_it_counts_a_pipeline_as_one_round_trip_however_long(proxied):
    proxy, client = proxied
    pipe = client.pipeline(transaction=False)
    for i in range(5000):  # ~150 kB up: several chunks, one burst
        pipe.set(f"proxy:{i}", b"x" * 8)
    with proxy.measure() as seen:
        started = time.perf_counter()
        replies = pipe.execute()
        elapsed = time.perf_counter() - started
    assert replies == [True] * 5000
    assert seen.counts.round_trips == 1 and seen.counts.bytes_up > 2 * (1 << 16)
    assert RTT_MS / 1000 <= elapsed < RTT_MS / 1000 + 0.5


def test_it_counts_a_request_sent_before_the_previous_answer_is_read_once(proxied):
    """The review's one-ahead stream: send the next request, then read the current answer."""
    proxy, client = proxied
    connection = client.connection_pool.get_connection()
    try:
        with proxy.measure() as seen:
            connection.send_command("PING")
            for _ in range(3):
                connection.read_response()
                connection.send_command("PING")
            assert connection.read_response() == b"PONG"
    finally:
        client.connection_pool.release(connection)
    assert seen.counts.round_trips == 4


def test_it_counts_a_pipeline_written_in_pieces_once_and_the_next_command_after_its_answers_again(redis_server):
    """Rule 2 of `bench.proxy`: writes closer together than RTT/2 are one burst, even where an
    answer to an earlier request reaches the client between them; a command written after the
    answers is a round trip of its own. (Wide windows: a loaded machine oversleeps.)"""
    rtt = 0.3
    ping = b"*1\r\n$4\r\nPING\r\n"
    with DelayProxy(redis_server.port, rtt_ms=rtt * 1000) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
        raw.sendall(ping)  # connected (the proxy's handshake delay): not in what is measured
        assert _read_exactly(raw, len(b"+PONG\r\n")) == b"+PONG\r\n"
        before = proxy.counts()
        raw.sendall(ping)  # burst 1
        sent = time.monotonic()
        time.sleep(0.75 * rtt)
        raw.sendall(ping)  # a pipeline's first piece: no answer yet
        first_piece = time.monotonic()
        assert select.select([raw], [], [], 5)[0]  # the first PING's answer arrives (not read)
        raw.sendall(ping)  # the pipeline's second piece, at once: no wait in between
        second_piece = time.monotonic()
        assert first_piece - sent < rtt and second_piece - first_piece < rtt / 2, "the machine stalled: rerun"
        assert _read_exactly(raw, 3 * len(b"+PONG\r\n")) == 3 * b"+PONG\r\n"
        pipelined = proxy.counts() - before
        raw.sendall(ping)  # after reading every answer: a round trip of its own
        assert _read_exactly(raw, len(b"+PONG\r\n")) == b"+PONG\r\n"
        counts = proxy.counts() - before
    assert pipelined.round_trips == 1 and counts.round_trips == 2 and counts.connections == 0


def _read_exactly(raw, size):
    data = b""
    while len(data) < size:
        chunk = raw.recv(size - len(data))
        assert chunk, "the proxy closed the connection"
        data += chunk
    return data


def test_it_counts_a_new_connection_and_delays_it_by_a_handshake(redis_server):
    with DelayProxy(redis_server.port, rtt_ms=RTT_MS) as proxy:
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
            raw.sendall(b"PING\r\n")
            assert raw.recv(100) == b"+PONG\r\n"
        elapsed = time.perf_counter() - started
        counts = proxy.counts()
    assert counts.connections == 1 and counts.round_trips == 1 and counts.waits == 2
    assert counts.bytes_up == 6 and counts.bytes_down == 7
    assert 2 * RTT_MS / 1000 <= elapsed < 2 * RTT_MS / 1000 + 0.5


def test_it_takes_a_new_round_trip_at_once_and_adds_nothing_at_zero(redis_server):
    with DelayProxy(redis_server.port, rtt_ms=0) as proxy, redis.Redis(port=proxy.port, driver_info=None) as client:
        client.ping()
        with proxy.measure() as seen:
            started = time.perf_counter()
            for _ in range(50):
                client.ping()
            fast = time.perf_counter() - started
            proxy.rtt_ms = RTT_MS
            started = time.perf_counter()
            client.ping()
            slow = time.perf_counter() - started
        assert seen.counts.round_trips == 51
    assert fast < 0.5 and slow >= RTT_MS / 1000


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept alive

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = b"[" + body + b"]"
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_it_delays_and_counts_http_requests_on_a_kept_alive_connection():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with DelayProxy(server.server_address[1], rtt_ms=RTT_MS) as proxy:
            connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            started = time.perf_counter()
            for i in range(3):
                connection.request("POST", "/pipeline", body=b'["PING"]')
                response = connection.getresponse()
                assert response.status == 200 and response.read() == b'[["PING"]]'
            elapsed = time.perf_counter() - started
            connection.close()
            counts = proxy.counts()
    finally:
        server.shutdown()
        server.server_close()
    assert counts.round_trips == 3 and counts.connections == 1
    assert 4 * RTT_MS / 1000 <= elapsed < 4 * RTT_MS / 1000 + 0.5
