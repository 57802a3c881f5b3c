"""A value that looks like a secret is never echoed by a form, whichever validator fails first."""

import logging

import pytest
from django.urls import reverse

from dashboard.models import AccountAccess, AuditEntry, EnvVar, RedisDatabase

TOKEN = "Zx81kQpa9Ym3WvT7cR2n"
PASTED_URL = f"rediss://default:{TOKEN}@eu1-lucia.upstash.io:6379"
UPSTASH = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"

DATABASE = {"name": "lucia", "environment": "production", "provider": "Upstash", "region": "eu-west-1",
            "key_prefix": "lucia:", "url_env": "REDIS_URL"}


def _assert_refused_without_echo(response, secret, field, caplog):
    body = response.content.decode()
    assert response.status_code == 200
    assert "looks like a secret" in body
    assert secret not in body and TOKEN not in body
    assert secret not in caplog.text
    assert not any(secret in str(e.before) + str(e.after) + e.note for e in AuditEntry.objects.all())
    # The field's own input is empty and carries the refusal, not the first validator's message.
    assert f'name="{field}" value=' not in body or f'name="{field}" value=""' in body
    return body


# Each of these failed a validator of its own first ("Enter a valid URL.", slug, email, length,
# env-var name, array item) and came back in the input's value.
@pytest.mark.parametrize("field,value", [
    ("rest_url", PASTED_URL),
    ("name", PASTED_URL),
    ("url_env", UPSTASH),
    ("read_regions", f"eu-west-1, {UPSTASH}"),
    ("region", UPSTASH + "x" * 100),
    ("tcp_endpoint", PASTED_URL + "/" + "x" * 300),
])
def test_it_refuses_a_secret_in_any_database_field_without_echo(admin_client, lucia, caplog, field, value):
    # An admin: only an admin may change url_env (and the other guarded fields).
    caplog.set_level(logging.DEBUG)
    secret = PASTED_URL if PASTED_URL in value else UPSTASH
    response = admin_client.post(reverse("dashboard:database_edit", args=["lucia"]), {**DATABASE, field: value})
    body = _assert_refused_without_echo(response, secret, field, caplog)
    assert "Enter a valid URL." not in body and "Ensure this value has at most" not in body
    lucia.refresh_from_db()
    assert secret not in str(RedisDatabase.objects.filter(pk=lucia.pk).values().get())


@pytest.mark.parametrize("field,value", [
    ("account_email", PASTED_URL),
    ("dashboard_url", f"https://ops:{TOKEN}@console.upstash.com/"),
    ("provider", UPSTASH),
])
def test_it_refuses_a_secret_in_any_account_field_without_echo(operator_client, lucia, caplog, field, value):
    caplog.set_level(logging.DEBUG)
    data = {"provider": "Upstash", "account_email": "ops@lucia.example", "team": "ops", field: value}
    response = operator_client.post(reverse("dashboard:account_create"), data)
    _assert_refused_without_echo(response, value, field, caplog)
    assert not AccountAccess.objects.filter(account_email="ops@lucia.example").exists()


def test_it_scrubs_a_secret_in_env_var_used_in_and_keeps_the_clean_fields(operator_client, lucia, caplog):
    caplog.set_level(logging.DEBUG)
    data = {"name": "LUCIA_NOTE", "value_or_reference": "plain", "used_in": f"Engine, {UPSTASH}",
            "notes": "harmless note"}
    response = operator_client.post(reverse("dashboard:envvar_create"), data)
    body = _assert_refused_without_echo(response, UPSTASH, "used_in", caplog)
    assert "harmless note" in body  # only the refused field is blanked
    assert not EnvVar.objects.filter(name="LUCIA_NOTE").exists()


def test_it_does_not_echo_a_secret_in_a_choice_error(admin_client, lucia, caplog):
    # ChoiceField's own message quotes the value: "Select a valid choice. X is not one of …".
    caplog.set_level(logging.DEBUG)
    response = admin_client.post(reverse("dashboard:alert_channel_create"),
                                 {"name": "ops", "kind": PASTED_URL, "url": "https://hooks.example.test/x"})
    body = response.content.decode()
    assert "looks like a secret" in body and TOKEN not in body and "is not one of the available choices" not in body


# --- every free-text field is scanned, and the audit censors any URL userinfo (item 3) --------
@pytest.mark.parametrize("url_name,args,data,field", [
    ("dashboard:secret_create", [], {"name": "lucia-x", "title": f"token={TOKEN}", "rotation_interval_days": 90,
                                     "due_soon_days": 14}, "title"),
    ("dashboard:database_create", [], {**DATABASE, "name": "other", "provider": UPSTASH}, "provider"),
    ("dashboard:database_create", [], {**DATABASE, "name": "other", "key_prefix": UPSTASH}, "key_prefix"),
    ("dashboard:database_create", [], {**DATABASE, "name": "other", "region": f"password={TOKEN}"}, "region"),
    ("dashboard:account_create", [], {"provider": "Upstash", "dashboard_url": f"https://ops:{TOKEN}@console.example"},
     "dashboard_url"),
    ("dashboard:phase_create", [], {"number": 9, "title": "Nine", "primary_page": PASTED_URL}, "primary_page"),
    ("dashboard:envvar_create", [], {"name": UPSTASH, "value_or_reference": ""}, "name"),
])
def test_it_refuses_a_secret_in_free_text_fields_that_had_no_scan(admin_client, lucia, caplog, url_name, args,
                                                                   data, field):
    # An admin: only an admin creates a database record.
    caplog.set_level(logging.DEBUG)
    secret = data[field]
    before = AuditEntry.objects.count()
    response = admin_client.post(reverse(url_name, args=args), data)
    body = _assert_refused_without_echo(response, secret, field, caplog)
    assert f'data-field="{field}"' in body and AuditEntry.objects.count() == before


def test_it_refuses_a_secret_in_a_namespace_purpose_and_fallback_note(operator_client, lucia, caplog):
    from continuity.models import Namespace

    caplog.set_level(logging.DEBUG)
    ns = Namespace.objects.get(database=lucia, name="session")
    data = {"name": ns.name, "prefix": ns.prefix, "purpose": f"auth {PASTED_URL}", "expected_type": ns.expected_type,
            "min_ttl_seconds": "", "max_ttl_seconds": ns.max_ttl_seconds, "ttl_required": "on",
            "max_payload_bytes": ns.max_payload_bytes, "fallback_note": f"Bearer {UPSTASH}",
            "violation_action": ns.violation_action}
    response = operator_client.post(reverse("continuity:namespace_edit", args=["lucia", ns.pk]), data)
    body = response.content.decode()
    assert response.status_code == 200 and body.count("looks like a secret") == 2
    assert TOKEN not in body and UPSTASH not in body and UPSTASH not in caplog.text
    ns.refresh_from_db()
    assert TOKEN not in ns.purpose and UPSTASH not in ns.fallback_note
    assert not AuditEntry.objects.filter(action="namespace.update").exists()


def test_it_refuses_a_secret_as_a_username(admin_client, django_user_model, caplog):
    caplog.set_level(logging.DEBUG)
    response = admin_client.post(reverse("dashboard:user_create"), {"username": UPSTASH, "role": "viewer"})
    body = response.content.decode()
    assert "looks like a secret" in body and UPSTASH not in body
    assert not django_user_model.objects.filter(username=UPSTASH).exists()


def test_the_audit_censors_userinfo_of_any_url_in_before_after_and_note(db):
    from django.db import transaction

    from dashboard import audit

    with transaction.atomic():
        entry = audit.record(action="test.censor", target_type="x", target_id="1",
                             before={"dashboard_url": f"https://ops:{TOKEN}@console.example/"},
                             after={"links": [f"see postgres://app:{TOKEN}@db:5432/x", f"https://{UPSTASH}@git.example/r"]},
                             note=f"webhook was http://hook:{TOKEN}@hooks.example/x", actor_label="t")
    entry.refresh_from_db()
    stored = str(entry.before) + str(entry.after) + entry.note
    assert TOKEN not in stored and UPSTASH not in stored
    assert entry.before["dashboard_url"] == f"https://ops:{audit.CENSORED}@console.example/"
    assert entry.after["links"] == [f"see postgres://app:{audit.CENSORED}@db:5432/x",
                                    f"https://{audit.CENSORED}@git.example/r"]
    assert entry.note == f"webhook was http://hook:{audit.CENSORED}@hooks.example/x"
    # A user without a password is kept: it is how a URL without its secret is recorded.
    assert audit.censor("rediss://default@eu1.upstash.io:6379") == "rediss://default@eu1.upstash.io:6379"


# --- M4: an op:// reference was skipped whole, so a token inside it went through -------------
GITHUB = "ghp_1234567890abcdefghijABCDEFGHIJ123456"


@pytest.mark.parametrize("secret,text", [
    (UPSTASH, f"op://{UPSTASH}"),
    (GITHUB, f"op://vault/{GITHUB}/field"),
    (UPSTASH, f"moved to op://Lucia/{UPSTASH}/credential last week"),
])
@pytest.mark.parametrize("field", ["notes", "if_down", "alerting_path"])
def test_it_refuses_a_secret_inside_an_op_reference_in_free_text(operator_client, lucia, caplog, field, secret, text):
    caplog.set_level(logging.DEBUG)
    response = operator_client.post(reverse("dashboard:database_edit", args=["lucia"]), {**DATABASE, field: text})
    _assert_refused_without_echo(response, secret, field, caplog)
    assert secret not in str(RedisDatabase.objects.filter(pk=lucia.pk).values().get())
    assert secret not in operator_client.get(reverse("dashboard:runbook_markdown")).content.decode()


def test_it_refuses_a_secret_inside_an_op_reference_in_a_secret_note(operator_client, lucia, caplog):
    from dashboard.models import Secret

    caplog.set_level(logging.DEBUG)
    data = {"name": "lucia-x", "title": "x", "rotation_interval_days": 90, "due_soon_days": 14,
            "notes": f"see op://vault/{GITHUB}/field"}
    response = operator_client.post(reverse("dashboard:secret_create"), data)
    _assert_refused_without_echo(response, GITHUB, "notes", caplog)
    assert not Secret.objects.filter(name="lucia-x").exists()


def test_it_keeps_a_legitimate_reference_in_free_text(operator_client, lucia):
    note = "Token at op://Lucia/Upstash REST token/credential, item op://Ops/6rkxpm4z2ihdwshx7ttwjm7mqe/password"
    response = operator_client.post(reverse("dashboard:database_edit", args=["lucia"]), {**DATABASE, "notes": note})
    assert response.status_code == 302
    lucia.refresh_from_db()
    assert lucia.notes == note
    assert "op://Lucia/Upstash REST token/credential" in operator_client.get(
        reverse("dashboard:runbook_markdown")).content.decode()
