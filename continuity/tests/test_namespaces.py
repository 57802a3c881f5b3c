"""Namespaces: classification against policy, longest-prefix matching, audited editing,
and the overview's sampled charts."""

import pytest
from django.urls import reverse

from continuity import keyspace
from continuity.keyspace.meta import KeyMeta
from continuity.models import Namespace
from continuity.policy import Policies
from dashboard.models import AuditEntry

pytestmark = pytest.mark.usefixtures("transport")


def meta(key=b"lucia:session:1", type_="string", ttl_ms=1_000_000, memory=100):
    return KeyMeta(key=key, type=type_, ttl_ms=ttl_ms, memory=memory)


def test_it_picks_the_longest_registered_prefix(lucia):
    Namespace.objects.create(database=lucia, name="session-vip", prefix="lucia:session:vip:")
    policies = Policies.of(list(Namespace.objects.for_database(lucia)))
    owners = [policies.owner_of(policies.for_key(key))
              for key in (b"lucia:session:vip:7", b"lucia:session:7", b"lucia:sessionx:7", b"lucia:session:\xff")]
    assert [owner and owner.name for owner in owners] == ["session-vip", "session", None, "session"]


@pytest.mark.parametrize("kwargs,code", [
    ({}, "ok"),
    ({"ttl_ms": None}, "no_ttl"),
    ({"ttl_ms": 3_600_001}, "ttl_above_max"),
    ({"memory": 20_000}, "oversized"),
    ({"type_": "hash"}, "wrong_type"),
    ({"type_": None}, "gone"),
])
def test_it_classifies_a_key_against_its_policy(lucia, kwargs, code):
    session = Namespace.objects.get(database=lucia, name="session")
    session.expected_type = "string"
    assert session.classify(meta(**kwargs)).code == code


@pytest.mark.parametrize("max_ttl", [None, 3600])
def test_it_accepts_no_ttl_where_the_policy_allows_it(lucia, max_ttl):
    ns = Namespace(database=lucia, name="x", prefix="lucia:x:", ttl_required=False, max_ttl_seconds=max_ttl)
    assert ns.classify(meta(key=b"lucia:x:1", ttl_ms=None)).ok and ns.policy().ttl_in_band(None)


def test_it_lists_namespaces_for_viewers_with_constant_queries(viewer_client, lucia, django_assert_num_queries):
    url = reverse("continuity:namespace_list", args=["lucia"])
    with django_assert_num_queries(7):
        response = viewer_client.get(url)
    body = response.content.decode()
    assert body.count('data-testid="namespace-row"') == 5 and "Edit</a>" not in body
    fragment = viewer_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in fragment and fragment.count('data-testid="namespace-row"') == 5


def _form(ns, **changes):
    data = {"name": ns.name, "prefix": ns.prefix, "purpose": ns.purpose, "expected_type": ns.expected_type,
            "min_ttl_seconds": ns.min_ttl_seconds or "", "max_ttl_seconds": ns.max_ttl_seconds or "",
            "ttl_required": "on" if ns.ttl_required else "", "max_payload_bytes": ns.max_payload_bytes,
            "fallback_note": ns.fallback_note, "violation_action": ns.violation_action}
    data.update(changes)
    return data


def test_it_lets_operators_edit_a_policy_with_an_audit_row(operator_client, lucia):
    ns = Namespace.objects.get(database=lucia, name="session")
    url = reverse("continuity:namespace_edit", args=["lucia", ns.pk])
    assert operator_client.get(url).status_code == 200
    response = operator_client.post(url, _form(ns, max_ttl_seconds=7200, violation_action="apply_ttl"))
    assert response.status_code == 302
    ns.refresh_from_db()
    assert ns.max_ttl_seconds == 7200 and ns.violation_action == "apply_ttl"
    entry = AuditEntry.objects.get(action="namespace.update")
    assert entry.before["max_ttl_seconds"] == 3600 and entry.after["max_ttl_seconds"] == 7200
    assert entry.actor_label == "otto"


def test_it_refuses_viewers_edits(viewer_client, lucia):
    ns = Namespace.objects.get(database=lucia, name="session")
    url = reverse("continuity:namespace_edit", args=["lucia", ns.pk])
    assert viewer_client.post(url, _form(ns, max_ttl_seconds=1)).status_code == 403
    assert viewer_client.get(reverse("continuity:namespace_create", args=["lucia"])).status_code == 403
    ns.refresh_from_db()
    assert ns.max_ttl_seconds == 3600 and not AuditEntry.objects.filter(action="namespace.update").exists()


@pytest.mark.parametrize("changes,error", [
    ({"prefix": "other:session:"}, "must start with the database&#x27;s key prefix"),
    ({"prefix": "lucia:rate:"}, "Another namespace of this database has that prefix."),
    ({"min_ttl_seconds": 9000}, "The minimum TTL is above the maximum."),
])
def test_it_validates_policies(operator_client, lucia, changes, error):
    ns = Namespace.objects.get(database=lucia, name="session")
    response = operator_client.post(reverse("continuity:namespace_edit", args=["lucia", ns.pk]), _form(ns, **changes))
    assert response.status_code == 200 and error in response.content.decode()
    assert not AuditEntry.objects.filter(action="namespace.update").exists()


def test_it_creates_a_namespace_with_an_audit_row(operator_client, lucia):
    data = {"name": "legacy", "prefix": "lucia:legacy:", "purpose": "old", "expected_type": "", "min_ttl_seconds": "",
            "max_ttl_seconds": "600", "ttl_required": "on", "max_payload_bytes": "1024", "fallback_note": "",
            "violation_action": "report"}
    response = operator_client.post(reverse("continuity:namespace_create", args=["lucia"]), data)
    assert response.status_code == 302
    created = Namespace.objects.get(database=lucia, name="legacy")
    assert AuditEntry.objects.get(action="namespace.create").target_id == str(created.pk)


def test_it_charts_a_labelled_sample_per_namespace(viewer_client, monitored, lucia):
    pipe = monitored.pipeline(transaction=False)
    for i in range(40):
        pipe.set(f"lucia:session:{i}".encode(), b"x", ex=1800)
    for i in range(10):
        pipe.set(f"lucia:rate:{i}".encode(), b"x")
    pipe.set(b"lucia:legacy:<script>", b"x")
    pipe.execute()
    url = reverse("continuity:namespace_stats", args=["lucia"])
    response = viewer_client.get(url)
    sample = response.context["sample"]
    assert sample.complete and sample.sampled == 51
    assert sample.figures["session"].keys == 40 and sample.figures["session"].without_ttl == 0
    assert sample.figures["rate"].share_without_ttl == 1.0
    assert sample.figures["session"].in_band["15m–1h"] == 40
    assert sample.figures[""].keys == 1
    body = viewer_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert body.count("<svg") == 3 + 5 and "Exact figures" in body
    assert "<html" not in body and "<script" not in body and "kozea.github.io" not in body


def test_it_labels_a_partial_sample_as_a_sample(viewer_client, monitored, lucia, settings):
    settings.KEYSPACE_SCAN_BUDGET = 200
    pipe = monitored.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(f"lucia:focus:{i}".encode(), b"x", ex=3600)
    pipe.execute()
    monitored.config_resetstat()
    response = viewer_client.get(reverse("continuity:namespace_stats", args=["lucia"]))
    sample = response.context["sample"]
    # One SCAN spending the whole budget (a round trip), then the metadata with DBSIZE.
    assert monitored.info("commandstats")["cmdstat_scan"]["calls"] == 1
    assert not sample.complete and sample.examined == 200 and 0 < sample.sampled < 3000
    assert "<strong>Sample</strong>" in response.content.decode()
    assert "estimated from a sample" in response.content.decode()


def test_it_links_the_overview_to_browser_and_namespaces(viewer_client, lucia):
    body = viewer_client.get(reverse("continuity:overview")).content.decode()
    assert reverse("continuity:browse", args=["lucia"]) in body
    assert reverse("continuity:namespace_stats", args=["lucia"]) in body
    assert keyspace.match_pattern(b"x") == b"x*"
