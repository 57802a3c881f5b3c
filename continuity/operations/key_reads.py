"""Reading one key's value, the one way every page, fragment and download does it.

A key of a sensitive namespace (`Namespace.sensitive`; seeded: session and distress) is
shown as metadata only: its value is not even read from Redis (`preview_key(values=False)`).
An operator reveals it with one more request (`reveal=True`), and that read is audited
(`key.reveal`, `key.download`) in the same transaction as the answer is prepared; a viewer
is refused (PermissionDenied), whatever URL or header the request came with. Which
namespace a key belongs to is decided from its bytes (the longest registered prefix),
before any Redis command.
"""

from dataclasses import dataclass

from django.db import transaction

from continuity import keyspace
from continuity.models import Namespace, classify_key
from dashboard import audit, roles


@dataclass(frozen=True)
class KeyRead:
    preview: object  # keyspace.Preview; `withheld` when the value was not read
    namespace: object  # the key's Namespace, or None
    status: object  # its PolicyStatus against that namespace
    sensitive: bool = False
    revealed: bool = False


def sensitive_namespace(database, key):
    """The sensitive Namespace `key` belongs to, or None (Postgres only)."""
    policies = Namespace.objects.for_database(database).policies()
    owner = policies.owner_of(policies.for_key(key))
    return owner if owner is not None and owner.sensitive else None


def _audit_read(action, database, key, namespace, request, actor):
    shown = keyspace.display_key(key)
    audit.record(action=action, target_type="redis.key", target_id=keyspace.encode_key(key)[:255],
                 target_label=f"{database.name}: {shown}", after={"key": shown, "namespace": namespace.prefix},
                 request=request, actor=actor, source=None if request else "cli")


def read_key(*, database, key, user, reveal=False, request=None) -> KeyRead:
    """The key's preview for `user`: its value unless the key is sensitive; with `reveal`,
    a sensitive key's value too, for an operator, audited as key.reveal (PermissionDenied
    for anyone else). Redis errors propagate (`keyspace.FAILURES`)."""
    namespaces = list(Namespace.objects.for_database(database))
    owner = sensitive_namespace(database, key)
    if owner is not None and reveal:
        roles.require_role(user, roles.OPERATOR)
    preview = keyspace.preview_key(database, key, values=owner is None or reveal)
    namespace, status = classify_key(namespaces, preview.meta)
    if owner is not None and reveal and preview.meta.exists:
        with transaction.atomic():
            _audit_read("key.reveal", database, key, owner, request, None if request else user)
    return KeyRead(preview=preview, namespace=namespace, status=status, sensitive=owner is not None,
                   revealed=owner is not None and reveal)


def download_key(*, database, key, user, request=None):
    """The string value of `key` as `keyspace.download_value` gives it (None: gone or not a
    string). A sensitive key's value only for an operator (PermissionDenied otherwise),
    audited as key.download."""
    owner = sensitive_namespace(database, key)
    if owner is not None:
        roles.require_role(user, roles.OPERATOR)
    download = keyspace.download_value(database, key)
    if owner is not None and download is not None:
        with transaction.atomic():
            _audit_read("key.download", database, key, owner, request, None if request else user)
    return download
