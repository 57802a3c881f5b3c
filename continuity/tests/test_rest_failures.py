"""Over Upstash's REST API, a revoked token (401), a rate limit (429), a request over the size
limit and a timeout each give a clear message naming the REST endpoint (never the token) on
the pages and from the commands, and never a 500. A read-only token can do what Upstash's
read-only token can (reads of known keys), and the pages say what it cannot."""

import io
import socket

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from continuity import keyspace
from continuity.models import PurgeRun, ReviewRun
from dashboard.devtools.restbridge import RestBridge

SECRET = "super-secret-rest-token-value"


@pytest.fixture
def keys(monitored):
    for i in range(40):
        monitored.set(f"lucia:session:{i:04d}".encode(), b"v", ex=600)
    monitored.set(b"lucia:session:\xff\xfebin", b"v", ex=600)


@pytest.fixture(params=["revoked", "rate_limited", "too_large", "timeout"])
def failing(request, redis_server, monkeypatch, settings, keys, monitored):
    """lucia over REST, with the REST endpoint failing one way; yields (endpoint, what the
    message must say)."""
    settings.REDIS_READ_TIMEOUT = 0.5
    servers = []
    if request.param == "timeout":
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts connections (the kernel does) and never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        token, said = SECRET, "did not answer within 0.5 s"
    else:
        options = {"rate_limited": {"rate_limit": (0, 3600)}, "too_large": {"max_request_bytes": 300}}
        bridge = RestBridge(redis_server.url(0), {SECRET: (None, None)}, **options.get(request.param, {})).start()
        servers.append(bridge)
        url = bridge.url
        token = "revoked-token" if request.param == "revoked" else SECRET
        if request.param == "too_large":
            monitored.script_flush()  # the scripts' SCRIPT LOAD is the request over the limit
        said = {"revoked": "refused the token (HTTP 401", "rate_limited": "rate-limiting this database (HTTP 429",
                "too_large": "refused a"}[request.param]
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", url)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", token)
    keyspace.forget_clients()
    yield url, said, request.param
    keyspace.forget_clients()
    for bridge in servers:
        bridge.stop()
    if request.param == "timeout":
        silent.close()


def told(text, url, said):
    assert said in text and f"REST endpoint {url}" in text, text
    assert SECRET not in text and "revoked-token" not in text


def test_the_pages_name_the_endpoint_and_never_fail(viewer_client, lucia, failing):
    url, said, kind = failing
    pages = [reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia%3Asession%3A",
             reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(b"lucia:session:\xff\xfebin")]),
             reverse("continuity:database_summary", args=["lucia"])]
    if kind == "too_large":
        pages.pop()  # DBSIZE and INFO fit any size limit
    for page in pages:
        response = viewer_client.get(page)
        assert response.status_code in (200, 503), (page, response.status_code)
        told(response.content.decode(), url, said)
    health = viewer_client.get(reverse("healthz")).json()
    if kind != "too_large":  # a PING fits any limit
        told(health["checks"]["monitored"]["lucia"]["error"], url, said)


def test_the_commands_name_the_endpoint(lucia, operator, failing):
    url, said, _kind = failing
    with pytest.raises(CommandError) as review_error:
        call_command("ttl_review", "--database", "lucia", stdout=io.StringIO(), stderr=io.StringIO())
    told(str(review_error.value), url, said)
    assert ReviewRun.objects.get().status == ReviewRun.FAILED
    with pytest.raises(CommandError) as purge_error:
        call_command("purge", "--database", "lucia", "--prefix", "lucia:session:", "--action", "expire", "--dry-run",
                     "--as", "otto",
                     stdout=io.StringIO(), stderr=io.StringIO())
    told(str(purge_error.value), url, said)
    assert not PurgeRun.objects.filter(status=PurgeRun.SUCCEEDED).exists()


# --- Upstash's read-only token ---------------------------------------------------------------------
@pytest.fixture
def read_only(over_rest, monkeypatch, keys):
    from conftest import REST_READONLY_TOKEN

    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", REST_READONLY_TOKEN)
    keyspace.forget_clients()


def test_a_read_only_token_reads_known_keys_and_the_pages_say_what_it_cannot(viewer_client, operator_client, lucia,
                                                                           read_only, monitored):
    detail = viewer_client.get(reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(b"lucia:session:0007")]))
    assert detail.status_code == 200 and "lucia:session:0007" in detail.content.decode()
    lookup = viewer_client.get(reverse("continuity:key_lookup", args=["lucia"]) + "?id=0007")
    assert lookup.status_code == 200 and "lucia:session:0007" in lookup.content.decode()
    browse = viewer_client.get(reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia%3Asession%3A")
    assert browse.status_code == 200 and "may not run SCAN" in browse.content.decode()
    binary = viewer_client.get(reverse("continuity:key_detail", args=["lucia",
                                                                     keyspace.encode_key(b"lucia:session:\xff\xfebin")]))
    assert binary.status_code == 200 and "not valid UTF-8" in binary.content.decode()
    assert "cannot reach this key over REST with this token" in binary.content.decode()
    deleted = operator_client.post(reverse("continuity:key_action", args=["lucia",
                                                                         keyspace.encode_key(b"lucia:session:0007")]),
                                   {"action": "delete"}, follow=True)
    assert "may not run UNLINK" in deleted.content.decode() and monitored.exists(b"lucia:session:0007")
