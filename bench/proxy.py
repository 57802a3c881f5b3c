"""A delay proxy: a TCP proxy on loopback that gives the link a set round trip, and counts
the round trips a client makes through it.

    python -m bench.proxy --target 127.0.0.1:6379 --rtt-ms 20      # prints the port to use

Each chunk is forwarded RTT/2 after it arrived, in each direction, without holding up the
chunks behind it (a pipeline keeps its shape: a request of 1,000 commands still costs one
round trip). A new connection waits one RTT before its first bytes go on, as a TCP handshake
does. It knows nothing of the protocol, so it sits as well in front of a redis-server (RESP)
as in front of an HTTP endpoint (a REST bridge): any TCP port.

What it counts, per connection and summed (`Counts`):
- `round_trips`: request bursts, client to server: the times the client waited on the server.
  One per command sent alone, one per pipeline however many writes it takes, one per HTTP
  request on a kept-alive connection. A burst starts with client bytes that arrive
  1. after the proxy delivered the client anything since the current burst started (or
     first on a new connection): a client cannot have waited for an answer it has not had;
  2. and at least RTT/2 after the client's previous bytes on that connection. A client that
     waits for an answer writes again no sooner than one RTT after its previous write (RTT/2
     for the request to reach the server, RTT/2 for the answer to come back), so writes
     closer together than that were made without waiting, even where an answer to something
     sent earlier landed between them (a client that pipelines while answers stream back).
     Half an RTT leaves the other half as margin for the scheduling of client and proxy.
  By rule 1 the pieces of one pipeline written less than one RTT apart are one burst
  whatever else happens: no answer to its first piece can reach the client sooner. A writer
  that stalls a whole RTT or more between two pieces (a CPU-starved machine at RTT 0, where
  an answer comes back at once) cannot be told from one that waited, and it cost as much
  time: tests therefore count at a round trip of tens of milliseconds, never at 0. A stream
  that sends its next request before reading the current answer still counts one per
  request, since it cannot send it before the previous answer.
- `connections`: connections opened (each cost one more round trip, its handshake);
- bytes each way.

Used by `bench.latency` (jobs at 0–80 ms) and by the tests that count the round trips of a
page or a job (`bench/tests/test_proxy.py`, `continuity/tests/test_round_trips.py`). Not
imported by the apps.
"""

import argparse
import asyncio
import collections
import contextlib
import signal
import sys
import threading
from dataclasses import dataclass

CHUNK = 1 << 16


@dataclass(frozen=True)
class Counts:
    """What went through the proxy (since it started, or between two readings)."""

    round_trips: int = 0
    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def __sub__(self, other):
        return Counts(self.round_trips - other.round_trips, self.connections - other.connections,
                      self.bytes_up - other.bytes_up, self.bytes_down - other.bytes_down)

    @property
    def waits(self):
        """Times the client waited on the network: its request bursts and its handshakes."""
        return self.round_trips + self.connections


class _Link:
    """One client connection: whether the server answered since the client's last burst,
    and when the client's last bytes arrived (the proxy's loop clock)."""

    def __init__(self, number):
        self.number = number
        self.answered = True  # the first bytes start a burst
        self.last_up = self.last_half = None


class DelayProxy:
    """The proxy, run on its own event loop in a daemon thread (`start`/`stop`, or `with`).
    `rtt_ms` may be changed while it runs; `counts()` reads the counters, `measure()` counts
    what happens inside a `with` block."""

    def __init__(self, target_port, *, target_host="127.0.0.1", rtt_ms=0.0, listen_host="127.0.0.1",
                 listen_port=0, keep=0):
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.rtt_ms = rtt_ms
        self.port = None
        self._lock = threading.Lock()
        self._round_trips = self._connections = self._up = self._down = 0
        self._loop = self._server = self._thread = None
        self._ready = threading.Event()
        self._tasks = set()
        # The first bytes of the last `keep` bursts (connection number, bytes): what a test
        # shows when it counted more round trips than it allows.
        self.bursts = collections.deque(maxlen=keep or None) if keep else None

    # --- counters ----------------------------------------------------------------------
    def counts(self):
        with self._lock:
            return Counts(self._round_trips, self._connections, self._up, self._down)

    @contextlib.contextmanager
    def measure(self):
        """Counts of what went through inside the block: `with proxy.measure() as seen: …;
        seen.counts`."""
        box = _Measured(self)
        yield box
        box.close()

    # --- running -----------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run, name=f"delay-proxy-{self.target[1]}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self.port is None:
            raise RuntimeError("the delay proxy did not start")
        return self

    def stop(self):
        if self._loop is not None and self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, *self.listen))
            self.port = self._server.sockets[0].getsockname()[1]
        finally:
            self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _close(self):
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def _half(self):
        return max(float(self.rtt_ms), 0.0) / 2000.0

    async def _handle(self, client_reader, client_writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        writers, pumps = [client_writer], []
        with self._lock:
            self._connections += 1
            link = _Link(self._connections)
        try:
            if self.rtt_ms:
                await asyncio.sleep(2 * self._half)  # the handshake's round trip
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            writers.append(server_writer)
            pumps = [asyncio.ensure_future(self._pump(client_reader, server_writer, link, upward=True)),
                     asyncio.ensure_future(self._pump(server_reader, client_writer, link, upward=False))]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait(pumps, timeout=2 * self._half + 1)
        except asyncio.CancelledError:
            pass  # the proxy stops: close both ends below
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in writers:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            self._tasks.discard(task)

    async def _pump(self, reader, writer, link, *, upward):
        """Forward `reader` to `writer`, each chunk `_half` after it arrived; count bursts
        on the way up and answers on the way down (when they reach the client)."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                if not upward:
                    link.answered = True  # the client has an answer from here on
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                now = loop.time()
                if not data:
                    queue.put_nowait((now + self._half, None))
                    break
                with self._lock:
                    if upward:
                        self._up += len(data)
                        # RTT/2 as it was when the previous bytes came, or is now if less (`rtt_ms` changed)
                        waited = link.last_up is None or now - link.last_up >= min(link.last_half, self._half)
                        if link.answered and waited:  # a new burst (the module docstring's rules 1 and 2)
                            self._round_trips += 1
                            link.answered = False
                            if self.bursts is not None:
                                self.bursts.append((link.number, bytes(data[:80])))
                        link.last_up, link.last_half = now, self._half
                    else:
                        self._down += len(data)
                queue.put_nowait((now + self._half, data))
            await sender
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


class _Measured:
    def __init__(self, proxy):
        self.proxy, self.before, self._counts = proxy, proxy.counts(), None

    def close(self):
        self._counts = self.proxy.counts() - self.before

    @property
    def counts(self):
        return self._counts if self._counts is not None else self.proxy.counts() - self.before

    def bursts(self):
        """The first bytes of each burst counted inside the block (when the proxy keeps them)."""
        kept = list(self.proxy.bursts or ())
        return kept[len(kept) - self.counts.round_trips:] if self.counts.round_trips else []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port to forward to (a redis-server, an HTTP endpoint)")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--listen-port", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = DelayProxy(int(port), target_host=host or "127.0.0.1", rtt_ms=args.rtt_ms,
                       listen_port=args.listen_port).start()
    print(f"127.0.0.1:{proxy.port} -> {args.target}, round trip {args.rtt_ms:g} ms", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    proxy.stop()
    counts = proxy.counts()
    print(f"{counts.round_trips} round trips, {counts.connections} connections, {counts.bytes_up} bytes up, "
          f"{counts.bytes_down} bytes down", file=sys.stderr)


if __name__ == "__main__":
    main()
