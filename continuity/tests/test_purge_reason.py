"""The purge reason is scanned like any free text (web and CLI), and alerts never carry it."""

import io
import logging

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from continuity.models import PurgeRun
from dashboard.models import AlertChannel, AlertDelivery, AuditEntry

TOKEN = "Zx81kQpa9Ym3WvT7cR2n"
PASTED_URL = f"rediss://default:{TOKEN}@eu1-lucia.upstash.io:6379"


@pytest.fixture
def filled(monitored, lucia):
    for i in range(5):
        monitored.set(f"lucia:session:{i}", b"v")
    monitored.set(b"lucia:focus:1", b"v")
    return monitored


def previewed(client, capture):
    """POST the purge form and let the worker's preview run (eagerly, on commit)."""
    with capture(execute=True):
        client.post(reverse("continuity:purge_new"),
                    {"database": "lucia", "target_kind": "prefix", "target": "lucia:session:", "action": "delete"})
    return PurgeRun.objects.get()


def test_it_refuses_a_secret_in_the_web_purge_reason_without_echo(operator_client, filled, caplog, eager,
                                                                   django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    run = previewed(operator_client, django_capture_on_commit_callbacks)
    response = operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                    {"confirmation": "lucia:session:", "reason": f"cleanup, old url {PASTED_URL}"})
    body = response.content.decode()
    assert response.status_code == 400 and "looks like a secret" in body
    assert TOKEN not in body and TOKEN not in caplog.text
    assert '<textarea class="textarea" name="reason" id="id_reason" rows="2"></textarea>' in body
    run.refresh_from_db()
    assert run.status == "previewed" and run.reason == "" and filled.dbsize() == 6
    assert not any(TOKEN in f"{e.note}{e.before}{e.after}" for e in AuditEntry.objects.all())


def test_it_refuses_a_secret_in_the_cli_purge_reason_before_any_preview(filled, operator):
    with pytest.raises(CommandError) as caught:
        call_command("purge", "--action", "delete",
                     "--database", "lucia", "--prefix", "lucia:session:", "--yes", "--as", operator.username,
                     "--reason", f"token={TOKEN}", stdout=io.StringIO(), stderr=io.StringIO())
    assert "looks like a secret" in str(caught.value) and TOKEN not in str(caught.value)
    assert not PurgeRun.objects.exists() and filled.dbsize() == 6


def test_a_purge_alert_carries_neither_the_reason_nor_the_target(operator_client, filled, receiver, eager,
                                                                 django_capture_on_commit_callbacks):
    AlertChannel.objects.create(name="ops", kind="webhook", url=receiver.url("/hook"))
    run = previewed(operator_client, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                             {"confirmation": "lucia:session:", "reason": "customer Jane Roe asked, ticket 4411"})
    run.refresh_from_db()
    assert run.status == "succeeded" and run.reason == "customer Jane Roe asked, ticket 4411"
    [payload] = [r["json"] for r in receiver.requests]
    assert payload["event"] == "purge.finished" and payload["link"].endswith(run.get_absolute_url())
    assert payload["text"] == f"Purge #{run.pk} (delete) on lucia succeeded: matched 5, deleted 5, skipped 0."
    stored = AlertDelivery.objects.get()
    assert "Jane Roe" not in stored.text + stored.title and "lucia:session:" not in stored.text + stored.title


def test_a_rotation_alert_carries_no_free_text_of_the_secret(db, receiver, eager, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from dashboard import alerts
    from dashboard.models import Secret

    AlertChannel.objects.create(name="ops", kind="webhook", url=receiver.url("/hook"))
    now = timezone.now()
    Secret.objects.create(name="tok", title="REST token of Jane's side project", purpose="billing export",
                          rotation_interval_days=90, due_soon_days=14, last_rotated=now - timedelta(days=100),
                          alerted_status="ok")
    with django_capture_on_commit_callbacks(execute=True):
        assert alerts.check_rotations(now=now).queued == 1
    [payload] = [r["json"] for r in receiver.requests]
    assert payload["event"] == "secret.overdue" and payload["title"] == "Rotation overdue: tok"
    assert payload["text"].startswith("Secret tok is now overdue")
    assert "Jane" not in str(payload) and "billing" not in str(payload)
