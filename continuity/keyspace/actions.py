"""Writes on one key, through the write URL: set or extend a TTL, expire now, delete.
Each returns the key's metadata before and after, for the audit log."""

from dataclasses import dataclass

from continuity.keyspace.connection import client_for
from continuity.keyspace.meta import KeyMeta, key_metadata

SET_TTL, EXTEND_TTL, EXPIRE_NOW, DELETE = "set_ttl", "extend_ttl", "expire_now", "delete"
ACTIONS = (SET_TTL, EXTEND_TTL, EXPIRE_NOW, DELETE)


@dataclass(frozen=True)
class KeyChange:
    action: str
    before: KeyMeta
    after: KeyMeta
    applied: bool  # False when the key was already gone

    @property
    def key(self):
        return self.before.key


def change_key(database, key: bytes, action, *, seconds=None, client=None):
    """Apply `action` to `key` and return a KeyChange. `seconds` is the new TTL for
    SET_TTL and the amount added for EXTEND_TTL (a key without TTL gets `seconds`)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown key action {action!r}")
    if action in (SET_TTL, EXTEND_TTL) and (seconds is None or seconds <= 0):
        raise ValueError("a positive number of seconds is needed")
    client = client or client_for(database, write=True)
    before = key_metadata(keys=[key], client=client)[0]
    applied = before.exists
    if applied:
        if action == SET_TTL:
            applied = bool(client.expire(key, seconds))
        elif action == EXTEND_TTL:
            if before.ttl_ms is None:
                applied = bool(client.expire(key, seconds))
            else:
                # GT: never shortens a TTL that someone else raised in the meantime.
                current = client.pttl(key)
                applied = current > 0 and bool(client.pexpire(key, current + seconds * 1000, gt=True))
        elif action == EXPIRE_NOW:
            # EXPIRE 0 deletes at once but counts as an expiry (keyspace events say so).
            applied = bool(client.expire(key, 0))
        else:
            applied = bool(client.unlink(key))
    after = key_metadata(keys=[key], client=client)[0]
    return KeyChange(action=action, before=before, after=after, applied=applied)
