"""Redis unreachable, timing out, refusing commands (ACL) or answering a quota error:
a clear message in the page region, a retry button, no 500 and no hang."""

import shutil
import tempfile

import pytest
import redis
from django.urls import reverse

from continuity import keyspace
from dashboard.devtools import localservers
from dashboard.models import RedisDatabase


@pytest.fixture
def other_database(db, monkeypatch):
    """A database record reading its URL from a variable of its own (set by each test with
    monkeypatch); cached clients are dropped before and after so each test's URL and timeouts
    apply."""
    monkeypatch.delenv("OTHER_REDIS_URL", raising=False)
    record = RedisDatabase.objects.create(name="other", environment="staging", url_env="OTHER_REDIS_URL")
    keyspace.forget_clients()
    yield record
    keyspace.forget_clients()


def assert_fails_fast(database, timeout):
    """The client a page uses gives up after the configured timeouts, without retrying: what
    keeps a dead or paused Redis from hanging a page, asserted without a wall clock."""
    client = keyspace.client_for(database)
    options = client.connection_pool.connection_kwargs
    assert options["socket_timeout"] == timeout and options["socket_connect_timeout"] == timeout
    assert client.get_retry().get_retries() == 0 and not options.get("retry_on_timeout")


def pages(name, key=b"lucia:session:1"):
    token = keyspace.encode_key(key)
    return {
        "browse": reverse("continuity:browse", args=[name]) + "?prefix=lucia:",
        "detail": reverse("continuity:key_detail", args=[name, token]),
        "lookup": reverse("continuity:key_lookup", args=[name]) + "?id=1",
        "summary": reverse("continuity:database_summary", args=[name]),
        "stats": reverse("continuity:namespace_stats", args=[name]),
    }


def test_it_shows_a_stopped_server_in_the_region_with_a_retry(viewer_client, other_database, monkeypatch, settings):
    settings.REDIS_CONNECT_TIMEOUT = settings.REDIS_READ_TIMEOUT = 0.5
    from continuity.models import Namespace

    Namespace.objects.create(database=other_database, name="session", prefix="lucia:session:")
    datadir = tempfile.mkdtemp(prefix="stopped-redis-")
    server = localservers.LocalRedis(datadir, localservers.free_port()).start()
    server.stop()
    monkeypatch.setenv("OTHER_REDIS_URL", server.url(0))
    try:
        assert_fails_fast(other_database, 0.5)
        for name, url in pages("other").items():
            response = viewer_client.get(url, headers={"HX-Request": "true"})
            assert response.status_code == 200, name
            body = response.content.decode()
            assert "Redis is unreachable" in body, name
            assert "Retry" in body, name
        full = viewer_client.get(pages("other")["browse"])
        assert full.status_code == 200 and 'data-testid="retry"' in full.content.decode()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def test_it_reports_a_missing_url_variable(viewer_client, other_database):
    response = viewer_client.get(pages("other")["browse"])
    assert response.status_code == 200
    assert "The environment variable OTHER_REDIS_URL is not set" in response.content.decode()


@pytest.fixture
def restricted_user(monitored):
    """An ACL user refused INFO, DBSIZE, EVAL, MEMORY, OBJECT and SCRIPT (like Upstash or a
    locked-down managed Redis)."""
    monitored.execute_command("ACL", "SETUSER", "limited", "on", ">limited-pass", "~*", "+@all", "-info", "-dbsize",
                              "-@scripting", "-memory", "-object")
    yield "limited"
    monitored.execute_command("ACL", "DELUSER", "limited")


def test_it_degrades_when_an_acl_refuses_info_dbsize_eval_memory_and_object(
        viewer_client, other_database, restricted_user, monitored, redis_server, lucia, monkeypatch):
    from continuity.models import Namespace

    for ns in Namespace.objects.filter(database=lucia):
        Namespace.objects.create(database=other_database, name=ns.name, prefix=ns.prefix, max_ttl_seconds=3600)
    monitored.set(b"lucia:session:1", b"hello", ex=900)
    monitored.set(b"lucia:session:2", b"x", ex=900)
    monkeypatch.setenv("OTHER_REDIS_URL", f"redis://limited:limited-pass@127.0.0.1:{redis_server.port}/0")
    urls = pages("other")
    browse = viewer_client.get(urls["browse"])
    result = browse.context["result"]
    assert {row.key for row in result.rows} == {b"lucia:session:1", b"lucia:session:2"}
    assert all(row.meta.memory is None and row.meta.ttl_ms > 0 for row in result.rows)
    assert result.dbsize is None
    assert "of ~? keys" in browse.content.decode()
    detail = viewer_client.get(urls["detail"])
    preview = detail.context["preview"]
    assert preview.text == "hello" and preview.encoding is None
    assert "OBJECT ENCODING is refused" in detail.content.decode()
    summary = viewer_client.get(urls["summary"], headers={"HX-Request": "true"}).content.decode()
    assert 'data-testid="summary"' in summary and "n/a" in summary
    lookup = viewer_client.get(urls["lookup"], headers={"HX-Request": "true"}).content.decode()
    assert "1 of 5 namespaces" in lookup


def test_it_times_out_quickly_when_redis_pauses(viewer_client, other_database, monitored, redis_server, settings,
                                                monkeypatch):
    settings.REDIS_CONNECT_TIMEOUT = settings.REDIS_READ_TIMEOUT = 0.3
    monkeypatch.setenv("OTHER_REDIS_URL", redis_server.url(0))
    assert_fails_fast(other_database, 0.3)
    monitored.set(b"lucia:session:1", b"v", ex=60)
    monitored.execute_command("CLIENT", "PAUSE", "2500", "ALL")
    try:
        for name in ("browse", "detail"):
            # The pause outlasts the timeout: an answer here would mean the client waited.
            response = viewer_client.get(pages("other")[name], headers={"HX-Request": "true"})
            assert response.status_code == 200
            assert "Redis did not answer within the timeout." in response.content.decode(), name
    finally:
        monitored.execute_command("CLIENT", "UNPAUSE")
    # Retry once it is back: the same page answers.
    keyspace.forget_clients()
    response = viewer_client.get(pages("other")["detail"])
    assert response.context["preview"].text == "v"


def test_it_shows_a_refused_action_without_a_500(operator_client, other_database, monitored, redis_server, lucia,
                                                 monkeypatch):
    monitored.execute_command("ACL", "SETUSER", "readonly", "on", ">ro-pass", "~*", "+@read", "+@connection")
    try:
        monkeypatch.setenv("OTHER_REDIS_URL", f"redis://readonly:ro-pass@127.0.0.1:{redis_server.port}/0")
        monitored.set(b"lucia:session:1", b"v", ex=60)
        url = reverse("continuity:key_action", args=["other", keyspace.encode_key(b"lucia:session:1")])
        response = operator_client.post(url, {"action": "delete"}, headers={"HX-Request": "true"})
        assert response.status_code == 200
        body = response.content.decode()
        assert "This Redis user may not run UNLINK (ACL): a purge by delete and the key browser&#x27;s Delete " \
               "need +unlink." in body
        assert monitored.exists(b"lucia:session:1") == 1
        from dashboard.models import AuditEntry

        assert not AuditEntry.objects.filter(action__startswith="key.").exists()
    finally:
        monitored.execute_command("ACL", "DELUSER", "readonly")


def test_it_describes_quota_errors_as_such():
    quota = redis.ResponseError("ERR max daily request limit exceeded. Limit: 10000, Usage: 10000")
    text = keyspace.describe_error(quota)
    assert "quota error" in text and "wait before retrying" in text
    assert "quota" not in keyspace.describe_error(redis.ResponseError("WRONGTYPE Operation against a key"))
