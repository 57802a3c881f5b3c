"""The runbook's "what the dashboard does" is what the dashboard does: each sentence is held to
the real /healthz answer (Redis down, Postgres down) and to the alerts really sent."""

import html
import re

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from continuity.operations import alerting, keyspace_watch
from dashboard import seed
from dashboard.devtools import localservers
from dashboard.models import AlertChannel, RedisDatabase


def _text(response):
    """The page as text: tags dropped, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())))


def _behaviour(viewer_client):
    return _text(viewer_client.get(reverse("dashboard:runbook")))


@pytest.fixture
def hook(db, receiver):
    return AlertChannel.objects.create(name="pager", kind="webhook", url=receiver.url("/hook"))


def test_it_quotes_the_code_healthz_really_answers_with_redis_down(viewer_client, lucia, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    response = viewer_client.get(reverse("healthz"))
    status = response.json()["status"]
    assert (response.status_code, status) == (200, "degraded")
    said = _behaviour(viewer_client)
    assert f"GET /healthz answers {response.status_code} with status “{status}” while a monitored Redis is unreachable" \
        in said
    assert "/healthz (503)" not in said


def test_it_quotes_the_code_healthz_really_answers_with_postgres_down(viewer_client, client, lucia, transactional_db):
    said = _behaviour(viewer_client)
    connection.close()
    real_port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = str(localservers.free_port())
    try:
        response = client.get(reverse("healthz"))
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port
    status = response.json()["status"]
    assert (response.status_code, status) == (503, "down")
    assert f"{response.status_code} (“{status}”) only when Postgres is down" in said


def test_it_names_the_alerts_really_sent_and_where_they_go(viewer_client, lucia, hook, receiver, eager, settings,
                                                           monkeypatch, django_capture_on_commit_callbacks):
    settings.ALERT_REDIS_DOWN_MINUTES = 3
    said = _behaviour(viewer_client)
    assert "Where alerts go: To the enabled alert channels: pager." in said
    assert "Checked every minute. After 3 minutes without an answer (ALERT_REDIS_DOWN_MINUTES)" in said
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    start = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        alerting.check_monitored_redis(now=start)
        alerting.check_monitored_redis(now=start + timezone.timedelta(minutes=3))
        keyspace_watch.check_database(lucia)  # unreachable: recorded, nothing compared
    sent = receiver.requests[0]["json"]
    assert sent["event"] == "redis.unreachable"
    assert f"alert {sent['event']} ({sent['severity']}), once" in said
    for event, severity in (("keyspace.lost", "critical"), ("redis.restarted", "warning"),
                            ("redis.persistence_off", "warning")):
        assert f"{event} ({severity})" in said
    assert "more than 50% between two checks (ALERT_KEYSPACE_LOSS_SHARE)" in said


def test_it_says_alerts_go_nowhere_without_a_channel_and_when_a_schedule_is_off(viewer_client, lucia):
    PeriodicTask.objects.filter(name="keyspace watch").update(enabled=False)
    said = _behaviour(viewer_client)
    assert "Where alerts go: Nowhere: no alert channel is enabled (Runbook → Alerts)." in said
    assert "Checked never: its schedule is off (Jobs → Schedules). Alert keyspace.lost" in said


def test_the_database_page_and_the_markdown_say_the_same(viewer_client, lucia, hook):
    page = _text(viewer_client.get(reverse("dashboard:database_detail", args=["lucia"])))
    assert "GET /healthz answers 200 with status “degraded”" in page and "To the enabled alert channels: pager" in page
    markdown = viewer_client.get(reverse("dashboard:runbook_markdown")).content.decode()
    assert "#### What the dashboard does when a Redis fails" in markdown
    assert "answers 200 with status “degraded”" in markdown


def test_seeding_replaces_the_old_wrong_default_but_never_an_operators_text(lucia):
    old = seed.REPLACED_DEFAULTS["alerting_path"][0]
    RedisDatabase.objects.filter(pk=lucia.pk).update(alerting_path=old)
    assert seed.seed_failure_plan(RedisDatabase.objects.get(pk=lucia.pk)) == 1
    lucia.refresh_from_db()
    assert lucia.alerting_path == seed.FAILURE_PLAN["alerting_path"] and "503" not in lucia.alerting_path
    RedisDatabase.objects.filter(pk=lucia.pk).update(alerting_path="PagerDuty, then /healthz (503)")
    assert seed.seed_failure_plan(RedisDatabase.objects.get(pk=lucia.pk)) == 0
    assert RedisDatabase.objects.get(pk=lucia.pk).alerting_path == "PagerDuty, then /healthz (503)"
