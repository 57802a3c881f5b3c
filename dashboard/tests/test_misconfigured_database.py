"""A database record whose URL variable cannot hold a Redis URL (issue 11, item 1): refused
when saved, and shown as "misconfigured: why" on its own pages and in /healthz when it got
into the database anyway. Never a 500, never an environment value in a response."""

import os

import pytest
from django.urls import reverse

from dashboard.models import AuditEntry, RedisDatabase

PG_SECRET = "pg-Secret-Passw0rd-xyz"
PG_URL = f"postgres://dashboard:{PG_SECRET}@db.internal:5432/dashboard"


@pytest.fixture
def hostile_env(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", PG_URL)
    monkeypatch.setenv("LUCIA_PG_URL", PG_URL)
    return [PG_SECRET, os.environ["PATH"]]


def _assert_no_env_values(body, values):
    for value in values:
        assert value not in body


@pytest.mark.parametrize("url_env, why", [
    ("DATABASE_URL", "DATABASE_URL is one of the dashboard&#x27;s own settings"),
    ("PATH", "PATH does not end in _URL"),
    ("LUCIA_PG_URL", "LUCIA_PG_URL is set, but its value is not a Redis URL"),
])
def test_it_shows_a_misconfigured_record_on_its_own_pages_and_nowhere_breaks(
        client, viewer_client, operator_client, lucia, hostile_env, url_env, why):
    # Bypassing the form, as an older release or a database shell could.
    RedisDatabase.objects.filter(pk=lucia.pk).update(url_env=url_env)
    pages = {
        "home": reverse("dashboard:home"),
        "overview": reverse("continuity:overview"),
        "summary": reverse("continuity:database_summary", args=["lucia"]),
        "browse": reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:",
        "detail": reverse("dashboard:database_detail", args=["lucia"]),
        "edit": reverse("dashboard:database_edit", args=["lucia"]),
    }
    for name, url in pages.items():
        response = operator_client.get(url)
        body = response.content.decode()
        assert response.status_code == 200, name
        _assert_no_env_values(body, hostile_env)
        # Every full page's banner names the record as misconfigured, without the reason.
        assert ("Redis lucia is misconfigured." in body) is (name != "summary"), name
        if name in ("detail", "edit", "summary", "browse"):
            assert f"misconfigured: {why}" in body, name
        else:
            assert why not in body, name

    viewer = viewer_client.get(reverse("healthz"))
    assert viewer.status_code == 200
    lucia_health = viewer.json()["checks"]["monitored"]["lucia"]
    assert lucia_health["ok"] is False
    assert lucia_health["error"].startswith(f"misconfigured: {why.replace('&#x27;', chr(39))}")
    _assert_no_env_values(viewer.content.decode(), hostile_env)

    anon = client.get(reverse("healthz"))
    assert anon.status_code == 200 and anon.json()["status"] == "degraded"
    assert anon.json()["checks"]["monitored"] == "down"
    assert "misconfigured" not in anon.content.decode() and "lucia" not in anon.content.decode()
    _assert_no_env_values(anon.content.decode(), hostile_env)


@pytest.mark.parametrize("url_env, message", [
    ("DATABASE_URL", "Refused: DATABASE_URL is one of the dashboard&#x27;s own settings"),
    ("CELERY_BROKER_URL", "Refused: CELERY_BROKER_URL is one of the dashboard&#x27;s own settings"),
    ("PATH", "Refused: PATH does not end in _URL"),
    ("LUCIA_PG_URL", "Refused: LUCIA_PG_URL is set, but its value is not a Redis URL"),
])
def test_it_refuses_a_url_variable_that_cannot_hold_a_redis_url_when_saved(
        admin_client, lucia, hostile_env, url_env, message):
    from dashboard.record_forms import RedisDatabaseForm

    data = {name: value for name, value in RedisDatabaseForm(instance=lucia).initial.items() if value is not None}
    data["read_regions"] = ",".join(lucia.read_regions)
    audited = AuditEntry.objects.count()
    for field in ("url_env", "readonly_url_env"):
        response = admin_client.post(reverse("dashboard:database_edit", args=["lucia"]),
                                     {**data, field: url_env, "reason": "move to the new variable"})
        body = response.content.decode()
        assert response.status_code == 200
        assert message in body
        _assert_no_env_values(body, hostile_env)
    lucia.refresh_from_db()
    assert (lucia.url_env, lucia.readonly_url_env) == ("REDIS_URL", "")
    assert AuditEntry.objects.count() == audited


def test_it_accepts_a_redis_url_variable(admin_client, lucia, monkeypatch, redis_server):
    from dashboard.record_forms import RedisDatabaseForm

    monkeypatch.setenv("LUCIA_RO_URL", redis_server.url(0))
    data = {name: value for name, value in RedisDatabaseForm(instance=lucia).initial.items() if value is not None}
    data["read_regions"] = ",".join(lucia.read_regions)
    response = admin_client.post(reverse("dashboard:database_edit", args=["lucia"]),
                                 {**data, "readonly_url_env": "LUCIA_RO_URL", "reason": "a read-only user for reviews"})
    assert response.status_code == 302
    lucia.refresh_from_db()
    assert lucia.readonly_url_env == "LUCIA_RO_URL"
