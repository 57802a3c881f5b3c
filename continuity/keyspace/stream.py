"""Whole-keyspace streaming for reviews: SCAN batches and their metadata, with every
Redis command counted (Upstash bills each one, and the benchmark checks the count)."""

from dataclasses import dataclass

import redis

from continuity.keyspace import meta


@dataclass(frozen=True)
class Batch:
    """One SCAN step: the next cursor (0 = done), the keys, and commands it cost."""

    cursor: int
    keys: list
    commands: int


def scan_batch(client, cursor, *, count):
    """One `SCAN cursor COUNT count` (no MATCH: a review also counts foreign keys)."""
    next_cursor, keys = client.scan(cursor=cursor, count=count)
    return Batch(cursor=int(next_cursor), keys=list(keys), commands=1)


def metadata_rows(client, keys):
    """([(key, pttl_ms|None, type|None, memory|None)], commands issued) for `keys`.

    One EVALSHA per batch where scripting is allowed (plus one SCRIPT LOAD the first time
    a server has not seen the script); otherwise `meta`'s per-key pipeline. Tuples, not
    KeyMeta objects: a review handles millions of them."""
    if not keys:
        return [], 0
    caps = meta._caps(client)
    if caps["script"] is not False:
        try:
            rows, commands = _script_rows(client, keys)
            caps["script"] = True
            return rows, commands
        except redis.ResponseError as exc:
            if not meta._refused(exc):
                raise
            caps["script"] = False
    with_memory = caps["memory"] is not False
    metas = meta.key_metadata(keys=keys, client=client)
    commands = len(keys) * (3 if with_memory else 2)
    return [(m.key, m.ttl_ms, m.type, m.memory) for m in metas], commands


_SHA = {}


def _script_rows(client, keys):
    sha = _SHA.get("meta")
    if sha is None:
        import hashlib

        sha = _SHA["meta"] = hashlib.sha1(meta._META_LUA.encode()).hexdigest()
    commands = 1
    try:
        replies = client.evalsha(sha, len(keys), *keys)
    except redis.exceptions.NoScriptError:
        client.script_load(meta._META_LUA)
        replies = client.evalsha(sha, len(keys), *keys)
        commands = 3
    rows = []
    for key, (pttl, kind, memory) in zip(keys, replies):
        if pttl == -2:
            rows.append((key, None, None, None))
            continue
        rows.append((key, None if pttl == -1 else pttl, kind.decode() if isinstance(kind, bytes) else kind,
                     None if memory == -1 else memory))
    return rows, commands


def dbsize(client):
    """DBSIZE, or None where the server refuses it (ACL-restricted users)."""
    try:
        return client.dbsize()
    except redis.ResponseError:
        return None
