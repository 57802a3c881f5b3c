"""Alert channels: queue, deliver (with retries), test, and the rotation-status check.

`notify(...)` is the public entry point other capabilities reuse (TTL reviews, purges):
it queues one delivery per enabled channel and returns how many were queued.
"""

import logging
import socket
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard import jobs
from dashboard import webhooks
from dashboard.models import AlertChannel, AlertDelivery, Secret

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
# The one result a page, the audit log or "send test" shows for any refusal or failure: telling
# "refused" from "HTTP 302" from "could not connect" would make the dashboard a probe of what
# answers where. The reason goes to the server log.
NOT_DELIVERED = "not delivered"
SENT, RETRY, FAILED = "sent", "retry", "failed"
SEVERITIES = ("info", "warning", "critical")
DELIVER_TASK = "dashboard.deliver_alert"  # dashboard.tasks.deliver_alert_task


def notify(*, event: str, title: str, text: str, severity: str = "warning", link: str = "") -> int:
    """Queue delivery of one alert to every enabled channel; returns how many were queued.

    Deliveries are enqueued when the surrounding transaction commits.
    """
    if severity not in SEVERITIES:
        severity = "warning"
    queued = 0
    with transaction.atomic():
        for channel in AlertChannel.objects.enabled():
            delivery = AlertDelivery.objects.create(channel=channel, event=event[:100], title=title[:300],
                                                    text=text, severity=severity, link=link[:500])
            jobs.enqueue_on_commit(DELIVER_TASK, delivery.pk)
            queued += 1
    return queued


def send(channel, *, event, title, text, severity="warning", link="", resolver=socket.getaddrinfo):
    """POST one alert to `channel` now (see `webhooks.post_json`; `resolver` is for tests).
    Raises webhooks.NotSent, whose message is for the server log only."""
    payload = channel.payload(event=event, title=title, text=text, severity=severity, link=link)
    webhooks.post_json(channel.url, payload, resolver=resolver)


def _mark_success(channel, now):
    AlertChannel.objects.filter(pk=channel.pk).update(failing_since=None, last_error="", last_success_at=now)


def _mark_failing(channel, now):
    AlertChannel.objects.filter(pk=channel.pk, failing_since__isnull=True).update(failing_since=now)
    AlertChannel.objects.filter(pk=channel.pk).update(last_error=NOT_DELIVERED)


def deliver(delivery_id, *, max_attempts=MAX_ATTEMPTS):
    """One attempt at a queued delivery. Returns SENT, RETRY or FAILED (after the last
    attempt, which also marks the channel failing). Idempotent once sent or failed."""
    delivery = AlertDelivery.objects.select_related("channel").get(pk=delivery_id)
    if delivery.status != AlertDelivery.QUEUED:
        return SENT if delivery.status == AlertDelivery.SENT else FAILED
    attempt = delivery.attempts + 1
    now = timezone.now()
    try:
        send(delivery.channel, event=delivery.event, title=delivery.title, text=delivery.text,
             severity=delivery.severity, link=delivery.link)
    except webhooks.NotSent as error:
        final = attempt >= max_attempts
        AlertDelivery.objects.filter(pk=delivery.pk).update(
            attempts=attempt, last_error=NOT_DELIVERED, status=AlertDelivery.FAILED if final else AlertDelivery.QUEUED)
        log.warning("alert delivery %s to channel %s not delivered (attempt %s/%s): %s",
                    delivery.pk, delivery.channel.name, attempt, max_attempts, error)
        if final:
            _mark_failing(delivery.channel, now)
            return FAILED
        return RETRY
    AlertDelivery.objects.filter(pk=delivery.pk).update(attempts=attempt, status=AlertDelivery.SENT, sent_at=now,
                                                        last_error="")
    _mark_success(delivery.channel, now)
    return SENT


def send_test(channel):
    """Send a test alert now (the admin's "send test" button). Returns (ok, message)."""
    now = timezone.now()
    try:
        send(channel, event="test", title="Test alert from the continuity dashboard",
             text=f"Channel {channel.name} is wired up.", severity="info")
    except webhooks.NotSent as error:
        log.warning("test alert to channel %s not delivered: %s", channel.name, error)
        _mark_failing(channel, now)
        return False, "Test alert not delivered."
    _mark_success(channel, now)
    return True, "Test alert delivered."


# --- rotation status check (the beat job) --------------------------------------------------
ALERTING = {Secret.DUE_SOON: "warning", Secret.OVERDUE: "critical", Secret.EXPOSED: "critical"}


@dataclass
class RotationCheckResult:
    checked: int = 0
    transitions: list = field(default_factory=list)  # (secret name, old status, new status)
    queued: int = 0


def _secret_link(secret):
    base = getattr(settings, "DASHBOARD_BASE_URL", "").rstrip("/")
    return f"{base}{secret.get_absolute_url()}" if base else secret.get_absolute_url()


def check_rotations(*, secrets=None, now=None):
    """Compare each secret's status with the last one alerted; on a change into due_soon,
    overdue or exposed, alert once. The conditional UPDATE claims the transition, so two
    concurrent runs cannot both alert."""
    now = now or timezone.now()
    result = RotationCheckResult()
    for secret in (secrets if secrets is not None else Secret.objects.all()).order_by("name"):
        result.checked += 1
        status, previous = secret.rotation_status(now), secret.alerted_status
        if status == previous:
            continue
        with transaction.atomic():
            claimed = Secret.objects.filter(pk=secret.pk, alerted_status=previous).update(alerted_status=status)
            if not claimed:
                continue
            result.transitions.append((secret.name, previous, status))
            if status in ALERTING:
                due = secret.next_due()
                # Name, status and due date only: no free text (title, purpose) leaves for a channel.
                text = (f"Secret {secret.name} is now "
                        f"{secret.status_label(now).lower()}" + (f"; due {due:%Y-%m-%d}." if due else "."))
                result.queued += notify(event=f"secret.{status}", title=f"Rotation {status.replace('_', ' ')}: {secret.name}",
                                        text=text, severity=ALERTING[status], link=_secret_link(secret))
    return result
