"""Panels that show what a save changed: after a rotation the secret's details (its new
reference), after a new user the users table. The save answers an HX-Trigger event; the panel
listens for it and fetches itself again."""

import json

from django.urls import reverse

from dashboard.models import Secret


def test_a_recorded_rotation_refreshes_the_secrets_details(operator_client, viewer_client, lucia):
    secret = Secret.objects.get(name="lucia-rest-token")
    page = viewer_client.get(secret.get_absolute_url()).content.decode()
    assert (f'<div id="secret-details" hx-get="{secret.get_absolute_url()}" hx-trigger="secret-changed from:body"'
            in page)
    url = reverse("dashboard:secret_rotate", args=[secret.name])
    data = {"reference": "op://Lucia/Upstash Redis lucia 2026/REST token", "verified_how": "PING ok", "confirm": "1"}
    response = operator_client.post(url, data, HTTP_HX_REQUEST="true")
    assert json.loads(response["HX-Trigger"]) == {"secret-changed": {}}
    details = viewer_client.get(secret.get_absolute_url(), HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in details and details.lstrip().startswith('<div id="secret-details"')
    assert "op://Lucia/Upstash Redis lucia 2026/REST token" in details and "item Upstash Redis lucia 2026" in details
    assert "HX-Request" in viewer_client.get(secret.get_absolute_url())["Vary"]


def test_a_refused_rotation_triggers_nothing(operator_client, lucia):
    url = reverse("dashboard:secret_rotate", args=["lucia-rest-token"])
    response = operator_client.post(url, {"reference": "not a reference", "verified_how": "x", "confirm": "1"},
                                    HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "HX-Trigger" not in response


def test_a_new_user_refreshes_the_users_table(admin_client, lucia, admin):
    response = admin_client.post(reverse("dashboard:user_create"), {"username": "carol", "role": "operator"},
                                 HTTP_HX_REQUEST="true")
    assert json.loads(response["HX-Trigger"]) == {"users-changed": {}}
    table = admin_client.get(reverse("dashboard:user_list"), HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in table and 'id="user-create"' not in table
    assert "<strong>carol</strong>" in table and "<strong>ada</strong>" in table
    refused = admin_client.post(reverse("dashboard:user_create"), {"username": "carol", "role": "operator"},
                                HTTP_HX_REQUEST="true")
    assert "HX-Trigger" not in refused
