"""A local endpoint that speaks Upstash's REST protocol in front of a real redis-server.

A protocol bridge, like Upstash's own serverless-redis-http (SRH): it is not Upstash and
emulates none of its engine. What it does is what Upstash's REST documentation describes, so
that the dashboard's REST transport (`continuity.keyspace.rest`) and the official
`upstash-redis` client can be run against the redis-server the tests and `make run` start:

- `POST /` with a JSON array (`["SET", "k", "v"]`) → `{"result": …}`, or `{"error": "…"}` with
  HTTP 400; `POST /pipeline` with an array of arrays → `[{"result"}|{"error"}, …]` (not atomic,
  in order, one connection); `POST /multi-exec` → the same, inside MULTI/EXEC (no WATCH);
  `GET|POST /command/arg/…` (a POST body is the last argument, raw bytes);
- `Authorization: Bearer <token>` (or `?_token=`): 401 `{"error": "WRONGPASS invalid or
  missing auth token"}` otherwise. Each token maps to a Redis user (username, password): the
  standard token, a read-only one (`default_ro`, `+@read -@dangerous` without SCAN, as
  Upstash documents it) or an ACL user's (`ACL RESTTOKEN`) are Redis ACL users behind it, so Redis itself
  refuses what that token may not do;
- `Upstash-Encoding: base64`: every string of a reply base64-encoded except "OK"; without it,
  bytes that are not UTF-8 become U+FFFD, as Upstash documents;
- a request over `max_request_bytes` (Upstash: 10 MB by default) answers HTTP 400
  `{"error": "ERR max request size exceeded"}`; with `rate_limit=(n, seconds)` a request past
  n in the window answers HTTP 429; after `limit_requests(n, k)`, the k requests after the
  next n (every one, without k) answer HTTP 429 with Upstash's documented "ERR max requests
  limit exceeded. Limit: …" and run nothing (a limit reached in the middle of a job);
- HTTP/1.1 with kept-alive connections (stdlib `ThreadingHTTPServer`, one thread per client
  connection), and an `Upstash-Sync-Token` on every answer (a counter), which clients send back.

Run alone: `python -m dashboard.devtools.restbridge --redis redis://127.0.0.1:6379/0 --port 8079`
with the token in `RESTBRIDGE_TOKEN`.
"""

import argparse
import binascii
import itertools
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

import hiredis
import orjson

UNAUTHORIZED = "WRONGPASS invalid or missing auth token"
TOO_LARGE = "ERR max request size exceeded"
# Upstash's wording when a database's request limit is reached (its troubleshooting page).
LIMIT_EXCEEDED = ("ERR max requests limit exceeded. Limit: {limit}, Usage: {limit}. See "
                  "https://upstash.com/docs/redis/troubleshooting/max_requests_limit for details")
# Commands that keep state on a connection or block it: refused, as on Upstash's REST API.
REFUSED = frozenset({"WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD", "SELECT", "AUTH", "HELLO", "SUBSCRIBE",
                     "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "MONITOR", "RESET", "QUIT", "SYNC",
                     "PSYNC", "BLPOP", "BRPOP", "BLMOVE", "BZPOPMIN", "BZPOPMAX", "XREAD", "XREADGROUP", "WAIT"})
# Upstash's read-only token, as its documentation describes the read-only user: "+@read
# -@dangerous (revokes dangerous commands such as KEYS, SCAN)". Redis 7 does not count SCAN as
# dangerous, so it is revoked by name here; scripts (@scripting) are not granted at all.
READ_ONLY_ACL = ("on", "+@read", "-@dangerous", "-scan", "~*", "&*")


class RedisError(Exception):
    """The redis-server behind the bridge could not be reached."""


def _pack(args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Resp:
    """One RESP2 connection to the redis-server, authenticated as one user. Replies keep
    Redis's own error text (prefix included), as Upstash passes it on."""

    def __init__(self, address, db, user, password, timeout):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        hello = []
        if password is not None:
            hello.append([b"AUTH", *([user.encode()] if user else []), password.encode()])
        if db:
            hello.append([b"SELECT", str(db).encode()])
        for reply in self.call(hello):
            if isinstance(reply, hiredis.ReplyError):
                raise RedisError(f"the bridge could not sign in to Redis as {user or 'default'}: {reply}")

    def call(self, commands):
        """The replies of `commands` (lists of bytes), sent in one write."""
        if not commands:
            return []
        self.sock.sendall(b"".join(_pack(command) for command in commands))
        replies = []
        while len(replies) < len(commands):
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(1 << 16)
                if not data:
                    raise RedisError("the redis-server closed the connection")
                self.reader.feed(data)
                continue
            replies.append(reply)
        return replies

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _encode(value, base64_strings):
    """A Redis reply as JSON: strings base64 (except "OK") or UTF-8 text with U+FFFD."""
    if isinstance(value, bytes):
        if not base64_strings:
            return value.decode("utf-8", "replace")
        return "OK" if value == b"OK" else _b2a(value, newline=False).decode("ascii")
    if isinstance(value, list):
        if not base64_strings:
            return [_encode(item, False) for item in value]
        # A review page's reply holds tens of thousands of strings: no call per string (the
        # bridge's work is the far side's, on the link's critical path in a benchmark).
        out = []
        for item in value:
            kind = type(item)
            if kind is bytes:
                out.append("OK" if item == b"OK" else _b2a(item, newline=False).decode("ascii"))
            elif kind is int:
                out.append(item)
            else:
                out.append(_encode(item, True))
        return out
    if isinstance(value, hiredis.ReplyError):
        return str(value)
    return value


_b2a = binascii.b2a_base64


def _dumps(payload):
    """`payload` as compact UTF-8 JSON: orjson (a review page's answer is ~300 kB, encoded on
    the benchmark's critical path), json where orjson refuses (text it cannot encode)."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _entry(reply, base64_strings):
    if isinstance(reply, hiredis.ReplyError):
        return {"error": str(reply)}
    return {"result": _encode(reply, base64_strings)}


class RestBridge:
    """The bridge (see the module docstring). `tokens`: {token: (username or None, password
    or None)}; None/None signs in as the redis URL's own user."""

    def __init__(self, redis_url, tokens, *, host="127.0.0.1", port=0, max_request_bytes=10 * 1024 * 1024,
                 rate_limit=None, timeout=10.0):
        parts = urlsplit(redis_url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.db = int((parts.path or "/0").strip("/") or 0)
        self.default_user = (unquote_to_bytes(parts.username).decode() if parts.username else None,
                             unquote_to_bytes(parts.password).decode() if parts.password else None)
        self.tokens = dict(tokens)
        self.max_request_bytes = max_request_bytes
        self.rate_limit = rate_limit
        self.timeout = timeout
        self.requests = 0  # HTTP requests answered with a Redis reply (tests count round trips)
        self.last_sync_token = None  # the last Upstash-Sync-Token a client sent
        self._idle = {}
        self._lock = threading.Lock()
        self._window = (0.0, 0)
        self._allowed = self._refused = None  # `limit_requests`
        self._served = 0
        self._sync = itertools.count(1)
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self._thread = None

    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(target=self.server.serve_forever, name="restbridge", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for connections in self._idle.values():
                for connection in connections:
                    connection.close()
            self._idle.clear()

    # --- Redis connections, per user ---------------------------------------------------------
    def _take(self, credentials):
        with self._lock:
            idle = self._idle.get(credentials)
            if idle:
                return idle.pop()
        user, password = credentials
        if password is None:
            user, password = self.default_user
        return _Resp(self.address, self.db, user, password, self.timeout)

    def _give(self, credentials, connection):
        with self._lock:
            self._idle.setdefault(credentials, []).append(connection)

    def run(self, credentials, commands, *, transaction=False):
        """Replies of `commands` on one connection of the token's user (MULTI/EXEC around
        them for a transaction: then the EXEC reply, or its error)."""
        connection = self._take(credentials)
        try:
            if transaction:
                replies = connection.call([[b"MULTI"], *commands, [b"EXEC"]])
                result = replies[-1]
            else:
                result = connection.call(commands)
        except (OSError, RedisError):
            connection.close()
            raise
        self._give(credentials, connection)
        return result

    def limit_requests(self, allowed, refused=None):
        """Serve `allowed` more requests, then answer the next `refused` (None: every one)
        with HTTP 429 and Upstash's "max requests limit exceeded" (nothing runs), then serve
        again. `limit_requests(None)` serves every request again at once."""
        with self._lock:
            self._allowed, self._refused, self._served = allowed, refused, 0

    def _over_limit(self):
        """The 429 error of a request past `limit_requests`, or None (counting this one)."""
        with self._lock:
            if self._allowed is None:
                return None
            self._served += 1
            past = self._served - self._allowed
            if past <= 0 or (self._refused is not None and past > self._refused):
                return None
            return LIMIT_EXCEEDED.format(limit=self._allowed)

    def _over_rate(self):
        if not self.rate_limit:
            return False
        limit, seconds = self.rate_limit
        with self._lock:
            start, count = self._window
            now = time.monotonic()
            if now - start >= seconds:
                start, count = now, 0
            self._window = (start, count + 1)
            return count + 1 > limit

    def _handler(bridge):  # noqa: N805 - the handler class closes over the bridge
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "restbridge"

            def setup(self):
                super().setup()
                # One write per answer and no Nagle: a kept-alive connection's small answers
                # would otherwise wait for the client's delayed ACK (40 ms each).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                return None

            def _answer(self, status, payload):
                body = _dumps(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Upstash-Sync-Token", str(next(bridge._sync)))
                self._headers_buffer.append(b"\r\n" + body)
                self.flush_headers()

            def _credentials(self, query):
                header = self.headers.get("Authorization", "")
                token = header[7:] if header.startswith("Bearer ") else (query.get("_token") or [""])[0]
                return bridge.tokens.get(token) if token else None

            def do_GET(self):
                self._serve(b"")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length > bridge.max_request_bytes:
                    while length > 0:  # read it all, so the kept-alive connection stays in step
                        length -= len(self.rfile.read(min(length, 1 << 16)) or b"x" * length)
                    self._answer(400, {"error": TOO_LARGE})
                    return
                self._serve(self.rfile.read(length) if length else b"")

            def _serve(self, body):
                parts = urlsplit(self.path)
                credentials = self._credentials(parse_qs(parts.query))
                if credentials is None:
                    self._answer(401, {"error": UNAUTHORIZED})
                    return
                if bridge._over_rate():
                    self._answer(429, {"error": "ERR too many requests: the rate limit of this database was reached"})
                    return
                limited = bridge._over_limit()
                if limited:
                    self._answer(429, {"error": limited})
                    return
                sent = self.headers.get("Upstash-Sync-Token")
                if sent:
                    bridge.last_sync_token = sent
                encoded = self.headers.get("Upstash-Encoding", "").lower() == "base64"
                path = parts.path.rstrip("/") or "/"
                try:
                    if path in ("/pipeline", "/multi-exec"):
                        commands = [self._command(item) for item in self._json(body, batch=True)]
                    elif path == "/":
                        commands = [self._command(self._json(body, batch=False))]
                    else:  # the path form: /command/arg/…, a POST body as the last argument
                        commands = [[unquote_to_bytes(word) for word in path.strip("/").split("/")]
                                    + ([body] if self.command == "POST" and body else [])]
                except ValueError as exc:
                    self._answer(400, {"error": f"ERR {exc}"})
                    return
                refused = next((c[0].decode("utf-8", "replace").upper() for c in commands
                                if c[0].decode("utf-8", "replace").upper() in REFUSED), None)
                if refused:
                    self._answer(400, {"error": f"ERR Command is not available over the REST API: {refused}"})
                    return
                try:
                    if path == "/multi-exec":
                        result = bridge.run(credentials, commands, transaction=True)
                    else:
                        result = bridge.run(credentials, commands)
                except (OSError, RedisError) as exc:
                    self._answer(500, {"error": f"ERR the bridge could not reach Redis: {exc}"})
                    return
                with bridge._lock:
                    bridge.requests += 1
                if path == "/multi-exec":
                    if isinstance(result, hiredis.ReplyError):
                        self._answer(400, {"error": str(result)})
                    else:
                        self._answer(200, [_entry(reply, encoded) for reply in result])
                elif path == "/pipeline":
                    self._answer(200, [_entry(reply, encoded) for reply in result])
                else:
                    entry = _entry(result[0], encoded)
                    self._answer(400 if "error" in entry else 200, entry)

            @staticmethod
            def _json(body, *, batch):
                try:
                    data = orjson.loads(body or b"null")
                except ValueError:
                    raise ValueError("failed to parse the request body as JSON") from None
                if not isinstance(data, list) or not data or (batch and not all(isinstance(c, list) for c in data)):
                    raise ValueError("the request body must be a JSON array" + (" of commands" if batch else ""))
                return data

            @staticmethod
            def _command(words):
                if not isinstance(words, list) or not words:
                    raise ValueError("a command must be a non-empty JSON array")
                out = []
                for word in words:
                    if isinstance(word, bool) or not isinstance(word, (str, int, float)):
                        raise ValueError("command arguments must be strings or numbers")
                    out.append(word.encode() if isinstance(word, str) else str(word).encode())
                return out

        return Handler


def read_only_token_user(client, name="default_ro", password="read-only-token-password"):
    """Create (or reset) the Redis user behind a read-only token, as Upstash documents it
    (`+@read -@dangerous`, SCAN revoked: no SCAN, KEYS, INFO or scripts). Returns (name, password)."""
    client.execute_command("ACL", "SETUSER", name, "reset", f">{password}", *READ_ONLY_ACL)
    return name, password


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="the redis-server URL behind the bridge")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8079)
    parser.add_argument("--max-request-bytes", type=int, default=10 * 1024 * 1024)
    args = parser.parse_args(argv)
    token = os.environ.get("RESTBRIDGE_TOKEN")
    if not token:
        raise SystemExit("Set RESTBRIDGE_TOKEN: the token clients must send.")
    bridge = RestBridge(args.redis, {token: (None, None)}, host=args.host, port=args.port,
                        max_request_bytes=args.max_request_bytes)
    print(f"REST bridge on {bridge.url} in front of {args.redis.split('@')[-1]}", flush=True)
    try:
        bridge.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
