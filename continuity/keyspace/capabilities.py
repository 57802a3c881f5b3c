"""What a server refused, remembered per client, and which Redis errors are worth a retry.

A server may refuse scripting (an ACL, a provider), MEMORY (inside scripts or at all), or
SCAN inside a script. Each module of this layer asks `of(client)` before choosing its
cheapest path and records a refusal there. The answers live on the client object itself,
so a new client (a new connection URL, a restarted process) never inherits a stale answer,
and they go with the client when it is dropped (`connection.forget_clients`).
"""

import threading
from dataclasses import dataclass

import redis

from continuity.keyspace.connection import is_quota_error

_ATTRIBUTE = "_continuity_capabilities"
_lock = threading.Lock()

# Error texts that mean "this server or user will not do that", as opposed to a failure.
# The last two: an ACL refusal inside a script, and a replica/read-only endpoint.
_REFUSED = ("unknown command", "noperm", "no permissions", "not allowed", "disabled", "not supported",
            "can't run this command", "readonly")
# Server states that pass: worth a retry with backoff.
_PASSING = ("busy", "loading", "tryagain", "masterdown", "clusterdown")


@dataclass
class Capabilities:
    """None: not tried yet; True: works; False: refused (use the fallback)."""

    script: bool | None = None
    memory: bool | None = None
    scan_script: bool | None = None
    # Not a flag: "cluster", "standalone" or "unknown" (see `keyspace.cluster.detect`).
    cluster: str | None = None


def of(client) -> Capabilities:
    """The capabilities recorded for `client` (created on first use)."""
    caps = getattr(client, _ATTRIBUTE, None)
    if caps is None:
        with _lock:
            caps = getattr(client, _ATTRIBUTE, None)
            if caps is None:
                caps = Capabilities()
                setattr(client, _ATTRIBUTE, caps)
    return caps


def refused(exc) -> bool:
    """True when `exc` is the server refusing a command (permission, unknown, disabled)."""
    return isinstance(exc, redis.ResponseError) and any(marker in str(exc).lower() for marker in _REFUSED)


def is_transient(exc) -> bool:
    """True for failures that pass: the server unreachable, slow, loading, busy, or over
    its quota. A refusal (NOPERM, unknown command, wrong type) is not: retrying it only
    bills the same refusal again."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)):
        return True
    if isinstance(exc, redis.ResponseError):
        text = str(exc).lower()
        return is_quota_error(exc) or text.startswith(_PASSING)
    return False
