import logging

import pytest
from django.urls import reverse

from dashboard.models import AuditEntry, Rotation, Secret

PASTED = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"
PASTED_URL = "rediss://default:Zx81kQpa9Ym3@eu1-lucia.upstash.io:6379"


@pytest.fixture
def token(lucia):
    secret = Secret.objects.get(name="lucia-rest-token")
    secret.set_reference("op://Lucia/Upstash Redis lucia/REST token")
    secret.save()
    return secret


def _nowhere(value, response, caplog):
    body = response.content.decode()
    assert value not in body
    for entry in AuditEntry.objects.all():
        assert value not in str(entry.before) + str(entry.after) + entry.note + entry.target_label
    assert value not in caplog.text


def test_it_shows_the_secret_page_with_status_reference_parts_and_blast_radius(viewer_client, token):
    body = viewer_client.get(token.get_absolute_url()).content.decode()
    assert 'data-status="never_rotated"' in body
    assert "op://Lucia/Upstash Redis lucia/REST token" in body
    assert "item Upstash Redis lucia" in body and "field REST token" in body
    assert 'data-testid="blast-envvar"' in body and "$UPSTASH_REDIS_REST_TOKEN" in body
    assert "database lucia" in body
    assert 'data-testid="record-rotation"' not in body  # viewers cannot rotate


def test_it_serves_the_rotation_form_as_a_fragment_to_operators(operator_client, viewer_client, token):
    url = reverse("dashboard:secret_rotate", args=[token.name])
    fragment = operator_client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and 'data-testid="rotation-form"' in fragment
    page = operator_client.get(url).content.decode()
    assert "<html" in page and 'data-testid="rotation-form"' in page
    assert viewer_client.get(url, HTTP_HX_REQUEST="true").status_code == 403


def test_it_forbids_viewers_to_record_a_rotation(viewer_client, token):
    response = viewer_client.post(reverse("dashboard:secret_rotate", args=[token.name]),
                                  {"verified_how": "ping", "confirm": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 403
    assert not Rotation.objects.exists()
    assert not AuditEntry.objects.filter(action="secret.rotate").exists()


def test_it_records_a_rotation_after_confirmation(operator_client, token):
    url = reverse("dashboard:secret_rotate", args=[token.name])
    data = {"reference": "op://Lucia/Upstash Redis lucia 2025/REST token", "verified_how": "Engine redeployed, PING ok",
            "note": "quarterly"}
    review = operator_client.post(url, data, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="rotation-confirm"' in review and "$UPSTASH_REDIS_REST_TOKEN" in review
    assert not Rotation.objects.exists()  # nothing written before the confirmation

    done = operator_client.post(url, {**data, "confirm": "1"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="rotation-recorded"' in done and 'data-status="ok"' in done
    rotation = Rotation.objects.get()
    assert rotation.recorded_by.username == "otto" and rotation.verified_how == "Engine redeployed, PING ok"
    assert rotation.ref_item == "Upstash Redis lucia 2025"
    token.refresh_from_db()
    assert token.last_rotated == rotation.rotated_at
    assert token.reference == "op://Lucia/Upstash Redis lucia 2025/REST token"
    entry = AuditEntry.objects.get(action="secret.rotate")
    assert entry.actor_label == "otto" and entry.target_label == "lucia-rest-token"
    assert entry.before["status"] == "never_rotated" and entry.after["status"] == "ok"
    assert entry.after["reference"] == "op://Lucia/Upstash Redis lucia 2025/REST token"


def test_it_keeps_the_same_item_when_no_new_reference_is_given(operator_client, token):
    url = reverse("dashboard:secret_rotate", args=[token.name])
    operator_client.post(url, {"verified_how": "ping", "confirm": "1"}, HTTP_HX_REQUEST="true")
    assert Rotation.objects.get().reference == "op://Lucia/Upstash Redis lucia/REST token"


@pytest.mark.parametrize("field,pasted", [("reference", PASTED), ("reference", PASTED_URL),
                                          ("verified_how", f"checked with {PASTED}"), ("note", f"old was {PASTED_URL}")])
def test_it_refuses_a_pasted_secret_without_echoing_it(operator_client, token, caplog, field, pasted):
    caplog.set_level(logging.DEBUG)
    data = {"reference": "", "verified_how": "ping", "note": "", "confirm": "1", field: pasted}
    response = operator_client.post(reverse("dashboard:secret_rotate", args=[token.name]), data, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    assert "op://vault/item/field" in body  # explains the expected shape
    assert not Rotation.objects.exists()
    token.refresh_from_db()
    assert token.last_rotated is None
    _nowhere(pasted, response, caplog)
    _nowhere(PASTED, response, caplog)


def test_it_marks_a_secret_exposed(operator_client, viewer_client, token):
    url = reverse("dashboard:secret_exposed", args=[token.name])
    assert viewer_client.post(url).status_code == 403
    response = operator_client.post(url, HTTP_HX_REQUEST="true")
    assert response["HX-Redirect"] == token.get_absolute_url()
    token.refresh_from_db()
    assert token.rotation_status() == "exposed"
    entry = AuditEntry.objects.get(action="secret.exposed")
    assert entry.after["status"] == "exposed" and entry.actor_label == "otto"


def test_it_answers_a_refused_exposure_note_with_the_form_and_its_reason(operator_client, token):
    url = reverse("dashboard:secret_exposed", args=[token.name])
    response = operator_client.post(url, {"note": f"pasted {PASTED} in chat"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    # 400 with a fragment that base.html's htmx-config swaps in place of the form.
    assert response.status_code == 400 and "<html" not in body
    assert 'data-testid="exposed-error"' in body and "This looks like a secret" in body
    assert 'data-testid="mark-exposed"' in body and PASTED not in body
    token.refresh_from_db()
    assert token.rotation_status() != "exposed" and not AuditEntry.objects.filter(action="secret.exposed").exists()


def test_it_lists_secrets_sorted_in_a_fixed_number_of_queries(viewer_client, lucia, django_assert_num_queries):
    for index in range(5):
        Secret.objects.create(name=f"extra-{index}", database=lucia)
    url = reverse("dashboard:secret_list")
    viewer_client.get(url)  # warm the session and permission caches
    with django_assert_num_queries(5):  # the fragment skips the Redis banner check
        body = viewer_client.get(url + "?sort=age", HTTP_HX_REQUEST="true").content.decode()
    assert body.count('data-testid="secret-row"') == 8
    assert "<html" not in body


def test_it_creates_and_edits_a_secret_with_audit(operator_client, viewer_client, lucia):
    data = {"name": "lucia-ro-token", "title": "read-only token", "purpose": "browsing", "database": lucia.pk,
            "reference": "op://Lucia/Upstash Redis lucia/read-only token", "owner": "platform",
            "rotation_interval_days": 30, "due_soon_days": 7, "notes": ""}
    assert viewer_client.post(reverse("dashboard:secret_create"), data).status_code == 403
    response = operator_client.post(reverse("dashboard:secret_create"), data)
    assert response.status_code == 302
    secret = Secret.objects.get(name="lucia-ro-token")
    assert secret.ref_field == "read-only token" and secret.last_rotated is None
    assert AuditEntry.objects.get(action="secret.create").after["reference"] == data["reference"]
    edit = reverse("dashboard:secret_edit", args=[secret.name])
    assert "<html" in operator_client.get(edit).content.decode()
    operator_client.post(edit, {**data, "rotation_interval_days": 60, "last_rotated": "2020-01-01"})
    secret.refresh_from_db()
    assert secret.rotation_interval_days == 60 and secret.last_rotated is None  # never set by editing
    entry = AuditEntry.objects.get(action="secret.edit")
    assert entry.before["rotation_interval_days"] == 30 and entry.after["rotation_interval_days"] == 60


def test_it_refuses_a_plaintext_secret_in_the_secret_form_without_echo(operator_client, lucia, caplog):
    caplog.set_level(logging.DEBUG)
    data = {"name": "oops", "reference": PASTED, "notes": f"url {PASTED_URL}", "rotation_interval_days": 90,
            "due_soon_days": 14}
    response = operator_client.post(reverse("dashboard:secret_create"), data)
    assert response.status_code == 200
    assert not Secret.objects.filter(name="oops").exists()
    body = response.content.decode()
    assert "not a 1Password secret reference" in body and "looks like a secret" in body
    _nowhere(PASTED, response, caplog)
    _nowhere(PASTED_URL, response, caplog)
    assert 'value="oops"' in body  # harmless fields are kept
