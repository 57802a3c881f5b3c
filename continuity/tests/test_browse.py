"""The key browser, lookup by id and the key detail page against a real redis-server."""

import html

import pytest
from django.urls import reverse

from continuity import keyspace
from continuity.models import Namespace
from dashboard.models import AuditEntry

pytestmark = pytest.mark.usefixtures("transport")

P = b"lucia:session:"
ODD_KEYS = {
    "binary": P + b"bin\xff\xfe\x00end",
    "quotes": P + b"say \"hi\" 'there'",
    "spaces": P + b"with  spaces ",
    "newline": P + b"line1\nline2",
    "script": P + b"<script>alert(1)</script>",
    "star": P + b"a*b",
    "question": P + b"why?",
    "brackets": P + b"[x]",
    "backslash": P + b"back\\slash",
}


def browse_url(**params):
    from urllib.parse import urlencode

    return reverse("continuity:browse", args=["lucia"]) + "?" + urlencode(params)


def detail_url(key):
    return reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(key)])


def action_url(key):
    return reverse("continuity:key_action", args=["lucia", keyspace.encode_key(key)])


@pytest.fixture
def odd(monitored, lucia):
    Namespace.objects.filter(database=lucia).update(sensitive=False)  # values shown: test_sensitive_values.py
    for name, key in ODD_KEYS.items():
        monitored.set(key, f"value of {name}".encode(), ex=1800)
    monitored.set(b"lucia:session:aXb", b"must not match a*b", ex=1800)
    return ODD_KEYS


def test_it_lists_every_odd_key_under_the_session_prefix(viewer_client, odd):
    response = viewer_client.get(browse_url(prefix="lucia:session:"))
    assert response.status_code == 200
    body = response.content.decode()
    for name, key in odd.items():
        assert f'data-token="{keyspace.encode_key(key)}"' in body, name
        assert html.escape(keyspace.display_key(key)) in body, name
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


@pytest.mark.parametrize("name", list(ODD_KEYS))
def test_it_finds_an_odd_key_by_its_literal_prefix_only(viewer_client, odd, name):
    key = odd[name]
    response = viewer_client.get(browse_url(prefix=key.decode("utf-8", "surrogateescape")
                                            if name != "binary" else "lucia:session:bin"))
    found = [row.key for row in response.context["result"].rows]
    assert found == [key]
    assert response.context["result"].pattern == keyspace.match_pattern(key if name != "binary" else P + b"bin")


def test_it_shows_the_escaped_match_pattern(viewer_client, odd):
    response = viewer_client.get(browse_url(prefix="lucia:session:a*b"))
    assert response.context["result"].pattern == b"lucia:session:a\\*b*"
    assert 'data-testid="match-pattern">lucia:session:a\\*b*</code>' in response.content.decode()


def test_it_uses_a_raw_glob_only_when_asked(viewer_client, odd):
    response = viewer_client.get(browse_url(glob="on", pattern="lucia:session:a?b"))
    assert {row.key for row in response.context["result"].rows} == {b"lucia:session:a*b", b"lucia:session:aXb"}


def test_it_filters_by_type(viewer_client, monitored, lucia):
    monitored.set(b"lucia:focus:s", b"x", ex=60)
    monitored.hset(b"lucia:focus:h", mapping={"a": "1"})
    response = viewer_client.get(browse_url(prefix="lucia:focus:", type="hash"))
    assert [row.key for row in response.context["result"].rows] == [b"lucia:focus:h"]


def test_it_flags_policy_status_per_row(viewer_client, monitored, lucia):
    Namespace.objects.filter(name="focus").update(expected_type="string")
    monitored.set(b"lucia:session:ok", b"x", ex=1800)
    monitored.set(b"lucia:session:nottl", b"x")
    monitored.set(b"lucia:session:long", b"x", ex=7200)
    monitored.set(b"lucia:session:big", b"x" * 40_000, ex=1800)
    monitored.hset(b"lucia:focus:hash", mapping={"a": "b"})
    monitored.expire(b"lucia:focus:hash", 600)
    monitored.set(b"lucia:legacy:1", b"x", ex=60)
    response = viewer_client.get(browse_url(prefix="lucia:"))
    status = {row.key: row.status.code for row in response.context["result"].rows}
    assert status == {b"lucia:session:ok": "ok", b"lucia:session:nottl": "no_ttl", b"lucia:session:long": "ttl_above_max",
                      b"lucia:session:big": "oversized", b"lucia:focus:hash": "wrong_type",
                      b"lucia:legacy:1": "unknown_namespace"}
    body = response.content.decode()
    for label in ("no TTL", "above max", "oversized", "wrong type", "unknown namespace"):
        assert f'data-testid="status">{label}</span>' in body


def test_it_spends_a_bounded_scan_budget_and_continues_with_the_cursor(viewer_client, monitored, lucia, settings):
    settings.KEYSPACE_SCAN_BUDGET = 500
    pipe = monitored.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(f"lucia:rate:{i}".encode(), b"1", ex=600)
    for i in range(30):
        pipe.set(f"lucia:focus:{i}".encode(), b"1", ex=600)
    pipe.execute()
    before = monitored.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
    response = viewer_client.get(browse_url(prefix="lucia:focus:"))
    scans = monitored.info("commandstats")["cmdstat_scan"]["calls"] - before
    result = response.context["result"]
    # Two SCANs at most (COUNT 100, then the rest of the budget: the first found few matches);
    # the page says how far it looked and offers to continue.
    assert not result.done and result.examined == 500 and scans == result.calls == 2
    assert result.dbsize == 5030
    body = response.content.decode()
    assert f"examined ~{result.examined_total} of ~5,030 keys, {result.matched_total} matched" in body
    assert 'data-testid="continue"' in body
    # Follow the cursor to the end: every focus key, no key twice, every request bounded.
    seen, state, requests = [], {}, 0
    while True:
        requests += 1
        r = viewer_client.get(browse_url(prefix="lucia:focus:", **state))
        res = r.context["result"]
        assert res.examined <= 500
        seen.extend(row.key for row in res.rows)
        if res.done:
            break
        state = {"cursor": res.cursor, "examined": res.examined_total, "matched": res.matched_total}
    assert set(seen) == {f"lucia:focus:{i}".encode() for i in range(30)}
    assert requests >= 10
    assert "scan complete" in r.content.decode()
    fragment = viewer_client.get(browse_url(prefix="lucia:focus:", **state), headers={"HX-Request": "true"})
    assert "<html" not in fragment.content.decode() and "examined ~" in fragment.content.decode()


def test_it_serves_the_results_region_to_htmx(viewer_client, odd):
    response = viewer_client.get(browse_url(prefix="lucia:session:"), headers={"HX-Request": "true"})
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="results"') and "<nav" not in body
    assert response["Vary"] and "HX-Request" in response["Vary"]


def test_it_browses_with_a_constant_number_of_queries(viewer_client, odd, monitored, django_assert_num_queries):
    # session, user, 2× permissions, database, namespaces, the banner's database list
    with django_assert_num_queries(7):
        response = viewer_client.get(browse_url(prefix="lucia:session:"))
    assert len(response.context["result"].rows) == len(ODD_KEYS) + 1
    for i in range(100):
        monitored.set(f"lucia:session:more{i}".encode(), b"x", ex=900)
    with django_assert_num_queries(7):
        response = viewer_client.get(browse_url(prefix="lucia:session:"))
    assert len(response.context["result"].rows) == len(ODD_KEYS) + 101


def test_it_builds_the_tree_from_registered_namespaces(viewer_client, lucia, monitored):
    response = viewer_client.get(browse_url(prefix=""))
    assert [n.prefix for n in response.context["tree"]] == ["lucia:"]
    response = viewer_client.get(browse_url(prefix="lucia:"))
    assert [n.prefix for n in response.context["tree"]] == [
        "lucia:action:", "lucia:distress:", "lucia:focus:", "lucia:rate:", "lucia:session:"]
    assert response.context["crumbs"] == [("lucia:", "lucia:")]


def test_it_looks_up_an_id_in_every_namespace_without_scan(viewer_client, monitored, lucia):
    monitored.set(b"lucia:session:42", b"s", ex=1800)
    monitored.hset(b"lucia:distress:42", mapping={"stage": "1"})
    monitored.set(b"lucia:session:420", b"other", ex=1800)
    before = monitored.info("commandstats")
    url = reverse("continuity:key_lookup", args=["lucia"]) + "?id=42"
    response = viewer_client.get(url, headers={"HX-Request": "true"})
    after = monitored.info("commandstats")
    calls = lambda s, c: s.get(f"cmdstat_{c}", {}).get("calls", 0)  # noqa: E731
    assert calls(after, "scan") == calls(before, "scan")
    body = response.content.decode()
    assert "2 of 5 namespaces" in body and "<html" not in body
    assert body.count('data-testid="key-row"') == 2
    full = viewer_client.get(url)
    lookup = full.context["lookup"]
    assert {row.key for row in lookup.rows} == {b"lucia:session:42", b"lucia:distress:42"}
    assert len(lookup.missing) == 3
    assert "<html" in full.content.decode() and keyspace.encode_key(b"lucia:distress:42") in full.content.decode()


@pytest.mark.parametrize("name", list(ODD_KEYS))
def test_it_opens_every_odd_key_in_detail(viewer_client, odd, name):
    key = odd[name]
    response = viewer_client.get(detail_url(key))
    assert response.status_code == 200
    preview = response.context["preview"]
    assert preview.meta.key == key and preview.meta.type == "string"
    body = response.content.decode()
    assert f"value of {name}" in body
    assert html.escape(keyspace.display_key(key)) in body
    assert "<script>alert" not in body


@pytest.mark.parametrize("name", list(ODD_KEYS))
def test_it_acts_on_every_odd_key_with_an_audit_row(operator_client, odd, monitored, name):
    key = odd[name]
    response = operator_client.post(action_url(key), {"action": "set_ttl", "seconds": "120"},
                                    headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert 0 < monitored.pttl(key) <= 120_000
    assert 'data-testid="outcome">Set TTL: done.' in response.content.decode()
    entry = AuditEntry.objects.get(action="key.set_ttl")
    assert entry.target_id == keyspace.encode_key(key)
    assert entry.target_label == f"lucia: {keyspace.display_key(key)}"
    assert entry.after["key"] == keyspace.display_key(key) and entry.after["ttl_ms"] <= 120_000
    assert entry.before["ttl_ms"] > 120_000
    assert entry.actor_label == "otto"
    response = operator_client.post(action_url(key), {"action": "delete"})
    assert response.status_code == 302 and monitored.exists(key) == 0
    assert AuditEntry.objects.filter(action="key.delete", target_id=keyspace.encode_key(key)).count() == 1


def test_it_refuses_actions_to_viewers(viewer_client, odd, monitored):
    key = odd["script"]
    response = viewer_client.post(action_url(key), {"action": "delete"})
    assert response.status_code == 403
    assert monitored.exists(key) == 1
    assert not AuditEntry.objects.filter(action__startswith="key.").exists()
    assert 'data-testid="actions"' not in viewer_client.get(detail_url(key)).content.decode()


def test_it_extends_expires_and_reports_a_gone_key(operator_client, monitored, lucia):
    key = b"lucia:action:x"
    monitored.set(key, b"v", ex=100)
    operator_client.post(action_url(key), {"action": "extend_ttl", "seconds": "50"})
    assert 140_000 < monitored.pttl(key) <= 150_000
    monitored.persist(key)
    operator_client.post(action_url(key), {"action": "extend_ttl", "seconds": "30"})
    assert 0 < monitored.pttl(key) <= 30_000
    operator_client.post(action_url(key), {"action": "expire_now"})
    assert monitored.exists(key) == 0
    response = operator_client.post(action_url(key), {"action": "delete"}, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert "the key no longer exists" in body and 'data-testid="gone"' in body
    actions = list(AuditEntry.objects.order_by("pk").values_list("action", flat=True))
    assert [a for a in actions if a.startswith("key.")] == ["key.extend_ttl", "key.extend_ttl", "key.expire_now",
                                                            "key.delete"]


def test_it_rejects_an_action_without_seconds(operator_client, monitored, lucia):
    key = b"lucia:action:y"
    monitored.set(key, b"v", ex=100)
    response = operator_client.post(action_url(key), {"action": "set_ttl"}, headers={"HX-Request": "true"})
    assert "Enter a TTL such as 15m, 1h or 7d (or a number of seconds)." in response.content.decode()
    assert monitored.ttl(key) > 90 and not AuditEntry.objects.filter(action__startswith="key.").exists()


def test_it_answers_404_for_a_bad_token(viewer_client, lucia):
    assert viewer_client.get("/keyspace/lucia/key/not+a*token/").status_code == 404


def test_it_refuses_an_extension_past_the_ten_year_cap(operator_client, monitored, lucia):
    key = b"lucia:legacy:long"  # in no namespace: only the 10-year cap bounds it
    monitored.set(key, b"v", ex=100)
    nine_years = 9 * 365 * 86400
    operator_client.post(action_url(key), {"action": "extend_ttl", "seconds": str(nine_years)})
    assert nine_years < monitored.ttl(key) <= nine_years + 100
    response = operator_client.post(action_url(key), {"action": "extend_ttl", "seconds": str(nine_years)},
                                    headers={"HX-Request": "true"})
    assert "would pass the 10-year cap" in response.content.decode()
    assert monitored.ttl(key) <= nine_years + 100  # unchanged: the second extension was refused
    actions = list(AuditEntry.objects.filter(action__startswith="key.").values_list("action", flat=True))
    assert actions == ["key.extend_ttl"]
