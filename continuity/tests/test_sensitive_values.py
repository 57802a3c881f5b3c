"""Sensitive namespaces (seeded: session and distress): viewers see a key's metadata only,
on every path that returns a value (the page, its htmx regions, the download); an operator
reveals a value with one click and every such read is audited. Not one byte of a withheld
value is read from Redis."""

import importlib

import pytest
from django.apps import apps as django_apps
from django.urls import reverse

from continuity import keyspace
from continuity.models import Namespace
from dashboard.models import AuditEntry

SESSION = b"lucia:session:7f3a"
SESSION_VALUE = "distress-stage-3 token-for-ann"
DISTRESS = b"lucia:distress:7f3a"
FOCUS = b"lucia:focus:7f3a"


@pytest.fixture
def keys(monitored, lucia):
    monitored.set(SESSION, SESSION_VALUE, ex=1200)
    monitored.hset(DISTRESS, mapping={"stage": "acute-3", "streak": "5"})
    monitored.expire(DISTRESS, 1200)
    monitored.set(FOCUS, "follow-up with ann", ex=1200)
    return monitored


def url(name, key):
    return reverse(f"continuity:{name}", args=["lucia", keyspace.encode_key(key)])


def reads(client):
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{command}", {}).get("calls", 0)
               for command in ("getrange", "get", "hscan", "hgetall"))


def test_the_seed_marks_session_and_distress_sensitive(lucia):
    assert set(Namespace.objects.filter(database=lucia, sensitive=True).values_list("name", flat=True)) == {
        "session", "distress"}
    # An install seeded before the field existed: the migration marks the same two.
    Namespace.objects.update(sensitive=False)
    migration = importlib.import_module("continuity.migrations.0019_namespace_sensitive")
    migration.mark_seeded(django_apps, None)
    assert set(Namespace.objects.filter(sensitive=True).values_list("name", flat=True)) == {"session", "distress"}


def test_a_viewer_sees_metadata_only_on_every_path(viewer_client, keys):
    keys.config_resetstat()
    for key, value in ((SESSION, SESSION_VALUE), (DISTRESS, "acute-3")):
        page = viewer_client.get(url("key_detail", key)).content.decode()
        assert value not in page and 'data-testid="value-hidden"' in page
        assert 'data-testid="ttl"' in page and 'data-testid="reveal-button"' not in page
        fragment = viewer_client.get(url("key_detail", key), HTTP_HX_REQUEST="true").content.decode()
        assert "<html" not in fragment and value not in fragment and 'data-testid="value-hidden"' in fragment
        assert viewer_client.post(url("key_reveal", key)).status_code == 403
    assert reads(keys) == 0  # the value never left Redis
    download = viewer_client.get(url("key_download", SESSION))
    assert download.status_code == 405 and SESSION_VALUE.encode() not in download.content
    assert viewer_client.post(url("key_download", SESSION)).status_code == 403
    assert not AuditEntry.objects.filter(action__in=("key.reveal", "key.download")).exists()
    # A namespace that is not sensitive shows its values as before.
    assert "follow-up with ann" in viewer_client.get(url("key_detail", FOCUS)).content.decode()


def test_an_operator_reveals_a_value_with_one_click_and_the_read_is_audited(operator_client, keys):
    page = operator_client.get(url("key_detail", SESSION)).content.decode()
    assert SESSION_VALUE not in page and 'data-testid="reveal-button"' in page
    fragment = operator_client.post(url("key_reveal", SESSION), HTTP_HX_REQUEST="true").content.decode()
    assert SESSION_VALUE in fragment and 'data-testid="revealed"' in fragment and "<html" not in fragment
    entry = AuditEntry.objects.get(action="key.reveal")
    assert (entry.actor_label, entry.target_id, entry.target_label) == (
        "otto", keyspace.encode_key(SESSION), "lucia: lucia:session:7f3a")
    assert entry.after == {"key": "lucia:session:7f3a", "namespace": "lucia:session:"}
    assert SESSION_VALUE not in str(entry.after)
    full = operator_client.post(url("key_reveal", DISTRESS)).content.decode()  # without htmx: the page
    assert "acute-3" in full and "<html" in full
    assert AuditEntry.objects.filter(action="key.reveal").count() == 2
    # The value hides again on the next answer (an action's region included).
    after_action = operator_client.post(url("key_action", SESSION), {"action": "set_ttl", "seconds": "30m"},
                                        HTTP_HX_REQUEST="true").content.decode()
    assert "Set TTL: done." in after_action and SESSION_VALUE not in after_action
    assert operator_client.get(url("key_download", SESSION)).status_code == 405
    download = operator_client.post(url("key_download", SESSION))
    assert download.status_code == 200 and download.content == SESSION_VALUE.encode()
    assert AuditEntry.objects.filter(action="key.download", actor_label="otto").count() == 1


def test_an_operator_marks_a_namespace_sensitive_with_an_audit_row(operator_client, viewer_client, keys, lucia):
    ns = Namespace.objects.get(database=lucia, name="focus")
    data = {"name": ns.name, "prefix": ns.prefix, "purpose": ns.purpose, "expected_type": "", "min_ttl_seconds": "",
            "max_ttl_seconds": ns.max_ttl_seconds, "ttl_required": "on", "max_payload_bytes": ns.max_payload_bytes,
            "fallback_note": "", "violation_action": ns.violation_action, "sensitive": "on"}
    response = operator_client.post(reverse("continuity:namespace_edit", args=["lucia", ns.pk]), data)
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="namespace.update")
    assert (entry.before["sensitive"], entry.after["sensitive"]) == (False, True)
    assert "follow-up with ann" not in viewer_client.get(url("key_detail", FOCUS)).content.decode()
