"""Upstash's REST API as a transport under redis-py: the engine talks to it through the
same `redis.Redis` interface as over TCP, and nothing above this module asks which it is.

Why a connection class and not a client of its own. redis-py sends every command through a
connection: `execute_command` (one command), a pipeline (`pack_commands` + one
`send_packed_command` + one `read_response` per command), and the review's one-ahead stream
(`send_command` now, `read_response` later). `RestConnection` turns each
`send_packed_command` into ONE HTTP request — `/` for one command, `/pipeline` for several,
`/multi-exec` for a MULTI…EXEC transaction — sent at once on the connection's own thread, and
hands its replies out in order to `read_response`. So every command method of redis-py
(SCAN, INFO, HSCAN…, their reply parsing included), every pipeline and every request kept in
flight works unchanged, and a batch the engine sends in one round trip over TCP is one HTTP
request over REST. The official `upstash-redis` client is not used here: it decodes every
reply as UTF-8 text (binary keys and values would be lost) and has no pipeline that stays in
flight while the caller works. It proves the local endpoint instead (the tests).

What travels (Upstash's documented protocol): a JSON array of strings per command, Bearer
auth, `Upstash-Encoding: base64` so every string in the reply comes back base64-encoded
(except a bare "OK") and replies are exact bytes; `{"result": …}` or `{"error": "…"}` per
command; kept-alive HTTP connections (httpx, one per connection of the pool).

Names that are not UTF-8. A JSON request can only carry text. A command with an argument that
is not valid UTF-8 is therefore sent as a script that receives its arguments hex-encoded and
decodes them inside Redis:

- a script (EVALSHA/EVAL, `_RO` or not) becomes EVAL(_RO) of `HEX_PRELUDE` + its body, the
  keys passed undeclared: the same script runs on the same keys with the same calls inside,
  so Redis bills the same number of commands as over TCP (an EVAL for the EVALSHA). On
  Upstash, a script whose keys are undeclared takes the global lock for that call;
- any other command becomes `EVAL(_RO) HEX_CALL 0 <hex args>`: one billed command more (the
  EVAL) than over TCP. Where the token may not run scripts (Upstash's read-only token), such a
  command cannot reach the key over REST: `RestBinaryRefused` says so.

Failures raise redis-py's own exception classes, subclassed as `RestError` with an
operator-facing message that names the REST endpoint (never the token): a wrong or revoked
token (401), a rate limit (429), a request over the endpoint's size limit, a timeout, an
endpoint that cannot be reached, a command the token's user may not run (NOPERM: Upstash's
read-only token refuses SCAN, scripts and writes). Upstash is one logical primary: a REST client is a
standalone server for the engine (`capabilities.cluster`).
"""

import binascii
import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import orjson
import redis
from redis._parsers.base import BaseParser
from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool
from redis.retry import Retry

# A script's arguments arrive as ARGV = {n, hex(key 1) … hex(key n), hex(arg 1) …}: KEYS and
# ARGV are rebuilt, decoded, as locals that shadow the globals for the rest of the body.
HEX_PRELUDE = """local KEYS, ARGV = (function(raw)
  local function unhex(s) return (string.gsub(s, '..', function(c) return string.char(tonumber(c, 16)) end)) end
  local n, keys, argv = tonumber(raw[1]), {}, {}
  for i = 2, #raw do
    if i <= n + 1 then keys[i - 1] = unhex(raw[i]) else argv[i - n - 1] = unhex(raw[i]) end
  end
  return keys, argv
end)(ARGV)
"""
# Any other command: ARGV = its name and arguments, hex-encoded; the reply (or error) as is.
HEX_CALL = """local function unhex(s) return (string.gsub(s, '..', function(c) return string.char(tonumber(c, 16)) end)) end
local args = {}
for i = 1, #ARGV do args[i] = unhex(ARGV[i]) end
return redis.pcall(unpack(args))
"""
# Commands that read only: wrapped in EVAL_RO, which a browse user (+eval_ro) may run.
READ_COMMANDS = frozenset(name.encode() for name in (
    "PTTL", "TTL", "TYPE", "EXISTS", "GET", "GETRANGE", "STRLEN", "HLEN", "HSCAN", "HGET", "HGETALL", "LLEN",
    "LRANGE", "SCARD", "SSCAN", "SMEMBERS", "ZCARD", "ZRANGE", "ZSCORE", "XLEN", "XRANGE", "OBJECT", "MEMORY",
    "DUMP", "JSON.GET", "SCAN"))
# Commands that keep state on a connection: over REST each request may run on another one.
_STATEFUL = frozenset(name.encode() for name in (
    "WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD", "SELECT", "AUTH", "HELLO", "SUBSCRIBE", "PSUBSCRIBE",
    "SSUBSCRIBE", "MONITOR", "RESET", "QUIT", "CLIENT"))
_SCRIPT_COMMANDS = (b"EVAL", b"EVAL_RO", b"EVALSHA", b"EVALSHA_RO")
TOO_LARGE_MARKER = "max request size exceeded"

_bodies: dict[str, bytes] = {}  # sha1 → script body, for EVALSHA calls that must travel as EVAL


def remember_script(body):
    """Record a script body, so that an EVALSHA of it with a non-UTF-8 argument can be sent as EVAL."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    _bodies[hashlib.sha1(raw).hexdigest()] = raw


def endpoint(url):
    """`url` as shown to an operator: scheme, host, port and path; no user, password or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


# --- errors ----------------------------------------------------------------------------------
class RestError(Exception):
    """A failure of the REST transport itself; the message is for the operator and names the
    endpoint, never the token. Each subclass is also redis-py's own class for the failure, so
    retries, fallbacks and pages treat it like the same failure over TCP."""


class RestUnreachable(RestError, redis.ConnectionError):
    pass


class RestTimeout(RestError, redis.TimeoutError):
    pass


class RestUnauthorized(RestError, redis.AuthenticationError):
    pass


class RestRateLimited(RestError, redis.ConnectionError):
    """429: nothing ran, nothing was billed; a passing failure that a job's retry waits out."""


class RestTooLarge(RestError, redis.DataError):
    """The request is over the endpoint's size limit: nothing ran, and sending it again would
    not help (not a passing failure)."""


class RestUnsupported(RestError, redis.ResponseError):
    """A command that cannot work over REST; it was not sent."""


class RestBinaryRefused(RestError, redis.ResponseError):
    """A command naming a non-UTF-8 key, which over REST must run inside a script, refused
    because this token may not run scripts. `said`: the endpoint's own error."""

    def __init__(self, message, said=""):
        super().__init__(message)
        self.said = said


class RestRefused(RestError, redis.exceptions.NoPermissionError):
    """NOPERM: the token's user may not run this command (Upstash's read-only token: no SCAN,
    no scripts, no writes; an ACL user's token: what its ACL denies). The message keeps Redis's
    own words first (so what reads refusals reads them as over TCP) and names the endpoint;
    `said` is Redis's words alone."""

    def __init__(self, said, endpoint):
        super().__init__(f"{said} (the REST endpoint {endpoint} refused it for this token)")
        self.said, self.endpoint = said, endpoint


READ_ONLY_TOKEN_NOTE = ("Upstash's read-only REST token reads known keys only (no SCAN, no scripts, no writes): "
                        "browsing, reviews and purges need the database's standard token, or the token of an ACL "
                        "user allowed them (ACL RESTTOKEN).")


def _error_reply(text):
    """redis-py's exception for an error reply, as its own parser builds it over TCP."""
    return BaseParser.parse_error(text)


def _decode(value):
    """A reply with `Upstash-Encoding: base64`: every string base64, except a bare "OK"."""
    if isinstance(value, str):
        return _decode_text(value)
    if isinstance(value, list):
        # A review page's reply holds tens of thousands of strings, decoded while the link
        # carries the next page: no call per string here, and binascii's strict mode checks
        # the alphabet in C (base64's validate=True runs a regular expression per string).
        out = []
        for item in value:
            kind = type(item)
            if kind is str:
                if item == "OK":
                    out.append(b"OK")
                else:
                    try:
                        out.append(_a2b(item, strict_mode=True))
                    except (binascii.Error, ValueError):
                        out.append(item.encode())
            elif kind is list:
                out.append(_decode(item))
            else:
                out.append(item)
        return out
    return value


_a2b = binascii.a2b_base64


def _decode_text(value):
    if value == "OK":
        return b"OK"
    try:
        return _a2b(value, strict_mode=True)
    except (binascii.Error, ValueError):
        return value.encode()


def _hex(values):
    return [value.hex() for value in values]


def _text(value):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _with_prelude(body):
    if body.startswith(b"#!"):  # a shebang line (Redis 7 script flags) stays first
        first, _, rest = body.partition(b"\n")
        return first + b"\n" + HEX_PRELUDE.encode() + rest
    return HEX_PRELUDE.encode() + body


class _Prepared:
    """One command as it travels: JSON-ready strings, and how to read its reply."""

    __slots__ = ("words", "name", "wrapped", "refusal")

    def __init__(self, words, name, wrapped=False, refusal=None):
        self.words, self.name, self.wrapped, self.refusal = words, name, wrapped, refusal


def prepare(args):
    """A command (bytes arguments) as a JSON array of strings (see the module docstring)."""
    name = args[0].upper()
    if name == b"SCRIPT" and len(args) > 2 and args[1].upper() == b"LOAD":
        remember_script(args[2])
    elif name in (b"EVAL", b"EVAL_RO") and len(args) > 1:
        remember_script(args[1])
    shown = name.decode("utf-8", "replace")
    if name in _STATEFUL:
        return _Prepared(None, shown, refusal=(
            f"{shown} keeps state on one connection, but over the REST API every request may run on another "
            "(a transaction is one /multi-exec request, without WATCH). It was not sent."))
    texts = [_text(arg) for arg in args]
    if None not in texts:
        return _Prepared(texts, shown)
    if name in _SCRIPT_COMMANDS:
        if name.startswith(b"EVALSHA"):
            body = _bodies.get(args[1].decode("ascii", "replace").lower())
        else:
            body = args[1]
        if body is None or _text(body) is None or len(args) < 3:
            return _Prepared(None, shown, refusal=(
                f"{shown} names a key or argument that is not valid UTF-8, and the script's body is not known here, "
                "so it cannot travel hex-encoded over the REST API. It was not sent."))
        command = "EVAL_RO" if name.endswith(b"_RO") else "EVAL"
        words = [command, _with_prelude(body).decode(), "0", args[2].decode(), *_hex(args[3:])]
        return _Prepared(words, shown, wrapped=True)
    command = "EVAL_RO" if name in READ_COMMANDS else "EVAL"
    return _Prepared([command, HEX_CALL, "0", *_hex(args)], shown, wrapped=True)


# --- the connection --------------------------------------------------------------------------
class RestConnection(Connection):
    """A redis-py connection that speaks Upstash's REST API (see the module docstring).

    `host`/`port` are the REST endpoint's (what pages show as the node's address). Each
    `send_packed_command` is one HTTP request, sent at once on this connection's own thread
    with one kept-alive HTTP connection; `read_response` waits for it."""

    def __init__(self, *, rest_url, rest_token, sync=None, **kwargs):
        self.rest_url = rest_url.rstrip("/")
        self.rest_endpoint = endpoint(rest_url)
        self._token = rest_token
        self._sync = sync if sync is not None else {}
        self._http = None
        self._sender = None
        self._requests = deque()
        self._replies = deque()
        super().__init__(**kwargs)

    def repr_pieces(self):
        return [("endpoint", self.rest_endpoint)]

    def _host_error(self):
        return self.rest_endpoint

    # The pool calls these: there is no socket and no handshake (no AUTH, HELLO, SELECT).
    def connect(self):
        if self._http is None:
            timeout = httpx.Timeout(self.socket_timeout, connect=self.socket_connect_timeout)
            self._http = httpx.Client(
                base_url=self.rest_url, timeout=timeout, follow_redirects=False,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                headers={"Authorization": f"Bearer {self._token}", "Upstash-Encoding": "base64",
                         "Content-Type": "application/json"})
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rest-transport")
            self._sock = True  # "connected", for redis-py's bookkeeping

    def connect_check_health(self, check_health=True, retry_socket_connect=True):
        self.connect()

    def on_connect(self):
        return None

    def check_health(self):
        return None

    def disconnect(self, *args, **kwargs):
        http, sender = self._http, self._sender
        self._http = self._sender = None
        self._sock = None
        self._requests.clear()
        self._replies.clear()
        self.reset_should_reconnect()
        if sender is not None and os.getpid() == self.pid:
            sender.shutdown(wait=False, cancel_futures=True)
        if http is not None and os.getpid() == self.pid:
            try:
                http.close()
            except (httpx.HTTPError, RuntimeError):
                pass

    def can_read(self, timeout=0):
        return bool(self._requests or self._replies)  # replies nobody read: the pool reconnects

    def re_auth(self):
        return None

    # --- commands ---------------------------------------------------------------------------
    def pack_command(self, *args):
        return [self._words(args)]

    def pack_commands(self, commands):
        return [self._words(args) for args in commands]

    def _words(self, args):
        first = args[0]
        if isinstance(first, str):
            args = tuple(first.encode().split()) + tuple(args[1:])
        elif b" " in first:
            args = tuple(first.split()) + tuple(args[1:])
        return tuple(self.encoder.encode(arg) for arg in args)

    def send_command(self, *args, **kwargs):
        self.send_packed_command(self.pack_command(*args))

    def send_packed_command(self, command, check_health=True):
        if not command:
            return
        self.connect()
        commands = [prepare(args) for args in command]
        future = Future()
        refusal = next((item for item in commands if item.refusal), None)
        transaction = (len(commands) >= 2 and commands[0].name == "MULTI" and commands[-1].name == "EXEC"
                       and not any(item.refusal for item in commands[1:-1]))
        if refusal is not None and not transaction:
            future.set_result([RestUnsupported(item.refusal or refusal.refusal) for item in commands])
        elif transaction:
            self._sender.submit(self._run, future, "/multi-exec", commands[1:-1])
        else:
            self._sender.submit(self._run, future, "/" if len(commands) == 1 else "/pipeline", commands)
        self._requests.append(future)

    def read_response(self, disable_decoding=False, *, timeout=None, disconnect_on_error=True,
                      push_request=False):
        while not self._replies:
            if not self._requests:
                raise RestUnreachable(f"Nothing was sent to the REST endpoint {self.rest_endpoint} to read a reply of.")
            future = self._requests.popleft()
            try:
                self._replies.extend(future.result())
            except RestError:  # the whole request failed: its other replies will never come
                if disconnect_on_error:
                    self.disconnect()
                raise
        reply = self._replies.popleft()
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    # --- one HTTP request, on the sender thread ------------------------------------------------
    def _run(self, future, path, commands):
        try:
            future.set_result(self._request(path, commands))
        except BaseException as exc:  # handed to read_response, which raises it in the caller
            future.set_exception(exc)

    def _request(self, path, commands):
        body = [item.words for item in commands] if path != "/" else commands[0].words
        payload = orjson.dumps(body)  # UTF-8, compact: what json.dumps(ensure_ascii=False) sends, ~10× faster
        headers = {"Upstash-Sync-Token": self._sync["token"]} if self._sync.get("token") else None
        where = self.rest_endpoint
        try:
            answer = self._http.post(path, content=payload, headers=headers)
        except httpx.TimeoutException:
            raise RestTimeout(f"The REST endpoint {where} did not answer within {self.socket_timeout:g} s "
                              "(REDIS_READ_TIMEOUT); nothing more was sent.") from None
        except httpx.HTTPError as exc:
            raise RestUnreachable(f"The REST endpoint {where} is unreachable ({exc.__class__.__name__}: {exc}).") from None
        sync = answer.headers.get("upstash-sync-token")
        if sync:
            self._sync["token"] = sync
        return self._replies_of(answer, path, commands, len(payload))

    def _replies_of(self, answer, path, commands, size):
        where, status = self.rest_endpoint, answer.status_code
        try:
            # orjson: a review page's reply is ~300 kB of JSON, parsed while the stream waits on it
            data = orjson.loads(answer.content)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            data = None
        said = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), str) else ""
        if status in (401, 403):
            raise RestUnauthorized(
                f"The REST endpoint {where} refused the token (HTTP {status}{': ' + said if said else ''}): the token "
                "variable holds a wrong or revoked token (resetting the database's password revokes both REST tokens).")
        if status == 429:
            raise RestRateLimited(
                f"The REST endpoint {where} is rate-limiting this database (HTTP 429 Too Many Requests"
                f"{': ' + said if said else ''}); nothing ran. Wait before retrying: jobs retry on their own.")
        if status == 413 or TOO_LARGE_MARKER in said.lower():
            raise RestTooLarge(
                f"The REST endpoint {where} refused a {size:,}-byte request as too large"
                f"{' (' + said + ')' if said else ' (HTTP 413)'}; nothing ran. The plan's max request size bounds one "
                "request: a page of fewer or shorter keys fits.")
        if data is None or status >= 500:
            raise RestUnreachable(f"The REST endpoint {where} answered HTTP {status} without a Redis reply"
                                  f"{' (' + said + ')' if said else ''}.")
        if path == "/":
            return [self._reply(data, commands[0])]
        if isinstance(data, dict):  # the whole batch refused: each command gets the error
            text = said or f"the REST endpoint answered HTTP {status}"
            replies = [_error_reply(text) for _ in commands]
            return [b"OK", *(_error_reply(text) for _ in commands), _error_reply(text)] if path == "/multi-exec" \
                else replies
        if not isinstance(data, list) or len(data) != len(commands):
            raise RestUnreachable(f"The REST endpoint {where} answered {len(data) if isinstance(data, list) else 'no'} "
                                  f"replies to {len(commands)} commands.")
        replies = [self._reply(item, command) for item, command in zip(data, commands)]
        if path == "/multi-exec":  # as redis-py reads MULTI … EXEC over TCP
            return [b"OK", *([b"QUEUED"] * len(commands)), replies]
        return replies

    def _reply(self, item, command):
        if not isinstance(item, dict):
            return redis.ResponseError(f"the REST endpoint answered {type(item).__name__} instead of a reply")
        if "error" in item and item["error"] is not None:
            error = _error_reply(str(item["error"]))
            if command.wrapped and isinstance(error, redis.ResponseError) and _refuses_scripts(str(item["error"])):
                return RestBinaryRefused(
                    f"{command.name} names a key that is not valid UTF-8. Over the REST API such a key can only be "
                    f"named inside a script (EVAL_RO/EVAL, its name hex-encoded), and this token may not run scripts "
                    f"({item['error']}). It cannot reach this key over REST with this token: use the database's TCP "
                    "URL, or a token of a user allowed +eval_ro (ACL RESTTOKEN).", said=str(item["error"]))
            if type(error) is redis.exceptions.NoPermissionError:
                return RestRefused(str(item["error"]), self.rest_endpoint)
            return error
        return _decode(item.get("result"))


def _refuses_scripts(text):
    lowered = text.lower()
    return "'eval" in lowered and ("no permissions" in lowered or "unknown command" in lowered)


class RestClient(redis.Redis):
    """redis-py's `Redis` over Upstash's REST API: `RestConnection`s in a pool of their own.

    `rest_endpoint` is the endpoint as shown to operators (scheme, host, port, path);
    `transport` is "rest" (a TCP client has none)."""

    transport = "rest"
    topology = "standalone"  # Upstash is one logical primary (no CLUSTER commands): `cluster.detect` asks nothing

    def __init__(self, url, token, *, connect_timeout, read_timeout, retries=0, max_connections=50):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.rest_endpoint = endpoint(url)
        pool = ConnectionPool(
            connection_class=RestConnection, max_connections=max_connections, rest_url=url, rest_token=token,
            sync={}, host=parts.hostname, port=port, socket_timeout=read_timeout,
            socket_connect_timeout=connect_timeout, retry=Retry(NoBackoff(), retries), health_check_interval=0,
            driver_info=None, protocol=2)  # Upstash's REST replies have RESP2's shapes
        super().__init__(connection_pool=pool)

    def register_script(self, script):
        remember_script(script)
        return super().register_script(script)

    def close(self):
        super().close()
        self.connection_pool.disconnect()

