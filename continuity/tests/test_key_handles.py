"""A long key's handle opens its key only under the database record it was issued for: under
another record's URL it is refused before any call reaches that record's Redis."""

import hashlib
import re
import shutil
import tempfile

import pytest
import redis
from django.core.cache import cache
from django.urls import reverse

from continuity import key_links, keyspace
from continuity.models import Namespace
from dashboard.devtools import localservers
from dashboard.models import AuditEntry, RedisDatabase

pytestmark = pytest.mark.usefixtures("transport")

LONG_KEY = b"lucia:session:" + b"k" * 4096  # its token is past MAX_URL_TOKEN: a handle


@pytest.fixture(scope="module")
def other_server():
    """A redis-server of its own for the second record, so its command counts are its own."""
    datadir = tempfile.mkdtemp(prefix="dashboard-test-handles-")
    server = localservers.LocalRedis(datadir, localservers.free_port()).start()
    yield server
    server.stop()
    shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture
def shadow(lucia, other_server, monkeypatch):
    """A second record, on another server that holds the same long key."""
    monkeypatch.setenv("SHADOW_REDIS_URL", other_server.url(0))
    client = redis.Redis.from_url(other_server.url(0))
    client.flushall()
    client.set(LONG_KEY, b"shadow value")
    record = RedisDatabase.objects.create(name="shadow", url_env="SHADOW_REDIS_URL", key_prefix="lucia:")
    client.config_resetstat()
    yield record, client
    client.close()


# The test's own reads, and the navigation's "Redis unreachable" banner: every full page pings
# every record whatever its URL, on a connection of its own (HELLO, CLIENT SETNAME, PING).
NOT_THE_KEY_PAGE = {"cmdstat_info", "cmdstat_config|resetstat", "cmdstat_ping", "cmdstat_hello",
                    "cmdstat_client|setname", "cmdstat_client|setinfo", "cmdstat_select"}


def commands(client):
    """Commands the server ran since the last CONFIG RESETSTAT, but NOT_THE_KEY_PAGE: what is
    left is what the key page asked."""
    stats = client.info("commandstats")
    return {name: stat["calls"] for name, stat in stats.items() if name not in NOT_THE_KEY_PAGE}


def lucia_handle(client, monitored):
    monitored.set(LONG_KEY, b"lucia value", ex=100)
    page = client.get(reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:session:").content.decode()
    [href] = re.findall(r'href="/keyspace/lucia/key/(h\.[0-9a-f]{64})/"', page)
    return href


def test_it_refuses_a_handle_under_another_records_detail_page(viewer_client, monitored, lucia, shadow):
    Namespace.objects.filter(database=lucia).update(sensitive=False)  # values shown: test_sensitive_values.py
    record, client = shadow
    handle = lucia_handle(viewer_client, monitored)
    response = viewer_client.get(reverse("continuity:key_detail", args=["shadow", handle]))
    body = response.content.decode()
    assert response.status_code == 404
    assert 'data-testid="key-link-foreign"' in body and "belongs to another database record" in body
    assert "shadow value" not in body and "lucia value" not in body
    download = viewer_client.get(reverse("continuity:key_download", args=["shadow", handle]))
    assert download.status_code == 404 and b"shadow value" not in download.content
    assert commands(client) == {}  # not one call reached shadow's Redis
    # The handle keeps working under the record it was made for.
    own = viewer_client.get(reverse("continuity:key_detail", args=["lucia", handle]))
    assert own.status_code == 200 and "lucia value" in own.content.decode()


@pytest.mark.parametrize("action,data", [("delete", {}), ("expire_now", {}), ("set_ttl", {"seconds": "5"}),
                                         ("extend_ttl", {"seconds": "5"})])
def test_it_refuses_a_handle_under_another_records_key_actions(operator_client, monitored, lucia, shadow, action,
                                                               data):
    record, client = shadow
    handle = lucia_handle(operator_client, monitored)
    url = reverse("continuity:key_action", args=["shadow", handle])
    for htmx in (False, True):
        headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
        response = operator_client.post(url, {"action": action, **data}, **headers)
        assert response.status_code == 404
        assert "belongs to another database record" in response.content.decode()
    assert commands(client) == {}
    assert client.get(LONG_KEY) == b"shadow value" and client.ttl(LONG_KEY) == -1
    assert monitored.get(LONG_KEY) == b"lucia value" and 90 < monitored.ttl(LONG_KEY) <= 100
    assert not AuditEntry.objects.filter(action__startswith="key.").exists()


def test_a_handle_keeps_acting_under_its_own_record(operator_client, monitored, lucia, shadow):
    record, client = shadow
    handle = lucia_handle(operator_client, monitored)
    response = operator_client.post(reverse("continuity:key_action", args=["lucia", handle]),
                                    {"action": "extend_ttl", "seconds": "50"})
    assert response.status_code == 302
    assert response["Location"] == reverse("continuity:key_detail", args=["lucia", handle])
    assert 140 < monitored.ttl(LONG_KEY) <= 150
    assert AuditEntry.objects.get(action="key.extend_ttl").target_label.startswith("lucia")
    # Shadow's own link to the same key is another handle, which opens shadow's key only.
    shadow_handle = key_links.url_token(LONG_KEY, record)
    assert shadow_handle != handle
    page = operator_client.get(reverse("continuity:key_detail", args=["shadow", shadow_handle])).content.decode()
    assert "shadow value" in page
    assert operator_client.get(reverse("continuity:key_detail", args=["lucia", shadow_handle])).status_code == 404


def test_a_handle_from_before_the_binding_reads_as_expired(viewer_client, monitored, lucia):
    # Handles issued before they named their record: sha256 of the key, the key bytes cached.
    monitored.set(LONG_KEY, b"lucia value")
    digest = hashlib.sha256(LONG_KEY).hexdigest()
    cache.set(f"continuity:key-handle:{digest}", LONG_KEY, timeout=60)
    response = viewer_client.get(reverse("continuity:key_detail", args=["lucia", "h." + digest]))
    assert response.status_code == 410 and "This link to a long key has expired." in response.content.decode()


def test_short_keys_keep_their_plain_token(lucia):
    key = b"lucia:session:short"
    assert key_links.url_token(key, lucia) == keyspace.encode_key(key)
    assert key_links.key_from_url_token(keyspace.encode_key(key), lucia) == key
