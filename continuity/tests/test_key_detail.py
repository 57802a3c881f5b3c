"""Bounded previews of every type, huge values, JSON, binary values and downloads."""

import json
import pickle

import pytest
from django.urls import reverse

from continuity import keyspace
from continuity.models import Namespace

pytestmark = pytest.mark.usefixtures("transport")


def detail(client, key, **kwargs):
    return client.get(reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(key)]), **kwargs)


def commands(monitored):
    return {k[len("cmdstat_"):]: v["calls"] for k, v in monitored.info("commandstats").items()}


def test_it_previews_a_5mb_string_with_getrange_only(viewer_client, monitored, lucia):
    key = b"lucia:focus:huge"
    monitored.set(key, b"A" * (5 * 1024 * 1024), ex=600)
    monitored.config_resetstat()
    response = detail(viewer_client, key)
    used = commands(monitored)
    preview = response.context["preview"]
    assert preview.length == 5 * 1024 * 1024 and preview.truncated and len(preview.text) == 4096
    assert "get" not in used and used["getrange"] == 1
    assert len(response.content) < 100_000
    assert "first 4,096 characters of 5,242,880 bytes" in response.content.decode()


@pytest.mark.parametrize("kind", ["hash", "set"])
def test_it_previews_a_200k_element_hash_or_set_with_at_most_two_scans(viewer_client, monitored, lucia, kind):
    """HSCAN/SSCAN COUNT 100, then (where that brought fewer than 100) one of COUNT 900:
    a page of 100 members in two calls at most, one round trip each."""
    Namespace.objects.filter(database=lucia).update(sensitive=False)  # values shown: test_sensitive_values.py
    key = b"lucia:distress:wide"
    pipe = monitored.pipeline(transaction=False)
    for start in range(0, 200_000, 10_000):
        if kind == "hash":
            pipe.hset(key, mapping={f"f{i}": f"v{i}" for i in range(start, start + 10_000)})
        else:
            pipe.sadd(key, *[f"m{i}" for i in range(start, start + 10_000)])
    pipe.execute()
    monitored.config_resetstat()
    response = detail(viewer_client, key)
    used = commands(monitored)
    preview = response.context["preview"]
    assert preview.length == 200_000 and preview.truncated and len(preview.items) == 100
    scan, whole = ("hscan", ("hgetall", "hkeys", "hvals")) if kind == "hash" else ("sscan", ("smembers",))
    assert 1 <= used[scan] <= 2 and not any(command in used for command in whole)
    assert "First 100 of 200,000 elements" in response.content.decode()


def test_it_previews_lists_sets_sorted_sets_and_streams_bounded(viewer_client, monitored, lucia):
    monitored.rpush(b"lucia:action:list", *[f"item{i}" for i in range(500)])
    monitored.sadd(b"lucia:action:set", *[f"m{i}" for i in range(500)])
    monitored.zadd(b"lucia:action:zset", {f"z{i}": i / 2 for i in range(500)})
    for i in range(50):
        monitored.xadd(b"lucia:action:stream", {"n": str(i), "who": "<b>x</b>"})
    expected = {b"lucia:action:list": (100, "item99"), b"lucia:action:set": (100, "m"),
                b"lucia:action:zset": (100, "49.5"), b"lucia:action:stream": (20, "who=&lt;b&gt;x&lt;/b&gt;")}
    for key, (shown, text) in expected.items():
        response = detail(viewer_client, key)
        preview = response.context["preview"]
        assert len(preview.items) == shown and preview.truncated, key
        assert text in response.content.decode(), key
    assert "<b>x</b>" not in detail(viewer_client, b"lucia:action:stream").content.decode()


def test_it_pretty_prints_json_and_escapes_it(viewer_client, monitored, lucia):
    Namespace.objects.filter(database=lucia).update(sensitive=False)  # values shown: test_sensitive_values.py
    key = b"lucia:session:json"
    monitored.set(key, json.dumps({"b": 1, "a": "<img src=x onerror=alert(1)>"}), ex=900)
    response = detail(viewer_client, key)
    assert response.context["preview"].json_text == '{\n  "a": "<img src=x onerror=alert(1)>",\n  "b": 1\n}'
    body = response.content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in body and "<img src=x" not in body
    # One server: no slot or primary to name.
    assert response.context["preview"].node == "" and 'data-testid="node"' not in body


def test_it_never_unpickles_and_shows_binary_values_escaped(viewer_client, monitored, lucia):
    Namespace.objects.filter(database=lucia).update(sensitive=False)  # values shown: test_sensitive_values.py
    key = b"lucia:session:pickled"
    monitored.set(key, pickle.dumps({"x": 1}), ex=900)
    response = detail(viewer_client, key)
    preview = response.context["preview"]
    assert preview.binary and preview.text.startswith("\\x80\\x04") and preview.json_text is None


def test_it_downloads_a_string_up_to_the_cap(viewer_client, monitored, lucia, settings):
    settings.KEYSPACE_DOWNLOAD_CAP = 1000
    key = b"lucia:focus:<dl>"
    monitored.set(key, bytes(range(256)) * 10, ex=600)
    url = reverse("continuity:key_download", args=["lucia", keyspace.encode_key(key)])
    response = viewer_client.get(url)
    assert response.content == (bytes(range(256)) * 10)[:1000]
    assert response["X-Value-Truncated"] == "true" and response["X-Value-Length"] == "2560"
    assert response["Content-Type"] == "application/octet-stream" and "attachment" in response["Content-Disposition"]
    monitored.hset(b"lucia:focus:h", mapping={"a": "b"})
    assert viewer_client.get(url.replace(keyspace.encode_key(key), keyspace.encode_key(b"lucia:focus:h"))).status_code == 404


def test_it_serves_the_detail_region_to_htmx(viewer_client, monitored, lucia):
    monitored.set(b"lucia:rate:1", b"7", ex=30)
    response = detail(viewer_client, b"lucia:rate:1", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert body.startswith('\n<div id="detail"') or body.lstrip().startswith('<div id="detail"')
    assert "<nav" not in body and 'data-testid="ttl"' in body


@pytest.mark.parametrize("ttl,label", [(None, "no TTL"), (7200, "above max"), (1800, "ok")])
def test_it_shows_ttl_and_policy_in_detail(viewer_client, monitored, lucia, ttl, label):
    monitored.set(b"lucia:session:t", b"v", ex=ttl)
    response = detail(viewer_client, b"lucia:session:t")
    assert response.context["status"].label == label
    assert f'data-testid="status">{label}</span>' in response.content.decode()


def test_it_counts_elements_and_bytes_in_the_singular_and_plural(viewer_client, monitored, lucia):
    monitored.rpush(b"lucia:action:one", b"only")
    monitored.rpush(b"lucia:action:two", b"a", b"b")
    monitored.set(b"lucia:rate:1", b"x", ex=60)
    assert "MEMORY USAGE</span> · 1 element</td>" in detail(viewer_client, b"lucia:action:one").content.decode()
    assert "MEMORY USAGE</span> · 2 elements</td>" in detail(viewer_client, b"lucia:action:two").content.decode()
    assert "MEMORY USAGE</span> · 1 byte</td>" in detail(viewer_client, b"lucia:rate:1").content.decode()
