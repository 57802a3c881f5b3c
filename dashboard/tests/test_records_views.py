import logging

import pytest
from django.urls import reverse

from dashboard.models import AccountAccess, AuditEntry, ChecklistItem, EnvVar, PhaseMapping, RedisDatabase, Secret

PASTED_URL = "rediss://default:Zx81kQpa9Ym3@eu1-lucia.upstash.io:6379"
PASTED_TOKEN = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"


@pytest.mark.parametrize("name,args,marker", [
    ("dashboard:database_list", [], 'data-testid="database-row"'),
    ("dashboard:database_detail", ["lucia"], 'data-testid="failure-plan"'),
    ("dashboard:account_list", [], 'data-testid="account-row"'),
    ("dashboard:envvar_list", [], "UPSTASH_REDIS_REST_TOKEN"),
    ("dashboard:envvar_detail", ["REDIS_URL"], 'data-testid="detail-table"'),
    ("dashboard:checklist", [], "test continuity across redeploy/restart"),
    ("dashboard:phase_list", [], "Phase 6"),
    ("dashboard:secret_list", [], 'data-secret="lucia-rest-token"'),
    ("dashboard:runbook", [], 'data-testid="runbook-secret"'),
])
def test_it_shows_every_record_page_to_viewers(viewer_client, lucia, name, args, marker):
    response = viewer_client.get(reverse(name, args=args))
    assert response.status_code == 200
    assert marker in response.content.decode()


def test_it_shows_the_failure_plan_and_ttl_notes_on_the_database_page(viewer_client, lucia):
    body = viewer_client.get(lucia.get_absolute_url()).content.decode()
    assert "If Redis is down" in body and "Fall back to in-process continuity" in body
    assert "lucia:session:" in body and "15m – 1h" in body
    assert "Expiry is never an error" in body


def test_it_opens_home_with_what_needs_rotation(viewer_client, lucia, django_assert_num_queries):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    Secret.objects.filter(name="lucia-rest-url").update(last_rotated=now - timedelta(days=400))  # overdue
    Secret.objects.filter(name="lucia-rest-token").update(last_rotated=now - timedelta(days=85))  # due in 5 days
    Secret.objects.filter(name="lucia-redis-password").update(last_rotated=now - timedelta(days=10))  # ok
    viewer_client.get(reverse("dashboard:home"))
    with django_assert_num_queries(11):
        body = viewer_client.get(reverse("dashboard:home")).content.decode()
    attention = body.split('data-testid="attention-table"')[1].split("</table>")[0]
    assert 'data-secret="lucia-rest-url"' in attention and 'data-secret="lucia-rest-token"' in attention
    assert "lucia-redis-password" not in attention
    assert attention.index("lucia-rest-url") < attention.index("lucia-rest-token")  # next due ascending
    assert 'data-testid="database-row"' in body and 'data-testid="stage-progress"' in body
    fragment = viewer_client.get(reverse("dashboard:home") + "?sort=-next_due", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment
    assert fragment.index("lucia-rest-token") < fragment.index("lucia-rest-url")


@pytest.mark.parametrize("url_name,args,data,model,lookup", [
    ("dashboard:account_create", [], {"provider": "Upstash", "account_email": "ops@example.test",
                                     "dashboard_url": "https://console.upstash.com", "team": "Lucia",
                                     "mfa_method": "TOTP", "mfa_last_verified": "2025-05-01"},
     AccountAccess, {"account_email": "ops@example.test"}),
    ("dashboard:envvar_create", [], {"name": "LUCIA_REDIS_RO_URL", "value_or_reference": "rediss://default_ro@eu1.upstash.io:6379",
                                    "used_in": "Dashboard"}, EnvVar, {"name": "LUCIA_REDIS_RO_URL"}),
    ("dashboard:checklist_create", [], {"stage": 3, "position": 9, "text": "review alert channels"},
     ChecklistItem, {"text": "review alert channels"}),
    ("dashboard:phase_create", [], {"number": 7, "title": "observability", "primary_page": "08 - Live Transition Runbook"},
     PhaseMapping, {"number": 7}),
])
def test_it_lets_operators_create_records_with_audit_and_viewers_not(viewer_client, operator_client, lucia, url_name,
                                                                    args, data, model, lookup):
    url = reverse(url_name, args=args)
    assert viewer_client.get(url).status_code == 403
    assert viewer_client.post(url, data).status_code == 403
    assert not model.objects.filter(**lookup).exists()
    assert 'data-testid="record-form"' in operator_client.get(url).content.decode()
    response = operator_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    obj = model.objects.get(**lookup)
    entry = AuditEntry.objects.filter(target_id=str(obj.pk), target_type=obj._meta.label_lower).get(source="web")
    assert entry.actor_label == "otto" and entry.action.endswith(".create") and entry.before is None


STAGING = {"name": "staging", "environment": "staging", "provider": "Upstash", "region": "eu-west-1",
           "read_regions": "us-east-1, ap-south-1", "key_prefix": "lucia:", "url_env": "STAGING_REDIS_URL",
           "rest_url": "https://staging.upstash.io"}


def test_only_an_admin_creates_a_database_record_with_a_reason(viewer_client, operator_client, admin_client, lucia):
    url = reverse("dashboard:database_create")
    for client in (viewer_client, operator_client):
        assert client.get(url).status_code == 403
        assert client.post(url, {**STAGING, "reason": "staging"}).status_code == 403
    no_reason = admin_client.post(url, STAGING)
    assert no_reason.status_code == 200 and "Give a reason" in no_reason.content.decode()
    assert not RedisDatabase.objects.filter(name="staging").exists()
    response = admin_client.post(url, {**STAGING, "reason": "staging database for the v2 rollout"})
    assert response.status_code == 302
    staging = RedisDatabase.objects.get(name="staging")
    assert (staging.read_regions, staging.url_env) == (["us-east-1", "ap-south-1"], "STAGING_REDIS_URL")
    entry = AuditEntry.objects.get(action="database.create", target_id=str(staging.pk))
    assert (entry.actor_label, entry.before, entry.note) == ("ada", None, "staging database for the v2 rollout")


def test_it_edits_a_database_and_records_before_and_after(operator_client, lucia):
    url = reverse("dashboard:database_edit", args=["lucia"])
    data = {"name": "lucia", "environment": "production", "provider": "Upstash", "region": "eu-west-1",
            "key_prefix": "lucia:", "url_env": "REDIS_URL", "alerting_path": "PagerDuty Lucia on-call"}
    assert operator_client.post(url, data).status_code == 302
    lucia.refresh_from_db()
    assert lucia.region == "eu-west-1" and lucia.alerting_path == "PagerDuty Lucia on-call"
    entry = AuditEntry.objects.get(action="database.edit")
    assert entry.before["region"] == "" and entry.after["region"] == "eu-west-1"


@pytest.mark.parametrize("data,error", [
    ({"name": "UPSTASH_REDIS_REST_TOKEN", "value_or_reference": PASTED_TOKEN}, "accepts only a reference"),
    ({"name": "MY_API_KEY", "value_or_reference": "plainvalue"}, "accepts only a reference"),
    ({"name": "REDIS_URL", "value_or_reference": PASTED_URL}, "URL with a password"),
    ({"name": "LUCIA_NOTE", "value_or_reference": "x", "notes": f"was {PASTED_URL}"}, "looks like a secret"),
])
def test_it_refuses_secret_values_in_the_env_var_tracker_without_echo(operator_client, lucia, caplog, data, error):
    caplog.set_level(logging.DEBUG)
    env = EnvVar.objects.get(name="REDIS_URL")
    url = reverse("dashboard:envvar_edit", args=["REDIS_URL"]) if data["name"] == "REDIS_URL" else reverse("dashboard:envvar_create")
    response = operator_client.post(url, {"used_in": "", **data})
    body = response.content.decode()
    assert response.status_code == 200 and error in body
    pasted = data.get("notes", data["value_or_reference"]).replace("was ", "")
    assert pasted not in body and pasted not in caplog.text
    assert not any(pasted in str(e.after) for e in AuditEntry.objects.all())
    env.refresh_from_db()
    assert env.value_or_reference == ""


def test_it_accepts_a_reference_for_a_secret_named_env_var_and_keeps_its_parts(operator_client, lucia):
    url = reverse("dashboard:envvar_edit", args=["UPSTASH_REDIS_REST_TOKEN"])
    data = {"name": "UPSTASH_REDIS_REST_TOKEN", "value_or_reference": "op://Lucia/Upstash Redis lucia/REST token",
            "used_in": "Engine, Worker", "required": "on", "secret": Secret.objects.get(name="lucia-rest-token").pk}
    assert operator_client.post(url, data).status_code == 302
    env = EnvVar.objects.get(name="UPSTASH_REDIS_REST_TOKEN")
    assert env.ref_vault == "Lucia" and env.ref_field == "REST token" and env.used_in == ["Engine", "Worker"]
    assert env.secret.name == "lucia-rest-token"
    assert AuditEntry.objects.get(action="envvar.edit").after["value_or_reference"] == data["value_or_reference"]


def test_it_ticks_a_checklist_item_with_htmx_and_audits_it(operator_client, viewer_client, lucia):
    item = ChecklistItem.objects.get(text="create Upstash account")
    url = reverse("dashboard:checklist_toggle", args=[item.pk])
    assert viewer_client.post(url, {"done": "on"}).status_code == 403
    fragment = operator_client.post(url, {"done": "on", "note": "done with the ops mailbox"}, HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert "<html" not in body and 'data-done="1"' in body and "otto" in body
    item.refresh_from_db()
    assert item.done_by.username == "otto" and item.done_at is not None
    entry = AuditEntry.objects.get(action="checklist.done")
    assert entry.after["done_by"] == "otto" and entry.after["note"] == "done with the ops mailbox"
    stage = ChecklistItem.objects.stages()[0]
    assert (stage["done"], stage["total"], stage["percent"]) == (1, 4, 25)


def test_it_refuses_a_pasted_secret_in_a_checklist_note(operator_client, lucia):
    item = ChecklistItem.objects.get(text="create Redis database")
    body = operator_client.post(reverse("dashboard:checklist_toggle", args=[item.pk]),
                                {"done": "on", "note": PASTED_URL}, HTTP_HX_REQUEST="true").content.decode()
    assert "looks like a secret" in body and PASTED_URL not in body
    item.refresh_from_db()
    assert item.done_at is None


def test_it_renders_the_runbook_in_the_reference_order_and_as_markdown(viewer_client, lucia):
    body = viewer_client.get(reverse("dashboard:runbook")).content.decode()
    headings = ["Runbook phase mapping", "Why Redis is being added", "Lucia role", "Key patterns", "Setup checklist",
                "Account access", "Database references", "Keys and secrets", "Environment variable tracker",
                "TTL policy", "Failure behaviour", "Notes / gotchas"]
    positions = [body.index(h) for h in headings]
    assert positions == sorted(positions)
    assert "08 - Live Transition Runbook" in body and "lucia:session:{id}" in body
    response = viewer_client.get(reverse("dashboard:runbook_markdown"))
    assert response["Content-Type"].startswith("text/markdown")
    assert "attachment" in response["Content-Disposition"]
    text = response.content.decode()
    assert text.startswith("# Upstash Redis runbook")
    assert "| `UPSTASH_REDIS_REST_TOKEN` |" in text and "- [ ] create Upstash account" in text
    assert "- Phase 1 — account access and secret references" in text
    assert "&amp;" not in text and "&#x27;" not in text  # Markdown, not HTML-escaped
    md_positions = [text.index(h) for h in ["## Runbook phase mapping", "## Setup checklist", "## Keys and secrets",
                                            "## Environment variable tracker", "### Failure behaviour"]]
    assert md_positions == sorted(md_positions)


def test_it_shows_and_edits_account_access(viewer_client, operator_client, lucia):
    account = AccountAccess.objects.get()
    body = viewer_client.get(account.get_absolute_url()).content.decode()
    assert 'data-testid="detail-table"' in body and "Upstash" in body
    assert "/edit/" not in body  # viewers get no edit link
    url = reverse("dashboard:account_edit", args=[account.pk])
    assert viewer_client.post(url, {"provider": "Upstash"}).status_code == 403
    data = {"provider": "Upstash", "account_email": "ops@example.test", "mfa_method": "WebAuthn",
            "mfa_last_verified": "2025-05-20", "notes": ""}
    assert operator_client.post(url, data).status_code == 302
    account.refresh_from_db()
    assert account.mfa_method == "WebAuthn" and str(account.mfa_last_verified) == "2025-05-20"
    entry = AuditEntry.objects.get(action="account.edit")
    assert entry.before["mfa_method"] == "" and entry.after["mfa_method"] == "WebAuthn"
