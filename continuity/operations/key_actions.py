"""Operator actions on one live key, with their audit entry (Redis + Postgres + audit)."""

from dataclasses import dataclass

from django.db import transaction

from continuity import keyspace
from dashboard import audit

ACTION_LABELS = {
    "set_ttl": "Set TTL",
    "extend_ttl": "Extend TTL",
    "expire_now": "Expire now",
    "delete": "Delete",
}


@dataclass(frozen=True)
class KeyActionResult:
    ok: bool
    message: str
    change: object = None  # keyspace.KeyChange
    audit_entry: object = None


def _meta_json(meta):
    return {"exists": meta.exists, "type": meta.type, "ttl_ms": meta.ttl_ms, "memory": meta.memory}


def act_on_key(*, database, key, action, seconds=None, request=None, actor=None, actor_label="", source=None):
    """Apply one key action and audit it in the same transaction. The audit entry names
    the key in its escaped display form plus its base64url token (exact bytes)."""
    with transaction.atomic():
        change = keyspace.change_key(database, key, action, seconds=seconds)
        if change.refused:  # nothing was attempted: nothing to audit
            return KeyActionResult(ok=False, message=f"{ACTION_LABELS[action]}: {change.refused}", change=change)
        shown = keyspace.display_key(key)
        entry = audit.record(
            action=f"key.{action}", target_type="redis.key", target_id=keyspace.encode_key(key)[:255],
            target_label=f"{database.name}: {shown}",
            before={"key": shown, **_meta_json(change.before)},
            after={"key": shown, "seconds": seconds, "applied": change.applied, **_meta_json(change.after)},
            request=request, actor=actor, actor_label=actor_label, source=source,
        )
    label = ACTION_LABELS[action]
    if not change.applied:
        return KeyActionResult(ok=False, message=f"{label}: the key no longer exists or was not changed.",
                               change=change, audit_entry=entry)
    return KeyActionResult(ok=True, message=f"{label}: done.", change=change, audit_entry=entry)
