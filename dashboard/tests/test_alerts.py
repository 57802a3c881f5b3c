import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from dashboard import alerts
from dashboard.models import AlertChannel, AlertDelivery, AuditEntry, Secret


@pytest.fixture
def channels(db, receiver):
    webhook = AlertChannel.objects.create(name="ops-webhook", kind="webhook", url=receiver.url("/hook"))
    slack = AlertChannel.objects.create(name="ops-slack", kind="slack", url=receiver.url("/services/T0/B0/xyz"))
    AlertChannel.objects.create(name="off", kind="webhook", url=receiver.url("/off"), enabled=False)
    return webhook, slack


def test_it_queues_to_every_enabled_channel_and_delivers(channels, receiver, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        queued = alerts.notify(event="ttl.review", title="TTL review done", text="3 keys without TTL",
                               severity="critical", link="/keyspace/")
    assert queued == 2
    by_path = {r["path"]: r["json"] for r in receiver.requests}
    assert set(by_path) == {"/hook", "/services/T0/B0/xyz"}
    assert by_path["/hook"]["event"] == "ttl.review" and by_path["/hook"]["severity"] == "critical"
    assert by_path["/hook"]["title"] == "TTL review done" and by_path["/hook"]["link"] == "/keyspace/"
    assert by_path["/services/T0/B0/xyz"]["text"].startswith("*TTL review done*\n3 keys without TTL")
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"sent"}


def test_it_fires_once_per_rotation_status_transition(channels, receiver, eager, django_capture_on_commit_callbacks):
    now = timezone.now()
    Secret.objects.create(name="tok", rotation_interval_days=90, due_soon_days=14,
                                   last_rotated=now - timedelta(days=30))

    def check(at):
        with django_capture_on_commit_callbacks(execute=True):
            return alerts.check_rotations(now=at)

    assert check(now).queued == 0  # ok: recorded silently
    assert receiver.requests == []
    due_soon = now + timedelta(days=50)
    result = check(due_soon)
    assert result.transitions == [("tok", "ok", "due_soon")] and result.queued == 2
    assert check(due_soon + timedelta(days=1)).queued == 0  # still due soon: no repeat
    overdue = now + timedelta(days=61)
    assert check(overdue).transitions == [("tok", "due_soon", "overdue")]
    assert check(overdue).queued == 0
    events = [r["json"]["event"] for r in receiver.requests if r["path"] == "/hook"]
    assert events == ["secret.due_soon", "secret.overdue"]
    slack_texts = [r["json"]["text"] for r in receiver.requests if r["path"].startswith("/services/")]
    assert len(slack_texts) == 2 and "Rotation overdue: tok" in slack_texts[-1]


def test_it_alerts_at_once_when_a_secret_is_marked_exposed(channels, receiver, eager, operator_client,
                                                         django_capture_on_commit_callbacks):
    secret = Secret.objects.create(name="tok", last_rotated=timezone.now(), alerted_status="ok")
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("dashboard:secret_exposed", args=["tok"]))
    hooks = [r["json"] for r in receiver.requests if r["path"] == "/hook"]
    assert [h["event"] for h in hooks] == ["secret.exposed"] and hooks[0]["severity"] == "critical"
    secret.refresh_from_db()
    assert secret.alerted_status == "exposed"


def test_it_retries_a_failing_delivery_until_it_succeeds(channels, receiver, eager, django_capture_on_commit_callbacks):
    webhook, slack = channels
    slack.enabled = False
    slack.save()
    receiver.statuses = [500, 503]
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts.notify(event="test.retry", title="t", text="x") == 1
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "sent" and delivery.attempts == 3
    assert len(receiver.requests) == 3
    webhook.refresh_from_db()
    assert webhook.failing_since is None and webhook.last_success_at is not None


def test_it_marks_a_permanently_failing_channel(channels, receiver, eager, admin_client,
                                               django_capture_on_commit_callbacks):
    webhook, slack = channels
    slack.enabled = False
    slack.save()
    receiver.statuses = [500] * 10
    with django_capture_on_commit_callbacks(execute=True):
        alerts.notify(event="test.fail", title="t", text="x")
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "failed" and delivery.attempts == alerts.MAX_ATTEMPTS
    assert delivery.last_error == "not delivered"  # the reason is in the server log only
    assert len(receiver.requests) == alerts.MAX_ATTEMPTS
    webhook.refresh_from_db()
    assert webhook.failing_since is not None and webhook.last_error == "not delivered"
    page = admin_client.get(reverse("dashboard:alert_list")).content.decode()
    assert 'data-testid="channel-failing"' in page
    assert "/services/T0/B0/xyz" not in page  # the Slack credential path is masked


def test_it_reports_an_unreachable_channel_without_its_url(db, settings, caplog):
    settings.ALERT_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    channel = AlertChannel.objects.create(name="dead", url="http://127.0.0.1:9/secret-path")
    with caplog.at_level(logging.WARNING, logger="dashboard.alerts"):
        ok, message = alerts.send_test(channel)
    assert (ok, message) == (False, "Test alert not delivered.")
    assert "127.0.0.1: could not connect" in caplog.text and "secret-path" not in caplog.text
    channel.refresh_from_db()
    assert channel.is_failing


@pytest.mark.parametrize("persona,status", [("viewer", 403), ("operator", 403), ("admin", 200)])
def test_it_lets_only_admins_send_a_test(client, request, channels, receiver, persona, status):
    webhook, _ = channels
    client.force_login(request.getfixturevalue(persona))
    assert client.get(reverse("dashboard:alert_list")).status_code == status
    response = client.post(reverse("dashboard:alert_channel_test", args=[webhook.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == status
    if status == 200:
        body = response.content.decode()
        assert "Test alert delivered" in body and "<html" not in body
        assert receiver.requests[0]["json"]["event"] == "test"
        assert AuditEntry.objects.get(action="alert_channel.test").after["ok"] is True
    else:
        assert receiver.requests == []


def test_it_creates_a_channel_with_a_masked_url_in_the_audit(admin_client, receiver, db):
    url = receiver.url("/services/T1/B1/verysecretpart")
    response = admin_client.post(reverse("dashboard:alert_channel_create"),
                                 {"name": "slack", "kind": "slack", "url": url, "enabled": "on"})
    assert response.status_code == 302
    assert AlertChannel.objects.get(name="slack").url == url
    entry = AuditEntry.objects.get(action="alert_channel.create")
    assert "verysecretpart" not in json.dumps(entry.after) and entry.after["url"].startswith("http://127.0.0.1")


def test_it_runs_the_beat_task_and_its_command_twin(channels, receiver, eager, django_capture_on_commit_callbacks):
    from dashboard.tasks import check_rotations_task

    Secret.objects.create(name="old", rotation_interval_days=30, last_rotated=timezone.now() - timedelta(days=40))
    with django_capture_on_commit_callbacks(execute=True):
        result = check_rotations_task.delay().get()
    assert [list(t) for t in result["transitions"]] == [["old", "", "overdue"]]
    assert result["queued"] == 2
    out = StringIO()
    call_command("check_rotations", stdout=out)
    assert "0 changed" in out.getvalue()
    Secret.objects.create(name="new", rotation_interval_days=30, last_rotated=timezone.now() - timedelta(days=20))
    out = StringIO()
    call_command("check_rotations", stdout=out)
    assert "new: unknown -> due_soon" in out.getvalue()
