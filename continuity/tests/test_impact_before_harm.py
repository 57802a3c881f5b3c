"""Impact before harm: TTLs typed as durations, a key's TTL held to its namespace's maximum
(boundary rows: exactly at the maximum, one past it) by the operation whatever the form,
and a namespace policy change that shows how many keys it would turn into findings before
it is saved. Real redis-server, real Postgres."""

import pytest
from django.urls import reverse

from continuity import keyspace
from continuity.forms import KeyActionForm, NamespaceForm
from continuity.humanize import exact_duration, parse_duration
from continuity.models import Namespace
from continuity.operations import review
from continuity.operations.key_actions import act_on_key
from dashboard.models import AuditEntry

SESSION_MAX_MS = 3600 * 1000  # the seeded session namespace's maximum TTL: 1 h


@pytest.mark.parametrize("typed,seconds", [
    ("3600", 3600), ("45s", 45), ("15m", 900), ("1h", 3600), ("1h 30m", 5400), ("1H30m", 5400), (" 7d ", 604800),
    ("2w", 1_209_600), ("1d 1h 1m 1s", 90061),
])
def test_it_reads_every_typed_duration(typed, seconds):
    assert parse_duration(typed) == seconds
    assert parse_duration(exact_duration(seconds)) == seconds  # what a field shows reads back the same


@pytest.mark.parametrize("typed", ["", "h", "1.5h", "-5", "5 minutes", "1x", "1h 1h30", "0x10"])
def test_it_refuses_what_is_not_a_duration(typed):
    with pytest.raises(ValueError, match="A duration such as 90s, 15m, 1h"):
        parse_duration(typed)


def test_every_ttl_field_takes_durations(lucia):
    form = KeyActionForm({"action": "set_ttl", "seconds": "15m"})
    assert form.is_valid() and form.cleaned_data["seconds"] == 900
    assert not KeyActionForm({"action": "set_ttl", "seconds": "soon"}).is_valid()
    ns = Namespace.objects.get(database=lucia, name="focus")
    data = {"name": ns.name, "prefix": ns.prefix, "purpose": "", "expected_type": "", "min_ttl_seconds": "15m",
            "max_ttl_seconds": "7d", "ttl_required": "on", "max_payload_bytes": "16384", "fallback_note": "",
            "violation_action": "report"}
    form = NamespaceForm(data, instance=ns, database=lucia)
    assert form.is_valid(), form.errors
    assert (form.cleaned_data["min_ttl_seconds"], form.cleaned_data["max_ttl_seconds"]) == (900, 604800)
    shown = str(NamespaceForm(instance=Namespace.objects.get(pk=ns.pk), database=lucia)["max_ttl_seconds"])
    assert 'value="1d"' in shown and 'placeholder="15m, 1h, 7d"' in shown


# --- a key's TTL and its namespace's maximum ----------------------------------------------------
def action_url(key):
    return reverse("continuity:key_action", args=["lucia", keyspace.encode_key(key)])


def post(client, key, **data):
    return client.post(action_url(key), data, headers={"HX-Request": "true"}).content.decode()


def test_an_operator_sets_a_ttl_exactly_at_the_maximum_and_not_one_second_past(operator_client, monitored, lucia):
    key = b"lucia:session:a"
    monitored.set(key, b"v", ex=60)
    body = post(operator_client, key, action="set_ttl", seconds="1h")
    assert "Set TTL: done." in body and 3590_000 < monitored.pttl(key) <= SESSION_MAX_MS
    body = post(operator_client, key, action="set_ttl", seconds="3601")
    assert ("Set TTL: the TTL would be above the maximum of 1h of the namespace session (lucia:session:). Nothing "
            "was changed. Only an admin can go above it, with a reason.") in body
    assert monitored.pttl(key) <= SESSION_MAX_MS
    assert list(AuditEntry.objects.filter(action__startswith="key.").values_list("action", flat=True)) == [
        "key.set_ttl"]
    page = operator_client.get(reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(key)]))
    assert 'data-testid="ttl-maximum">A duration such as 15m, 1h or 7d. At most <strong>1h</strong>' in \
        page.content.decode()


def test_an_extension_is_held_to_the_maximum_inside_the_script(operator_client, monitored, lucia):
    key = b"lucia:session:b"
    monitored.set(key, b"v", ex=3000)
    assert "Extend TTL: done." in post(operator_client, key, action="extend_ttl", seconds="10m")  # up to 1 h at most
    assert 3590_000 < monitored.pttl(key) <= SESSION_MAX_MS
    body = post(operator_client, key, action="extend_ttl", seconds="1s")  # one second past the maximum
    assert "above the maximum of 1h" in body and monitored.pttl(key) <= SESSION_MAX_MS
    # The case: 49 minutes left, extended by an hour, would be 1 h 49 m.
    monitored.expire(key, 49 * 60)
    assert "above the maximum of 1h" in post(operator_client, key, action="extend_ttl", seconds="3600")
    assert monitored.ttl(key) <= 49 * 60
    monitored.persist(key)  # no TTL: an extension sets it, held to the same maximum
    assert "above the maximum of 1h" in post(operator_client, key, action="extend_ttl", seconds="3601")
    assert monitored.ttl(key) == -1
    assert "Extend TTL: done." in post(operator_client, key, action="extend_ttl", seconds="3600")
    assert 0 < monitored.pttl(key) <= SESSION_MAX_MS


def test_only_an_admin_with_a_reason_goes_above_the_maximum(admin_client, monitored, lucia):
    key = b"lucia:session:c"
    monitored.set(key, b"v", ex=60)
    body = post(admin_client, key, action="set_ttl", seconds="2h")
    assert "Give a reason to go above it" in body and monitored.ttl(key) <= 60
    body = post(admin_client, key, action="set_ttl", seconds="2h", reason="incident 42: keep the session")
    assert "Set TTL: done." in body and 7190 < monitored.ttl(key) <= 7200
    entry = AuditEntry.objects.get(action="key.set_ttl")
    assert entry.note == "incident 42: keep the session" and entry.after["above_namespace_max_seconds"] == 3600


def test_the_operation_holds_the_maximum_whatever_called_it(monitored, lucia, operator, admin):
    key = b"lucia:distress:d"
    monitored.set(key, b"v", ex=60)
    refused = act_on_key(database=lucia, key=key, action="set_ttl", seconds=6 * 3600 + 1, actor=operator,
                         reason="a reason does not help an operator")
    assert not refused.ok and "above the maximum of 6h" in refused.message and monitored.ttl(key) <= 60
    assert act_on_key(database=lucia, key=key, action="set_ttl", seconds=6 * 3600, actor=operator).ok
    legacy = b"lucia:legacy:e"  # in no namespace: only the 10-year cap
    monitored.set(legacy, b"v")
    assert act_on_key(database=lucia, key=legacy, action="set_ttl", seconds=400 * 86400, actor=operator).ok


# --- a namespace policy change: the impact first --------------------------------------------------
@pytest.fixture
def focus_keys(monitored, lucia):
    pipe = monitored.pipeline(transaction=False)
    for i in range(10):
        pipe.set(b"lucia:focus:short:%d" % i, b"v", ex=2 * 3600)
    for i in range(20):
        pipe.set(b"lucia:focus:mid:%d" % i, b"v", ex=12 * 3600)
    for i in range(5):
        pipe.set(b"lucia:focus:long:%d" % i, b"v", ex=30 * 3600)  # above 24 h: findings already
    for i in range(3):
        pipe.set(b"lucia:focus:none:%d" % i, b"v")  # no TTL: findings already
    pipe.execute()
    return monitored


def _form(ns, **changes):
    data = {"name": ns.name, "prefix": ns.prefix, "purpose": ns.purpose, "expected_type": ns.expected_type,
            "min_ttl_seconds": "", "max_ttl_seconds": ns.max_ttl_seconds, "ttl_required": "on",
            "max_payload_bytes": ns.max_payload_bytes, "fallback_note": ns.fallback_note,
            "violation_action": ns.violation_action}
    data.update(changes)
    return data


def test_cutting_the_maximum_shows_its_impact_before_it_is_saved(operator_client, focus_keys, lucia):
    reviewed = review.review_database(database=lucia).run
    ns = Namespace.objects.get(database=lucia, name="focus")
    url = reverse("continuity:namespace_edit", args=["lucia", ns.pk])
    response = operator_client.post(url, _form(ns, max_ttl_seconds="6h"))
    body = response.content.decode()
    assert response.status_code == 200 and 'data-testid="impact"' in body
    ns.refresh_from_db()
    assert ns.max_ttl_seconds == 24 * 3600 and not AuditEntry.objects.filter(action="namespace.update").exists()
    # The review's histogram: 3 without TTL and 5 above 1 d break it surely, the 20 keys of the
    # 6h–1d bucket may: between 8 and 28, against 8 now.
    assert f"TTL review #{reviewed.pk}</a>" in body
    assert 'between <strong data-testid="impact-review-keys">8 and 28</strong> keys' in body
    assert 'data-testid="impact-review-now">8<' in body
    # Read now: 38 keys; the 20 at 12 h become findings, 28 have one in all.
    assert 'of <strong>38</strong> keys of this namespace' in body
    assert 'data-testid="impact-sample-newly">20<' in body and "(28 would have one in all)" in body
    fingerprint = f"lucia:focus:|True|{6 * 3600}|16384|"
    assert f'name="impact_seen" value="{fingerprint}"' in body

    # Other values than those shown: their impact first.
    response = operator_client.post(url, _form(ns, max_ttl_seconds="3h", impact_seen=fingerprint))
    assert response.status_code == 200 and 'data-testid="impact"' in response.content.decode()
    # Confirmed: saved and audited.
    response = operator_client.post(url, _form(ns, max_ttl_seconds="6h", impact_seen=fingerprint))
    assert response.status_code == 302
    ns.refresh_from_db()
    assert ns.max_ttl_seconds == 6 * 3600
    entry = AuditEntry.objects.get(action="namespace.update")
    assert (entry.before["max_ttl_seconds"], entry.after["max_ttl_seconds"]) == (86400, 21600)


def test_loosening_a_policy_saves_at_once(operator_client, focus_keys, lucia):
    ns = Namespace.objects.get(database=lucia, name="focus")
    response = operator_client.post(reverse("continuity:namespace_edit", args=["lucia", ns.pk]),
                                    _form(ns, max_ttl_seconds="2d"))
    assert response.status_code == 302
    ns.refresh_from_db()
    assert ns.max_ttl_seconds == 2 * 86400
