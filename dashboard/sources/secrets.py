"""Secrets against 1Password: the check (daily beat job, "check now", `manage.py check_sources`)
and the one-click rotation at 1Password's change time.

A check resolves each secret's reference to its 1Password item with list calls only
(`dashboard.sources.onepassword`) and keeps the item's version and change time. Its state:
`reference broken` (no such vault or item), `changed, not recorded` (the item changed later
than the last recorded rotation plus ONEPASSWORD_CHANGE_GRACE_HOURS), or `checked`. A failed
ask keeps the last known state, marked unverified since the first failure. Alerts go out once
per transition into broken or changed.
"""

from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from dashboard import alerts, jobs, operations, roles
from dashboard.env import env_value
from dashboard.models import Secret, SecretCheck
from dashboard.references import parse_reference
from dashboard.sources import OP_CONNECT_HOST, OP_CONNECT_TOKEN, UNREACHABLE, Unavailable, onepassword_configured
from dashboard.sources.onepassword import Broken, Connect

CHECK_TASK = "dashboard.check_onepassword"  # dashboard.tasks.check_onepassword_task
ALERTING = {SecretCheck.BROKEN: "warning", SecretCheck.CHANGED: "warning"}


def grace():
    return timedelta(hours=settings.ONEPASSWORD_CHANGE_GRACE_HOURS)


@dataclass
class SecretsChecked:
    configured: bool = True
    failure: str = ""  # why 1Password could not be asked (the secrets it concerns are unverified)
    states: dict = field(default_factory=dict)  # secret name: state, or "unverified"
    transitions: list = field(default_factory=list)  # (secret name, old state, new state)
    queued: int = 0


def _absolute(path):
    base = getattr(settings, "DASHBOARD_BASE_URL", "").rstrip("/")
    return f"{base}{path}"


def check_secrets(*, secrets=None, now=None, timeout=None):
    """Check every secret with a reference (or those of the queryset `secrets`) against
    1Password. Nothing happens when 1Password is not configured."""
    if not onepassword_configured():
        return SecretsChecked(configured=False)
    result = SecretsChecked()
    queryset = (secrets if secrets is not None else Secret.objects.all()).exclude(reference="").order_by("name")
    extra = {"timeout": timeout} if timeout else {}
    try:
        connect = Connect(env_value(OP_CONNECT_HOST), env_value(OP_CONNECT_TOKEN), **extra)
    except httpx.InvalidURL:  # OP_CONNECT_HOST is not a URL: nothing can be asked
        connect, result.failure = None, UNREACHABLE
    try:
        for secret in queryset:
            check, _ = SecretCheck.objects.get_or_create(secret=secret)
            if not result.failure:
                try:
                    found = connect.item(parse_reference(secret.reference))
                except Unavailable as error:
                    # The rest would fail alike (or add to a rate limit): stop asking.
                    result.failure = error.kind
            at = now or timezone.now()
            if result.failure:
                _unverified(check, result.failure, at)
                result.states[secret.name] = "unverified"
                continue
            _answered(check, found, at)
            check.secret = secret
            state = check.state(grace())
            result.states[secret.name] = state
            _alert_transition(check, state, result, at)
    finally:
        if connect is not None:
            connect.close()
    return result


def _answered(check, found, at):
    broken = found.reason if isinstance(found, Broken) else ""
    SecretCheck.objects.filter(pk=check.pk).update(
        broken=broken, item_version=None if broken else found.version,
        item_changed_at=None if broken else found.changed_at, checked_at=at, unverified_since=None, failure="")
    check.refresh_from_db()


def _unverified(check, failure, at):
    SecretCheck.objects.filter(pk=check.pk).update(failure=failure, failed_at=at)
    SecretCheck.objects.filter(pk=check.pk, unverified_since__isnull=True).update(unverified_since=at)


def _alert_transition(check, state, result, at):
    """Alert once per transition into broken or changed: the conditional UPDATE claims it."""
    previous = check.alerted_state
    if state == previous:
        return
    with transaction.atomic():
        if not SecretCheck.objects.filter(pk=check.pk, alerted_state=previous).update(alerted_state=state):
            return
        name = check.secret.name
        result.transitions.append((name, previous, state))
        if state in ALERTING:
            label = SecretCheck.STATE_LABELS[state]
            # The name and the state only: no reference, title or 1Password text leaves for a channel.
            result.queued += alerts.notify(
                event=f"secret.source_{state}", title=f"1Password: {label}: {name}",
                text=f"Secret {name}: {label} (1Password checked {at:%Y-%m-%d %H:%M} UTC).",
                severity=ALERTING[state], link=_absolute(check.secret.get_absolute_url()))


def request_check(*, secret, actor):
    """"Check now": queue a check of one secret on the worker (operators). A secret without a
    reference has nothing to check: nothing is queued."""
    roles.require_role(actor, roles.OPERATOR)
    if not secret.reference:
        return None
    with transaction.atomic():
        check, _ = SecretCheck.objects.get_or_create(secret=secret)
        SecretCheck.objects.filter(pk=check.pk).update(requested_at=timezone.now())
        jobs.enqueue_on_commit(CHECK_TASK, secret.pk)
    check.refresh_from_db()
    return check


def record_changed_rotation(*, secret, version, actor, request=None, source="web"):
    """Record the rotation 1Password shows: at the item's change time, audited as `actor` with
    the item's version in the note. Refused (ValidationError) unless the secret is `changed,
    not recorded` and 1Password's version is still `version`, the one the operator saw."""
    roles.require_role(actor, roles.OPERATOR)
    with transaction.atomic():
        locked = Secret.objects.select_for_update().get(pk=secret.pk)
        check = SecretCheck.objects.select_for_update().filter(secret=locked).first()
        if check is not None:
            check.secret = locked
        if check is None or check.state(grace()) != SecretCheck.CHANGED:
            raise ValidationError("Nothing to record: 1Password shows no change since the last recorded rotation.")
        if str(check.item_version) != str(version):
            raise ValidationError("1Password has changed again since this page was shown: reload it and look again.")
        changed = check.item_changed_at
        return operations.record_rotation(
            secret=locked, actor=actor, request=request, source=source, rotated_at=changed,
            verified_how=f"1Password Connect: the item changed at {changed:%Y-%m-%d %H:%M} UTC.",
            note=f"1Password item version {check.item_version}")
