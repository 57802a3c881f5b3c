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
def test_it_refuses_a_secret_in_any_database_field_without_echo(operator_client, lucia, caplog, field, value):
    caplog.set_level(logging.DEBUG)
    secret = PASTED_URL if PASTED_URL in value else UPSTASH
    response = operator_client.post(reverse("dashboard:database_edit", args=["lucia"]), {**DATABASE, field: value})
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
