"""The continuity store adapter (runbook Stage 2): Lucia's short-lived continuity state
(session, distress, focus, action, rate) read and written under the registered
namespaces, with each namespace's policy enforced at write time.

- A write outside every registered namespace is refused; so is a TTL outside the
  namespace's band (or no TTL where one is required) and a payload above its limit.
- When Redis is unreachable the store keeps working from an in-process TTL cache and
  says so (`degraded`). State written before the outage is not available meanwhile:
  the namespace's "fallback if expired" note says what Lucia does then. Once Redis
  answers again, what was written during the outage is copied back with its remaining
  TTL and the store returns to Redis.

Usage:
    store = ContinuityStore.for_database("lucia")
    store.put("session", "op-42", {"channel": "web"}, ttl_seconds=1800)
    store.get_json("session", "op-42")
"""

import json
import logging
import threading
import time
from dataclasses import dataclass

import redis

from continuity import keyspace
from continuity.policy import Policies, Policy

log = logging.getLogger(__name__)

KINDS = ("session", "distress", "focus", "action", "rate")
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, keyspace.NotConfigured)


class PolicyViolation(ValueError):
    """A write the namespace policy does not allow. Nothing was written."""


def check_write(policy, ttl_seconds, kind=None, size=None):
    """The TTL a write of `size` bytes of `kind` gets under `policy` (the given one, or the
    policy maximum when none is given), or PolicyViolation naming every rule it breaks."""
    ttl = policy.max_ttl_seconds if ttl_seconds is None else ttl_seconds
    problems = policy.write_problems(ttl, kind, size)
    if problems:
        raise PolicyViolation(" ".join(problems))
    return ttl


@dataclass(frozen=True)
class WriteResult:
    key: bytes
    ttl_seconds: int | None
    degraded: bool  # True when the write went to the in-process fallback


def _encode(value, policy, as_hash=None):
    """(kind, payload, size): a hash mapping for dicts in hash namespaces (or when asked
    with `as_hash`), else bytes. The policy's type rule is checked by `check_write`."""
    if isinstance(value, dict) and (as_hash or (as_hash is None and policy.expected_type == "hash")):
        mapping = {str(k).encode(): (v if isinstance(v, bytes) else str(v).encode()) for k, v in value.items()}
        return "hash", mapping, sum(len(k) + len(v) for k, v in mapping.items())
    if isinstance(value, bytes):
        payload = value
    elif isinstance(value, str):
        payload = value.encode()
    else:
        payload = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    return "string", payload, len(payload)


class LocalTTLCache:
    """A small thread-safe in-process cache with per-entry expiry (monotonic clock)."""

    def __init__(self, max_entries=10_000, clock=time.monotonic):
        self._data = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.clock = clock

    def set(self, key, value, ttl_seconds):
        expires = None if ttl_seconds is None else self.clock() + ttl_seconds
        with self._lock:
            self._purge()
            if len(self._data) >= self.max_entries and key not in self._data:
                # Drop the entry closest to expiry: it would go soonest anyway.
                soonest = min(self._data, key=lambda k: self._data[k][0] or float("inf"))
                del self._data[soonest]
            self._data[key] = (expires, value)

    def get(self, key):
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] is not None and entry[0] <= self.clock():
                del self._data[key]
                return None
            return entry[1]

    def delete(self, key):
        with self._lock:
            return self._data.pop(key, None) is not None

    def drain(self):
        """[(key, value, remaining seconds or None)] of live entries, emptying the cache."""
        with self._lock:
            self._purge()
            now = self.clock()
            items = [(k, v, None if e is None else e - now) for k, (e, v) in self._data.items()]
            self._data.clear()
            return items

    def __len__(self):
        with self._lock:
            self._purge()
            return len(self._data)

    def __bool__(self):
        # A cache is a cache even when empty: `fallback or LocalTTLCache()` must keep a given one.
        return True

    def _purge(self):
        now = self.clock()
        for key in [k for k, (e, _) in self._data.items() if e is not None and e <= now]:
            del self._data[key]


class ContinuityStore:
    """Continuity state under the registered namespaces of one database record."""

    def __init__(self, database, *, namespaces=None, client=None, retry_seconds=5.0, fallback=None):
        from continuity.models import Namespace

        self.database = database
        namespaces = namespaces if namespaces is not None else Namespace.objects.for_database(database)
        self.policies = {ns.name: Policy.of(ns) for ns in namespaces}
        self._by_prefix = Policies((policy, policy) for policy in self.policies.values())
        self._client = client
        self.retry_seconds = retry_seconds
        self.fallback = fallback or LocalTTLCache()
        self.degraded = False
        self._last_failure = None
        self._lock = threading.Lock()

    @classmethod
    def for_database(cls, name="lucia", **kwargs):
        from dashboard.models import RedisDatabase

        return cls(RedisDatabase.objects.get(name=name), **kwargs)

    # --- keys and policies -------------------------------------------------------------
    def key_for(self, namespace, ident):
        policy = self.policy(namespace)
        return policy.prefix + (ident if isinstance(ident, bytes) else str(ident).encode())

    def policy(self, namespace):
        try:
            return self.policies[namespace]
        except KeyError:
            raise PolicyViolation(f"No registered namespace named {namespace!r}.") from None

    def policy_for_key(self, key):
        best = self._by_prefix.for_key(key)
        if best is None:
            raise PolicyViolation(f"{keyspace.display_key(key)} is outside every registered namespace.")
        return best

    # --- Redis or fallback -------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = keyspace.new_client(self.database, write=True, retries=1)
        return self._client

    def _redis(self, operation):
        """Run `operation(client)` against Redis; None (and degraded) when Redis is down.
        While degraded, Redis is retried at most every `retry_seconds`."""
        with self._lock:
            if self.degraded and time.monotonic() - self._last_failure < self.retry_seconds:
                return None, False
        try:
            if self.degraded:
                self._recover()
            return operation(self.client), True
        except UNAVAILABLE as exc:
            with self._lock:
                if not self.degraded:
                    log.warning("Continuity store for %s degraded to the in-process cache: %s",
                                self.database.name, keyspace.describe_error(exc))
                self.degraded = True
                self._last_failure = time.monotonic()
            return None, False

    def _recover(self):
        """Copy what was written during the outage back to Redis, then leave degraded mode."""
        pending = self.fallback.drain()
        pipe = self.client.pipeline(transaction=False)
        for key, (kind, payload), remaining in pending:
            self._write_ops(pipe, key, kind, payload, remaining)
        try:
            pipe.execute()
        except UNAVAILABLE:
            for key, value, remaining in pending:  # keep them for the next attempt
                self.fallback.set(key, value, remaining)
            raise
        with self._lock:
            self.degraded = False
        log.warning("Continuity store for %s is back on Redis (%d keys copied back).", self.database.name, len(pending))

    @staticmethod
    def _write_ops(pipe, key, kind, payload, ttl_seconds):
        px = None if ttl_seconds is None else max(1, int(ttl_seconds * 1000))
        if kind == "hash":
            pipe.delete(key)
            pipe.hset(key, mapping=payload)
            if px:
                pipe.pexpire(key, px)
        else:
            pipe.set(key, payload, px=px)

    # --- public API --------------------------------------------------------------------
    def put(self, namespace, ident, value, *, ttl_seconds=None, as_hash=None):
        """Write `value` under `namespace` + `ident`, enforcing the namespace's policy.
        bytes/str are stored as they are, other values as JSON; dicts become hashes in
        namespaces that expect hashes (or with `as_hash=True`)."""
        return self.put_key(self.key_for(namespace, ident), value, ttl_seconds=ttl_seconds,
                            policy=self.policy(namespace), as_hash=as_hash)

    def put_key(self, key: bytes, value, *, ttl_seconds=None, policy=None, as_hash=None):
        """Write a full key; its namespace is the longest registered prefix (else refused)."""
        policy = policy or self.policy_for_key(key)
        kind, payload, size = _encode(value, policy, as_hash)
        # The policy limit is in MEMORY USAGE terms; the payload alone must fit under it.
        ttl = check_write(policy, ttl_seconds, kind, size)

        def write(client):
            pipe = client.pipeline(transaction=True)
            self._write_ops(pipe, key, kind, payload, ttl)
            pipe.execute()

        _, ok = self._redis(write)
        if not ok:
            self.fallback.set(key, (kind, payload), ttl)
        return WriteResult(key=key, ttl_seconds=ttl, degraded=not ok)

    def get(self, namespace, ident):
        """bytes for strings, {bytes: bytes} for hashes, None when absent."""
        key = self.key_for(namespace, ident)

        def read(client):
            pipe = client.pipeline(transaction=False)
            pipe.type(key)
            pipe.get(key)
            kind, value = pipe.execute(raise_on_error=False)
            if kind in (b"hash", "hash"):
                return client.hgetall(key)
            return None if isinstance(value, Exception) else value

        value, ok = self._redis(read)
        if ok:
            return value
        cached = self.fallback.get(key)
        return None if cached is None else cached[1]

    def get_json(self, namespace, ident):
        value = self.get(namespace, ident)
        return None if value is None or isinstance(value, dict) else json.loads(value)

    def touch(self, namespace, ident, *, ttl_seconds=None):
        """Refresh the TTL (default: the policy maximum). False when the key is absent."""
        ttl = check_write(self.policy(namespace), ttl_seconds)
        key = self.key_for(namespace, ident)
        result, ok = self._redis(lambda client: client.expire(key, ttl) if ttl else client.persist(key))
        if ok:
            return bool(result)
        cached = self.fallback.get(key)
        if cached is None:
            return False
        self.fallback.set(key, cached, ttl)
        return True

    def delete(self, namespace, ident):
        key = self.key_for(namespace, ident)
        result, ok = self._redis(lambda client: client.unlink(key))
        local = self.fallback.delete(key)
        return bool(result) if ok else local

    def ttl_seconds(self, namespace, ident):
        """Remaining TTL in seconds, None when the key has none or is absent."""
        key = self.key_for(namespace, ident)
        result, ok = self._redis(lambda client: client.pttl(key))
        if ok:
            return None if result < 0 else result / 1000
        return None

    def close(self):
        if self._client is not None:
            self._client.close()

