import pytest
import redis
from django.db import connection
from django.urls import reverse

from continuity import keyspace
from dashboard import localservers


def test_it_reports_every_role_healthy_without_login(client, lucia):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "ok"
    for role in ("postgres", "broker", "cache", "celery"):
        assert data["checks"][role]["ok"] is True, role
        assert data["checks"][role]["latency_ms"] >= 0
    assert data["checks"]["monitored"]["lucia"]["ok"] is True


def test_it_reports_a_down_monitored_redis_in_the_json_not_as_a_500(client, lucia, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "degraded"
    assert data["checks"]["monitored"]["lucia"]["ok"] is False
    assert "unreachable" in data["checks"]["monitored"]["lucia"]["error"]
    assert data["checks"]["postgres"]["ok"] is True


def test_it_answers_503_when_postgres_is_down(client, transactional_db):
    connection.close()
    real_port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = str(localservers.free_port())
    try:
        response = client.get(reverse("healthz"))
        assert response.status_code == 503
        data = response.json()
        assert data["status"] == "down" and data["checks"]["postgres"]["ok"] is False
        assert data["checks"]["broker"]["ok"] is True  # the rest is still reported
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port


def test_every_page_shows_a_banner_when_the_monitored_redis_is_unreachable(viewer_client, lucia, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    for name in ("dashboard:home", "dashboard:audit_list", "continuity:overview", "continuity:job_list"):
        response = viewer_client.get(reverse(name))
        assert response.status_code == 200, name
        assert 'data-testid="redis-banner"' in response.content.decode(), name
    # The Postgres-backed records are still there.
    assert "lucia:session:" in viewer_client.get(reverse("continuity:overview")).content.decode()


def test_the_live_summary_region_explains_the_failure_and_offers_a_retry(viewer_client, lucia, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    response = viewer_client.get(reverse("continuity:database_summary", args=["lucia"]), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="summary-error"' in body and "unreachable" in body and "Retry" in body


def test_the_live_summary_reads_dbsize_and_keys_without_ttl(viewer_client, lucia, monitored):
    monitored.set("lucia:session:1", "x", ex=900)
    monitored.set("lucia:session:2", "x")
    body = viewer_client.get(reverse("continuity:database_summary", args=["lucia"]), HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="summary"' in body
    assert '<p class="title is-4">2</p>' in body  # keys
    assert '<p class="title is-4 has-text-danger">1</p>' in body  # without TTL


@pytest.fixture
def paused_redis(tmp_path):
    server = localservers.LocalRedis(tmp_path / "paused", localservers.free_port()).start()
    yield server
    server.stop()


def test_no_page_hangs_longer_than_the_redis_timeouts(viewer_client, lucia, monkeypatch, paused_redis, settings):
    settings.REDIS_CONNECT_TIMEOUT = settings.REDIS_READ_TIMEOUT = 0.5
    monkeypatch.setenv("REDIS_URL", paused_redis.url(0))
    keyspace.forget_clients()
    redis.Redis.from_url(paused_redis.url(0)).execute_command("CLIENT", "PAUSE", "3000", "ALL")
    response = viewer_client.get(reverse("dashboard:home"))
    assert response.status_code == 200
    # The pause outlasts the timeout: the banner's reason shows the client gave up instead of
    # waiting, and it does not retry.
    assert 'data-testid="redis-banner"' in response.content.decode()
    assert "did not answer within the timeout" in response.content.decode()
    client = keyspace.client_for(lucia)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.5
    assert client.get_retry().get_retries() == 0
    keyspace.forget_clients()
