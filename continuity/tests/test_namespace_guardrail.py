"""No namespace may be the whole database or cover another; the key prefix is admin-only."""

import pytest
from django.urls import reverse

from continuity.models import Namespace
from dashboard.models import AuditEntry

NEW = {"name": "wide", "purpose": "", "expected_type": "", "min_ttl_seconds": "", "max_ttl_seconds": "600",
       "ttl_required": "on", "max_payload_bytes": "1024", "fallback_note": "", "violation_action": "report"}


@pytest.mark.parametrize("prefix,error", [
    ("lucia:", "must be longer than the database&#x27;s key prefix"),
    ("lucia", "must start with the database&#x27;s key prefix"),
    ("", "This field is required."),
    ("lucia:s", "covers the namespace &#x27;lucia:session:&#x27;"),
    ("lucia:r", "covers the namespace &#x27;lucia:rate:&#x27;"),
])
def test_it_refuses_a_namespace_that_widens_the_purge_guardrail(operator_client, lucia, prefix, error):
    before = set(Namespace.objects.values_list("prefix", flat=True))
    response = operator_client.post(reverse("continuity:namespace_create", args=["lucia"]), {**NEW, "prefix": prefix})
    assert response.status_code == 200 and error in response.content.decode()
    assert set(Namespace.objects.values_list("prefix", flat=True)) == before
    assert not AuditEntry.objects.filter(action="namespace.create").exists()


def test_it_refuses_to_widen_an_existing_namespace_to_the_key_prefix(operator_client, lucia, monitored):
    ns = Namespace.objects.get(database=lucia, name="session")
    data = {**NEW, "name": "session", "prefix": "lucia:", "max_ttl_seconds": "3600"}
    response = operator_client.post(reverse("continuity:namespace_edit", args=["lucia", ns.pk]), data)
    assert response.status_code == 200 and "must be longer than the database" in response.content.decode()
    ns.refresh_from_db()
    assert ns.prefix == "lucia:session:"
    # And the purge guardrail still refuses the whole database.
    monitored.set(b"lucia:focus:1", b"v")
    preview = operator_client.post(reverse("continuity:purge_new"), {"database": "lucia", "target_kind": "prefix",
                                                                     "target": "lucia:", "action": "delete"})
    assert preview.status_code == 400 and monitored.dbsize() == 1


def test_it_accepts_a_namespace_nested_under_another(operator_client, lucia):
    response = operator_client.post(reverse("continuity:namespace_create", args=["lucia"]),
                                    {**NEW, "name": "session-vip", "prefix": "lucia:session:vip:"})
    assert response.status_code == 302
    assert Namespace.objects.get(database=lucia, name="session-vip").prefix == "lucia:session:vip:"


DATABASE = {"name": "lucia", "environment": "production", "provider": "Upstash", "region": "", "url_env": "REDIS_URL"}


def test_an_operator_cannot_change_the_key_prefix(operator_client, lucia):
    url = reverse("dashboard:database_edit", args=["lucia"])
    assert 'name="key_prefix" value="lucia:"' in operator_client.get(url).content.decode()
    assert "Only an admin can change this." in operator_client.get(url).content.decode()
    response = operator_client.post(url, {**DATABASE, "key_prefix": "", "region": "eu-west-1"})
    assert response.status_code == 302
    lucia.refresh_from_db()
    assert lucia.key_prefix == "lucia:" and lucia.region == "eu-west-1"  # other fields still editable
    entry = AuditEntry.objects.get(action="database.edit")
    assert entry.before["key_prefix"] == entry.after["key_prefix"] == "lucia:"


def test_an_admin_changes_the_key_prefix_with_an_audit_row(admin_client, lucia):
    Namespace.objects.filter(database=lucia).delete()
    Namespace.objects.create(database=lucia, name="session", prefix="lucia:v2:session:")
    url = reverse("dashboard:database_edit", args=["lucia"])
    assert admin_client.post(url, {**DATABASE, "key_prefix": "lucia:v2:", "reason": "v2 key layout"}).status_code == 302
    lucia.refresh_from_db()
    assert lucia.key_prefix == "lucia:v2:"
    entry = AuditEntry.objects.get(action="database.edit")
    assert (entry.actor_label, entry.before["key_prefix"], entry.after["key_prefix"]) == ("ada", "lucia:", "lucia:v2:")
    assert entry.note == "v2 key layout"


@pytest.mark.parametrize("key_prefix", ["lucia:session:", "other:"])
def test_an_admin_cannot_move_the_key_prefix_past_a_namespace(admin_client, lucia, key_prefix):
    url = reverse("dashboard:database_edit", args=["lucia"])
    response = admin_client.post(url, {**DATABASE, "key_prefix": key_prefix})
    assert response.status_code == 200 and "Every namespace prefix must start with the key prefix" in response.content.decode()
    lucia.refresh_from_db()
    assert lucia.key_prefix == "lucia:" and not AuditEntry.objects.filter(action="database.edit").exists()
