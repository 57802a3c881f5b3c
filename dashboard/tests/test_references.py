import pytest
from django.core.exceptions import ValidationError

from dashboard.references import parse_reference


@pytest.mark.parametrize("raw,parts", [
    ("op://Lucia/Upstash Redis/credential", ("Lucia", "Upstash Redis", "", "credential", "")),
    ("op://Lucia Prod/Upstash Redis lucia/REST/token", ("Lucia Prod", "Upstash Redis lucia", "REST", "token", "")),
    ("op://dev/Stripe/publishable-key", ("dev", "Stripe", "", "publishable-key", "")),
    ("op://app-prod/db/one-time password?attribute=otp", ("app-prod", "db", "", "one-time password", "otp")),
    ("op://server/ssh/private key?ssh-format=openssh", ("server", "ssh", "", "private key", "")),
    ("op://v_1/it.em/sec/field?attribute=TYPE", ("v_1", "it.em", "sec", "field", "type")),
    ("  op://Lucia/Upstash/token  ", ("Lucia", "Upstash", "", "token", "")),
])
def test_it_accepts_and_parses_references(raw, parts):
    ref = parse_reference(raw)
    assert (ref.vault, ref.item, ref.section, ref.field, ref.attribute) == parts
    assert ref.raw == raw.strip()


@pytest.mark.parametrize("raw", [
    "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhm",  # a pasted token
    "rediss://default:s3cretPassw0rd@eu1-lucia.upstash.io:6379",
    "op://Ops/Upstash",  # too few parts
    "op://a/b/c/d/e",  # too many parts
    "op:///Upstash/token",  # empty vault
    "op://Ops/ Upstash/token",  # leading space
    "op://Ops/Upstash /token",  # trailing space
    "op://Ops/Up$tash/token",  # character outside the syntax
    "op://Ops/Upstash/token?attribute=password",  # unknown attribute
    "op://Ops/Upstash/token?foo=bar",
    "OP://Ops/Upstash/token",
    "",
])
def test_it_refuses_what_is_not_a_reference_without_echoing_it(raw):
    with pytest.raises(ValidationError) as caught:
        parse_reference(raw)
    message = " ".join(caught.value.messages)
    assert "op://vault/item/field" in message  # explains the expected shape
    if raw:
        assert raw not in message
        assert "Upstash" not in message and "Ops" not in message


@pytest.mark.parametrize("raw", [
    "op://Ops\n/Upstash/token",  # a newline ending a segment (`$` matched before it)
    "op://Ops/Upstash\n/token",
    "op://Ops/AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhm/token",  # a token as the item
    "op://Ops/Upstash/ghp_16C7e42F292c6912E7710c838347Ae178B4a",  # a GitHub token as the field
])
def test_it_refuses_a_newline_or_a_secret_inside_a_part_without_echo(raw):
    with pytest.raises(ValidationError) as caught:
        parse_reference(raw)
    message = " ".join(caught.value.messages)
    assert caught.value.code == "not_a_reference" and "op://vault/item/field" in message
    assert "AZJc" not in message and "ghp_" not in message and "Upstash" not in message


def test_it_accepts_a_1password_item_id_as_the_item():
    assert parse_reference("op://Ops/6rkxpm4z2ihdwshx7ttwjm7mqe/password").item == "6rkxpm4z2ihdwshx7ttwjm7mqe"
