"""Operator actions on one live key, with their audit entry (Redis + Postgres + audit).

A TTL action never leaves a key above its namespace's maximum TTL for an operator: it is
refused, naming the maximum. An admin may go above it (up to the 10-year cap) only with a
reason, which the audit entry keeps. The limit is applied where the TTL is written
(`keyspace.change_key`, inside the script that reads the current TTL for an extension),
whatever form or client led here.
"""

from dataclasses import dataclass

from django.db import transaction

from continuity import keyspace
from continuity.humanize import exact_duration
from continuity.models import Namespace
from dashboard import audit, roles

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


def ttl_limit(*, database, key, user, reason=""):
    """(max seconds, refusal text, the namespace's maximum or None) of a TTL action on `key`
    by `user`: the namespace's maximum TTL (no namespace or no maximum: the 10-year cap),
    lifted to the cap for an admin who gives a reason."""
    policy = Namespace.objects.for_database(database).policies().for_key(key)
    if policy is None or not policy.max_ttl_seconds:
        return keyspace.MAX_TTL_SECONDS, "", None
    maximum, prefix = policy.max_ttl_seconds, policy.prefix.decode("utf-8", "backslashreplace")
    if roles.has_role(user, roles.ADMIN) and reason.strip():
        return keyspace.MAX_TTL_SECONDS, "", maximum
    who = ("Give a reason to go above it (it goes into the audit log)." if roles.has_role(user, roles.ADMIN)
           else "Only an admin can go above it, with a reason.")
    return maximum, (f"the TTL would be above the maximum of {exact_duration(maximum)} of the namespace "
                     f"{policy.name} ({prefix}). Nothing was changed. {who}"), maximum


def act_on_key(*, database, key, action, seconds=None, reason="", request=None, actor=None, actor_label="",
               source=None):
    """Apply one key action and audit it in the same transaction. The audit entry names
    the key in its escaped display form plus its base64url token (exact bytes). A TTL above
    the namespace's maximum is refused (`ttl_limit`) unless an admin gives a `reason`."""
    user = request.user if request is not None else actor
    limit, too_long, maximum = keyspace.MAX_TTL_SECONDS, "", None
    if action in (keyspace.SET_TTL, keyspace.EXTEND_TTL):
        limit, too_long, maximum = ttl_limit(database=database, key=key, user=user, reason=reason)
    with transaction.atomic():
        change = keyspace.change_key(database, key, action, seconds=seconds, max_seconds=limit, too_long=too_long)
        if change.refused:  # nothing was attempted: nothing to audit
            return KeyActionResult(ok=False, message=f"{ACTION_LABELS[action]}: {change.refused}", change=change)
        shown = keyspace.display_key(key)
        after = {"key": shown, "seconds": seconds, "applied": change.applied, **_meta_json(change.after)}
        if maximum and (change.after.ttl_ms or 0) > maximum * 1000:  # an admin's, with the reason in the note
            after["above_namespace_max_seconds"] = maximum
        entry = audit.record(
            action=f"key.{action}", target_type="redis.key", target_id=keyspace.encode_key(key)[:255],
            target_label=f"{database.name}: {shown}",
            before={"key": shown, **_meta_json(change.before)}, after=after, note=reason.strip(),
            request=request, actor=actor, actor_label=actor_label, source=source,
        )
    label = ACTION_LABELS[action]
    if not change.applied:
        return KeyActionResult(ok=False, message=f"{label}: the key no longer exists or was not changed.",
                               change=change, audit_entry=entry)
    return KeyActionResult(ok=True, message=f"{label}: done.", change=change, audit_entry=entry)
