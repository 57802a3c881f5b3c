import pytest
import redis
from django.db import connection
from django.urls import reverse

from continuity import keyspace
from dashboard.devtools import localservers

pytestmark = pytest.mark.usefixtures("transport")


def test_it_reports_every_role_healthy_with_latencies_to_staff(viewer_client, lucia):
    response = viewer_client.get(reverse("healthz"))
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "ok"
    for role in ("postgres", "broker", "cache", "celery"):
        assert data["checks"][role]["ok"] is True, role
        assert data["checks"][role]["latency_ms"] >= 0
    assert data["checks"]["broker"]["queued"] == 0
    assert data["checks"]["monitored"]["lucia"]["ok"] is True


def test_it_tells_anonymous_callers_only_up_or_down_per_component(client, lucia):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {
        "postgres": "up", "broker": "up", "cache": "up", "celery": "up", "monitored": "up"}}
    assert "lucia" not in response.content.decode() and "REDIS_URL" not in response.content.decode()


def test_it_reports_a_down_monitored_redis_in_the_json_not_as_a_500(client, viewer_client, lucia, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    response = viewer_client.get(reverse("healthz"))
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "degraded"
    assert data["checks"]["monitored"]["lucia"]["ok"] is False
    assert "unreachable" in data["checks"]["monitored"]["lucia"]["error"]
    assert data["checks"]["postgres"]["ok"] is True
    anon = client.get(reverse("healthz")).json()
    assert anon["status"] == "degraded" and anon["checks"]["monitored"] == "down"
    assert "lucia" not in str(anon) and "unreachable" not in str(anon)


def test_anonymous_health_is_cached_for_a_few_seconds(client, lucia, monkeypatch, settings):
    settings.HEALTHZ_CACHE_SECONDS = 60
    assert client.get(reverse("healthz")).json()["checks"]["monitored"] == "up"
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    keyspace.forget_cached_status()
    # Within the interval an anonymous caller gets the remembered answer; staff do not.
    assert client.get(reverse("healthz")).json()["checks"]["monitored"] == "up"
    settings.HEALTHZ_CACHE_SECONDS = 0
    assert client.get(reverse("healthz")).json()["checks"]["monitored"] == "down"


def test_it_answers_503_when_postgres_is_down(client, transactional_db):
    connection.close()
    real_port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = str(localservers.free_port())
    try:
        response = client.get(reverse("healthz"))
        assert response.status_code == 503
        data = response.json()
        assert data["status"] == "down" and data["checks"]["postgres"] == "down"
        assert data["checks"]["broker"] == "up"  # the rest is still reported
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


def test_healthz_answers_plain_http_while_every_other_page_redirects_to_https():
    """Production settings (DJANGO_HTTPS on): a load balancer's plain-HTTP probe gets the
    health answer, not a 301 (issue 11, item 8)."""
    from dashboard.tests.test_settings import _manage

    script = (
        "from django.http import HttpResponse\n"
        "from django.middleware.security import SecurityMiddleware\n"
        "from django.test import RequestFactory\n"
        "from django.conf import settings\n"
        "m = SecurityMiddleware(lambda r: HttpResponse('reached'))\n"
        "for path in ('/healthz', '/', '/accounts/login/', '/healthz/x'):\n"
        "    r = m(RequestFactory().get(path, HTTP_HOST='dashboard.example.com'))\n"
        "    print(path, r.status_code, r.get('Location', ''))\n"
        "print('redirect', settings.SECURE_SSL_REDIRECT)\n"
    )
    result = _manage("shell", "--no-imports", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "/healthz 200 ",
        "/ 301 https://dashboard.example.com/",
        "/accounts/login/ 301 https://dashboard.example.com/accounts/login/",
        "/healthz/x 301 https://dashboard.example.com/healthz/x",
        "redirect True",
    ]


def test_healthz_is_reachable_over_http_through_the_whole_stack(client, lucia, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get(reverse("healthz"))
    assert response.status_code == 200 and response.json()["status"] == "ok"
    login = client.get(reverse("login"))
    assert login.status_code == 301 and login["Location"] == "https://testserver/accounts/login/"
