"""Writes on one key, through the write URL: set or extend a TTL, expire now, delete.
Each returns the key's metadata before and after, for the audit log. On a Redis Cluster
the commands go through redis-py's RedisCluster (`primaries.keyed_client`), which sends
them to the primary owning the key's slot and follows MOVED/ASK."""

import hashlib
from dataclasses import dataclass

from continuity.keyspace.primaries import keyed_client
from continuity.keyspace.meta import KeyMeta, key_metadata

SET_TTL, EXTEND_TTL, EXPIRE_NOW, DELETE = "set_ttl", "extend_ttl", "expire_now", "delete"
ACTIONS = (SET_TTL, EXTEND_TTL, EXPIRE_NOW, DELETE)
# No action leaves a key with a TTL above this (an extension counts what was already there).
MAX_TTL_SECONDS = 10 * 365 * 86400

# Extend in one step: read PTTL and set the sum atomically, refusing (-2) past the cap and
# answering -1 when the key is gone or has no TTL any more.
_EXTEND_LUA = """
local current = redis.call('PTTL', KEYS[1])
if current <= 0 then return -1 end
local target = current + tonumber(ARGV[1])
if target > tonumber(ARGV[2]) then return -2 end
return redis.call('PEXPIRE', KEYS[1], target)
"""
EXTEND_SHA = hashlib.sha1(_EXTEND_LUA.encode()).hexdigest()


@dataclass(frozen=True)
class KeyChange:
    action: str
    before: KeyMeta
    after: KeyMeta
    applied: bool  # False when the key was already gone
    refused: str = ""  # why nothing was attempted (e.g. past the TTL cap)

    @property
    def key(self):
        return self.before.key


def change_key(database, key: bytes, action, *, seconds=None, max_seconds=MAX_TTL_SECONDS, too_long="",
               client=None):
    """Apply `action` to `key` and return a KeyChange. `seconds` is the new TTL for
    SET_TTL and the amount added for EXTEND_TTL (a key without TTL gets `seconds`).
    No TTL action leaves the key with a TTL above `max_seconds` (the caller's limit: a
    namespace's maximum, at most MAX_TTL_SECONDS): the set is refused before any write, an
    extension inside the same script call that reads the TTL. A refusal changes nothing
    and says `too_long` (default: the 10-year cap)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown key action {action!r}")
    if action in (SET_TTL, EXTEND_TTL) and (seconds is None or seconds <= 0):
        raise ValueError("a positive number of seconds is needed")
    if action in (SET_TTL, EXTEND_TTL) and seconds > MAX_TTL_SECONDS:
        raise ValueError("at most 10 years of TTL")
    max_seconds = min(max_seconds, MAX_TTL_SECONDS)
    too_long = too_long or "the TTL would pass the 10-year cap; set a TTL instead."
    client = client or keyed_client(database, write=True)
    before = key_metadata(keys=[key], client=client)[0]
    applied, refused = before.exists, ""
    if applied:
        if action == SET_TTL or (action == EXTEND_TTL and before.ttl_ms is None):
            if seconds > max_seconds:
                applied, refused = False, too_long
            else:
                applied = bool(client.expire(key, seconds))
        elif action == EXTEND_TTL:
            answer = client.register_script(_EXTEND_LUA)(keys=[key], args=[seconds * 1000, max_seconds * 1000])
            if answer == -2:
                applied, refused = False, too_long
            else:
                applied = answer == 1
        elif action == EXPIRE_NOW:
            # EXPIRE 0 deletes at once but counts as an expiry (keyspace events say so).
            applied = bool(client.expire(key, 0))
        else:
            applied = bool(client.unlink(key))
    after = key_metadata(keys=[key], client=client)[0]
    return KeyChange(action=action, before=before, after=after, applied=applied, refused=refused)
