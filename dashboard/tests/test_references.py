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
