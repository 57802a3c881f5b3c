"""What a server refused, remembered per client, and which Redis errors are worth a retry.

A server may refuse scripting (an ACL, a provider), MEMORY (inside scripts or at all),
SCAN inside a script, or EVALSHA_RO. Each module of this layer asks `of(client)` before
choosing its cheapest path and records a refusal there (`scripts` records EVALSHA_RO). The answers live on the client object itself,
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
    """None: not tried yet; True: works; False: refused (use the fallback).

    `script`: the read-only scripts (metadata, the review's scan); `write_script`: a
    purge's script, which writes (EVALSHA: a browse user may run the former only);
    `read_only_scripts`: EVALSHA_RO/EVAL_RO (Redis ≥ 7, and the ACL allows them)."""

    script: bool | None = None
    memory: bool | None = None
    scan_script: bool | None = None
    read_only_scripts: bool | None = None
    write_script: bool | None = None
    config: bool | None = None  # CONFIG GET (the keyspace watch's persistence check; Upstash refuses it)
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


SCRIPTS_REFUSED = ("This Redis user may not run scripts (ACL: +evalsha_ro +eval_ro +script|load): reviews and the "
                   "key browser read each key with a pipeline instead, 2–3 commands per key instead of one per "
                   "batch of keys.")
MEMORY_REFUSED = ("This Redis user may not run MEMORY USAGE (ACL: +memory|usage): key sizes are unknown, so sizes, "
                  "the biggest keys and the oversized finding are not checked.")
SCAN_SCRIPT_REFUSED = ("SCAN inside a script is refused here: reviews send SCAN and the metadata script separately "
                       "(two commands per batch instead of one).")


def limitations(client) -> list:
    """What this client's server or user refused so far and what is degraded for it, as
    operator-facing sentences (pages show them next to what still works)."""
    caps = of(client)
    notes = []
    if caps.script is False:
        notes.append(SCRIPTS_REFUSED)
    if caps.memory is False:
        notes.append(MEMORY_REFUSED)
    elif caps.scan_script is False and caps.script is True:
        notes.append(SCAN_SCRIPT_REFUSED)
    return notes
