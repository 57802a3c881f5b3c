"""Whole-keyspace streaming for reviews: SCAN batches and their metadata, with every
Redis command counted (Upstash bills each one, and the benchmark checks the count).

A batch's metadata travels as one *flat* list, `[key, pttl, type, memory, key, …]`:
pttl -1 = no expiry, -2 = the key vanished between SCAN and the lookup; type is the raw
bytes TYPE reply; memory is MEMORY USAGE, -1 where the server refuses MEMORY. That is
the scan script's reply as hiredis parses it, used as it is: a review handles millions of
keys, and building a tuple or an object per key cost more than the counting itself."""

import dataclasses
import hashlib
from dataclasses import dataclass

import redis

from continuity.keyspace import capabilities, meta

VANISHED = -2  # pttl of a key gone between SCAN and the lookup
NO_TTL = -1  # pttl of a key without an expiry
UNKNOWN_MEMORY = -1  # memory where MEMORY USAGE is refused


@dataclass(frozen=True)
class Fetched:
    """A SCAN batch: the next cursor (0 = done), how many keys SCAN returned, how many of
    them are outside `prefix` (only counted), the flat metadata of the others (see the
    module docstring), and the Redis commands the batch cost."""

    cursor: int
    scanned: int
    foreign: int
    rows: list
    commands: int


# One command per batch: SCAN inside the script, then PTTL, TYPE and MEMORY USAGE of each
# key under the prefix (ARGV[3]); keys outside it are only counted. Returns a flat array
# {next cursor, foreign count, key, pttl, type, memory, key, pttl, …}: no per-key tables,
# and the keys are not sent back and forth between SCAN and the metadata script.
# (Keys are not declared in KEYS: this is a whole-keyspace read on a single node.)
# MEMORY USAGE is a plain call here (pcall costs more per key): where MEMORY is refused
# the script fails as a whole and `fetch_batch` falls back to SCAN + `meta`'s script.
# Measured on 1M keys (Redis 7.0, `INFO commandstats`): SCAN ≈ 1.3 µs per key, then each
# redis.call ≈ 1.2–1.4 µs per key (mostly the scripting layer's per-call overhead, not
# the command), building the reply ≈ 0.5 µs: about 5.7 µs of Redis time per key.
_SCAN_LUA = """
local call = redis.call
local res = call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local keys = res[2]
local prefix = ARGV[3]
local plen = #prefix
local sub = string.sub
local out = {res[1], 0}
local n = 2
local foreign = 0
for i = 1, #keys do
  local key = keys[i]
  if sub(key, 1, plen) ~= prefix then
    foreign = foreign + 1
  else
    local pttl = call('PTTL', key)
    if pttl == -2 then
      out[n+1] = key; out[n+2] = -2; out[n+3] = 'none'; out[n+4] = -2
    else
      out[n+1] = key; out[n+2] = pttl; out[n+3] = call('TYPE', key)['ok']; out[n+4] = call('MEMORY', 'USAGE', key)
    end
    n = n + 4
  end
end
out[2] = foreign
return out
"""
_SCAN_SHA = hashlib.sha1(_SCAN_LUA.encode()).hexdigest()


def dbsize(client):
    """DBSIZE, or None where the server refuses it (ACL-restricted users)."""
    try:
        return client.dbsize()
    except redis.ResponseError:
        return None


def _from_reply(reply, commands):
    foreign = reply[1]
    rows = reply[2:]
    return Fetched(int(reply[0]), len(rows) // 4 + foreign, foreign, rows, commands)


def _evalsha(client, sha, lua, numkeys, *args, spent):
    """EVALSHA_RO (EVALSHA where the server or the ACL refuses it: `capabilities.evalsha`),
    with SCRIPT LOAD + the same again when the server lacks the script. Every command
    sent is added to `spent[0]` first, so one the server refuses is still counted."""
    spent[0] += 1
    try:
        return capabilities.evalsha(client, sha, numkeys, *args, spent=spent)
    except redis.exceptions.NoScriptError:
        spent[0] += 2
        client.script_load(lua)
        return capabilities.evalsha(client, sha, numkeys, *args, spent=spent)


def scan_script_batch(client, cursor, *, count, prefix, spent=None):
    """One SCAN batch with its metadata in a single EVALSHA (see `_SCAN_LUA`)."""
    spent = [0] if spent is None else spent
    reply = _evalsha(client, _SCAN_SHA, _SCAN_LUA, 0, cursor, count, prefix, spent=spent)
    return _from_reply(reply, spent[0])


_META_SHA = hashlib.sha1(meta.META_LUA.encode()).hexdigest()


def _metadata_rows(client, keys):
    """(flat rows, commands) for `keys`: `meta`'s metadata script (one EVALSHA, MEMORY
    USAGE under pcall: -1 where refused) where scripting is allowed, else its per-key
    pipeline (2 or 3 commands per key)."""
    if not keys:
        return [], 0
    caps = capabilities.of(client)
    rows, spent = [], [0]
    if caps.script is not False:
        try:
            replies = _evalsha(client, _META_SHA, meta.META_LUA, len(keys), *keys, spent=spent)
            caps.script = True
            for key, (pttl, kind, memory) in zip(keys, replies):
                rows += (key, pttl, kind, UNKNOWN_MEMORY if pttl == VANISHED else memory)
                if memory == UNKNOWN_MEMORY:  # MEMORY USAGE refused inside the script
                    caps.memory = False
            return rows, spent[0]
        except redis.ResponseError as exc:
            if not capabilities.refused(exc):
                raise
            caps.script = False
    with_memory = caps.memory is not False
    for m in meta.key_metadata(keys=keys, client=client):
        if not m.exists:
            rows += (m.key, VANISHED, b"none", UNKNOWN_MEMORY)
        else:
            rows += (m.key, NO_TTL if m.ttl_ms is None else m.ttl_ms, m.type.encode(),
                     UNKNOWN_MEMORY if m.memory is None else m.memory)
    return rows, spent[0] + len(keys) * (3 if with_memory else 2)


def _two_step_batch(client, cursor, *, count, prefix):
    """SCAN, then the metadata of the keys under `prefix`: for servers that refuse the
    scan script (no scripting, or MEMORY refused inside a script)."""
    next_cursor, keys = client.scan(cursor=cursor, count=count)
    ours = [key for key in keys if key.startswith(prefix)]
    rows, commands = _metadata_rows(client, ours)
    return Fetched(int(next_cursor), len(keys), len(keys) - len(ours), rows, 1 + commands)


def fetch_batch(client, cursor, *, count, prefix):
    """The cheapest way this server allows: the scan script (1 command per batch), else
    SCAN + the metadata script (2), else SCAN + a per-key pipeline."""
    caps = capabilities.of(client)
    spent = [0]  # commands of a refused scan script: billed all the same
    if caps.scan_script is not False and caps.script is not False:
        try:
            fetched = scan_script_batch(client, cursor, count=count, prefix=prefix, spent=spent)
            caps.scan_script = True
            return fetched
        except redis.ResponseError as exc:
            if not capabilities.refused(exc):
                raise
            caps.scan_script = False
    fetched = _two_step_batch(client, cursor, count=count, prefix=prefix)
    return dataclasses.replace(fetched, commands=fetched.commands + spent[0])


def batches(client, *, cursor, count, prefix):
    """Yield Fetched batches in SCAN order from `cursor` until the scan is complete.

    With the scan script, the request for the next batch is sent *before* the current
    batch is handed out (its cursor is the first thing in the reply), so Redis runs the
    next script while this process counts the current batch: one connection, no thread,
    at most two batches alive (the one being counted and the one being computed).
    When the consumer stops early (a cancelled review, an error), the request already
    sent is read and dropped; it has been executed, so it is one command the tally does
    not see, like the batches since the last checkpoint of a crashed worker.
    The fallback paths fetch one batch at a time."""
    first = fetch_batch(client, cursor, count=count, prefix=prefix)
    if capabilities.of(client).scan_script is not True or first.cursor == 0:
        yield first
        fetched = first
        while fetched.cursor != 0:
            fetched = fetch_batch(client, fetched.cursor, count=count, prefix=prefix)
            yield fetched
        return
    yield from _pipelined(client, first, count=count, prefix=prefix)


def _pipelined(client, first, *, count, prefix):
    """`batches` on the scan-script path: one connection of the client's pool, with at
    most one request in flight."""
    command = capabilities.script_command(client)  # EVALSHA_RO where the first batch could use it
    pool = client.connection_pool
    conn = pool.get_connection()
    in_flight = False
    try:
        fetched = first
        while fetched.cursor != 0:
            conn.send_command(command, _SCAN_SHA, 0, fetched.cursor, count, prefix)
            in_flight = True
            yield fetched  # counted while Redis computes the next batch
            in_flight = False  # from here the reply (or error) is being read
            try:
                fetched = _from_reply(conn.read_response(), 1)
            except redis.exceptions.NoScriptError:  # script cache flushed mid-review
                conn.send_command("SCRIPT", "LOAD", _SCAN_LUA)
                conn.read_response()
                conn.send_command(command, _SCAN_SHA, 0, fetched.cursor, count, prefix)
                fetched = _from_reply(conn.read_response(), 3)
        yield fetched
    finally:
        if in_flight:  # the consumer stopped early: read the reply it will not use
            try:
                conn.read_response()
            except (redis.RedisError, OSError):
                conn.disconnect()
        pool.release(conn)
