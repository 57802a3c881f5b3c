"""Alert channels: queue, deliver (with retries), test, and the rotation-status check.

`notify(...)` is the public entry point other capabilities reuse (TTL reviews, purges):
it queues one delivery per enabled channel and returns how many were queued.
"""

import logging
from dataclasses import dataclass, field

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard import jobs
from dashboard import webhooks
from dashboard.models import AlertChannel, AlertDelivery, Secret

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
TIMEOUT = (3.05, 10)  # connect, read: a slow receiver must not hold a worker.
SENT, RETRY, FAILED = "sent", "retry", "failed"
SEVERITIES = ("info", "warning", "critical")
DELIVER_TASK = "dashboard.deliver_alert"  # dashboard.tasks.deliver_alert_task


class DeliveryError(Exception):
    """A send failed. The message never contains the URL (a Slack URL is a credential)."""


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


def send(channel, *, event, title, text, severity="warning", link=""):
    """POST one alert to `channel` now. Raises DeliveryError."""
    payload = channel.payload(event=event, title=title, text=text, severity=severity, link=link)
    problem = webhooks.target_problem(channel.url)
    if problem:  # checked at every send: a channel saved before the rule, or a name that moved
        raise DeliveryError(f"refused: {problem}")
    try:
        response = requests.post(channel.url, json=payload, timeout=TIMEOUT, allow_redirects=False,
                                 headers={"User-Agent": "lucia-continuity-dashboard"})
    except requests.Timeout:
        raise DeliveryError("timed out") from None
    except requests.ConnectionError:
        raise DeliveryError("could not connect") from None
    except requests.RequestException as error:
        raise DeliveryError(type(error).__name__) from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"HTTP {response.status_code}")


def _mark_success(channel, now):
    AlertChannel.objects.filter(pk=channel.pk).update(failing_since=None, last_error="", last_success_at=now)


def _mark_failing(channel, error, now):
    AlertChannel.objects.filter(pk=channel.pk, failing_since__isnull=True).update(failing_since=now)
    AlertChannel.objects.filter(pk=channel.pk).update(last_error=str(error)[:500])


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
    except DeliveryError as error:
        final = attempt >= max_attempts
        AlertDelivery.objects.filter(pk=delivery.pk).update(
            attempts=attempt, last_error=str(error), status=AlertDelivery.FAILED if final else AlertDelivery.QUEUED)
        log.warning("alert delivery %s to channel %s failed (attempt %s/%s): %s",
                    delivery.pk, delivery.channel.name, attempt, max_attempts, error)
        if final:
            _mark_failing(delivery.channel, error, now)
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
    except DeliveryError as error:
        _mark_failing(channel, error, now)
        return False, f"Test failed: {error}."
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
