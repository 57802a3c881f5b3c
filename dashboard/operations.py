"""Changes to records, each with its audit entry: form saves, rotations, exposure, the
checklist, user accounts and roles, alert channels.

Keyword-only functions returning the changed object or a small result dataclass; each writes
its rows and the audit entry in one transaction. The web views and the management commands
call the same function, so both paths validate and audit alike.
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string

from dashboard import accounts, audit, roles
from dashboard.models import ChecklistItem, RedisDatabase, Rotation, Secret
from dashboard.references import parse_reference
from dashboard.scanning import validate_no_secret


@dataclass(frozen=True)
class RotationResult:
    secret: Secret
    rotation: Rotation
    status_before: str
    status_after: str


def actor_kwargs(request, actor, source, actor_label=""):
    """Who made a change, as `audit.record` takes it: the request, or an actor and source."""
    if request is not None:
        return {"request": request}
    return {"actor": actor, "source": source, "actor_label": actor_label}


def record_rotation(*, secret, verified_how, reference="", note="", actor, actor_label="", request=None,
                    source="web", now=None, rotated_at=None):
    """Append a rotation, move `last_rotated` and the reference, audit it: one transaction.

    `reference` blank means the new value went into the same 1Password item. `rotated_at` is
    when the rotation happened, if not now (1Password's change time). Raises
    PermissionDenied unless `actor` is an operator, ValidationError (never echoing the input)
    on a bad reference or a secret pasted into the text. `actor=None` is only for the command
    line without --by (a shell on the server is already trusted); `actor_label` names it.
    """
    if actor is not None or source != "cli":
        roles.require_role(actor, roles.OPERATOR)
    reference = (reference or "").strip() or secret.reference
    if not reference:
        raise ValidationError({"reference": "This secret has no reference yet: give the new value's reference."})
    errors = {}
    for field, check in (("reference", parse_reference), ("verified_how", validate_no_secret), ("note", validate_no_secret)):
        value = {"reference": reference, "verified_how": verified_how, "note": note}[field]
        try:
            check(value)
        except ValidationError as error:
            errors[field] = error.messages
    if not (verified_how or "").strip():
        errors.setdefault("verified_how", []).append("Say how the new value was verified.")
    if errors:
        raise ValidationError(errors)
    now = now or timezone.now()
    with transaction.atomic():
        locked = Secret.objects.select_for_update().get(pk=secret.pk)
        status_before = locked.rotation_status(now)
        before = {"last_rotated": locked.last_rotated, "reference": locked.reference, "status": status_before}
        label = actor.get_username() if actor is not None else (actor_label or "cli")
        rotated_at = rotated_at or now
        rotation = Rotation(secret=locked, rotated_at=rotated_at, recorded_by=actor, recorded_by_label=label,
                            verified_how=verified_how.strip(), note=(note or "").strip(), source=source)
        rotation.set_reference(reference)
        rotation.save()
        locked.last_rotated = rotated_at
        locked.set_reference(reference)
        locked.save(update_fields=["last_rotated", "reference", "ref_vault", "ref_item", "ref_section",
                                   "ref_field", "ref_attribute", "updated_at"])
        status_after = locked.rotation_status(now)
        audit.record(action="secret.rotate", target=locked, before=before,
                     after={"last_rotated": rotated_at, "reference": locked.reference, "status": status_after,
                            "verified_how": rotation.verified_how},
                     note=rotation.note, **actor_kwargs(request, actor, source, label))
    return RotationResult(secret=locked, rotation=rotation, status_before=status_before, status_after=status_after)


@dataclass(frozen=True)
class ExposureResult:
    secret: Secret
    changed: bool


def mark_exposed(*, secret, actor, note="", request=None, source="web", now=None):
    """Mark a secret exposed (pasted somewhere by mistake): it is due for rotation now."""
    roles.require_role(actor, roles.OPERATOR)
    validate_no_secret(note)
    now = now or timezone.now()
    with transaction.atomic():
        locked = Secret.objects.select_for_update().get(pk=secret.pk)
        if locked.is_exposed():
            return ExposureResult(secret=locked, changed=False)
        before = {"exposed_at": locked.exposed_at, "status": locked.rotation_status(now)}
        locked.exposed_at = now
        locked.save(update_fields=["exposed_at", "updated_at"])
        audit.record(action="secret.exposed", target=locked, before=before,
                     after={"exposed_at": now, "status": locked.rotation_status(now)}, note=note,
                     **actor_kwargs(request, actor, source))
    # Exposure is urgent: alert now rather than at the next daily check.
    from dashboard import alerts

    alerts.check_rotations(secrets=Secret.objects.filter(pk=locked.pk), now=now)
    return ExposureResult(secret=locked, changed=True)


def set_checklist_item(*, item, done, note, actor, request=None, source="web"):
    """Mark a checklist item done (by `actor`, now) or not done, with a note. Audited."""
    roles.require_role(actor, roles.OPERATOR)
    validate_no_secret(note)
    with transaction.atomic():
        locked = ChecklistItem.objects.select_for_update().get(pk=item.pk)
        before = {"done_by": locked.done_by.get_username() if locked.done_by else None,
                  "done_at": locked.done_at, "note": locked.note}
        if done and not locked.done_at:
            locked.done_by, locked.done_at = actor, timezone.now()
        elif not done:
            locked.done_by, locked.done_at = None, None
        locked.note = note
        locked.save()
        audit.record(action="checklist.done" if done else "checklist.undone", target=locked, before=before,
                     after={"done_by": locked.done_by.get_username() if locked.done_by else None,
                            "done_at": locked.done_at, "note": locked.note},
                     **actor_kwargs(request, actor, source))
    return locked


def save_record(*, form, action, actor, request=None, source="web"):
    """Save a valid ModelForm (create or edit) and audit before/after as `action`.

    `before` is read from the database: by now the form has already written the new values
    onto `form.instance`.
    """
    roles.require_role(actor, roles.OPERATOR)
    instance = form.instance
    with transaction.atomic():
        before = None
        if instance.pk:
            before = audit.snapshot(type(instance).objects.select_for_update().get(pk=instance.pk))
        obj = form.save()
        audit.record(action=action, target=obj, before=before, after=audit.snapshot(obj),
                     **actor_kwargs(request, actor, source))
    return obj


def save_database(*, form, actor, reason="", request=None, source="web"):
    """Create or edit a Redis database record from a valid RedisDatabaseForm; audited as
    database.create or database.edit with `reason` as the note.

    Creating a record, or changing what bounds its keyspace (`RedisDatabase.GUARDED_FIELDS`:
    the key prefix and the URL variables), is an admin's decision and needs a reason
    (PermissionDenied, ValidationError). The keyspace rule (`RedisDatabase.keyspace_conflict`:
    records on one Redis keyspace share one key prefix) is checked again here, with every
    record locked, so two saves cannot each pass it alone."""
    instance = form.instance
    guarded = form.guarded_changes()
    roles.require_role(actor, roles.ADMIN if guarded else roles.OPERATOR)
    reason = (reason or "").strip()
    if guarded:
        if not reason:
            raise ValidationError({"reason": "Give a reason: creating a record or changing its key prefix or URL "
                                             "variables is audited with it."})
        validate_no_secret(reason)
    with transaction.atomic():
        locked = {db.pk: db for db in RedisDatabase.objects.select_for_update()}
        before = audit.snapshot(locked[instance.pk]) if instance.pk else None
        conflict = instance.keyspace_conflict()
        if conflict:
            raise ValidationError({"key_prefix": conflict})
        shared = [db.name for db in RedisDatabase.objects.on_keyspace_of(instance) if db.pk != instance.pk]
        obj = form.save()
        note = reason
        if shared and guarded:
            note = f"{reason} (shares its Redis keyspace with {', '.join(shared)})"
        audit.record(action="database.edit" if before else "database.create", target=obj, before=before,
                     after=audit.snapshot(obj), note=note, **actor_kwargs(request, actor, source))
    return obj


@dataclass(frozen=True)
class NewUser:
    user: object
    password: str  # shown once to the admin who created the account, never stored or audited


def create_user(*, username, email, role, actor, request=None, source="web"):
    """Create an account with a random password and `role`; audited (without the password)."""
    roles.require_role(actor, roles.ADMIN)
    password = get_random_string(20)
    with transaction.atomic():
        user = get_user_model().objects.create_user(username, email, password)
        roles.set_role(user, role)
        accounts.require_password_change(user)  # the password shown once only opens "set your own"
        audit.record(action="user.create", target=user,
                     after={"username": user.username, "email": user.email, "role": role},
                     **actor_kwargs(request, actor, source))
    return NewUser(user=user, password=password)


def create_account(*, username, email="", role, password, one_time=False, actor_label, source="cli"):
    """Create an account with a password its owner chose (or, `one_time`, one that only opens
    "set your own password"), and `role`; audited without the password. For commands run
    with shell access to the deployment (`manage.py create_user`), where no dashboard user
    acts. ValidationError for a taken username, an unknown role or a password Django's
    validators refuse (their messages never quote it)."""
    from django.contrib.auth.password_validation import validate_password

    if role not in roles.ROLES:
        raise ValidationError(f"Unknown role {role!r}; choose one of {', '.join(roles.ROLES)}.")
    if get_user_model().objects.filter(username__iexact=username).exists():
        raise ValidationError(f"The username {username!r} is taken.")
    validate_password(password, get_user_model()(username=username, email=email))
    with transaction.atomic():
        user = get_user_model().objects.create_user(username, email, password)
        roles.set_role(user, role)
        if one_time:
            accounts.require_password_change(user)
        audit.record(action="user.create", target=user,
                     after={"username": user.username, "email": user.email, "role": role, "one_time": one_time},
                     actor_label=actor_label, source=source)
    return user


def change_user_role(*, user, role, is_active, actor, request=None, source="web"):
    """Give `user` the role `role` and (de)activate it; audited. An admin cannot remove
    their own admin role or deactivate themselves (ValidationError)."""
    roles.require_role(actor, roles.ADMIN)
    if user == actor and (role != roles.ADMIN or not is_active):
        raise ValidationError("You cannot remove your own admin role or deactivate yourself.")
    with transaction.atomic():
        before = {"role": roles.role_of(user), "is_active": user.is_active}
        roles.set_role(user, role)
        user.is_active = is_active
        user.save(update_fields=["is_active"])
        if before["is_active"] and not is_active:
            accounts.end_sessions(user)
        audit.record(action="user.role", target=user, before=before, after={"role": role, "is_active": user.is_active},
                     **actor_kwargs(request, actor, source))
    return user


def save_alert_channel(*, form, actor, request=None, source="web"):
    """Create or edit an alert channel from a valid AlertChannelForm; audited with the URL
    masked (a Slack URL is a credential)."""
    roles.require_role(actor, roles.ADMIN)
    instance = form.instance
    with transaction.atomic():
        before = None
        if instance.pk:
            before = type(instance).objects.select_for_update().get(pk=instance.pk).audit_snapshot()
        channel = form.save()
        audit.record(action="alert_channel.edit" if before else "alert_channel.create", target=channel,
                     before=before, after=channel.audit_snapshot(), **actor_kwargs(request, actor, source))
    return channel


@dataclass(frozen=True)
class ChannelTest:
    channel: object
    ok: bool
    message: str


def send_test_alert(*, channel, actor, request=None, source="web"):
    """Send a test alert to `channel` now and audit the outcome."""
    from dashboard import alerts

    roles.require_role(actor, roles.ADMIN)
    ok, message = alerts.send_test(channel)
    with transaction.atomic():
        channel.refresh_from_db()
        audit.record(action="alert_channel.test", target=channel, after={"ok": ok, "result": message},
                     **actor_kwargs(request, actor, source))
    return ChannelTest(channel=channel, ok=ok, message=message)
