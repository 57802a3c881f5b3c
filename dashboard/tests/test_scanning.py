import pytest

from dashboard.scanning import find_secrets

UPSTASH_TOKEN = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"


@pytest.mark.parametrize("text,kind", [
    (f"token is {UPSTASH_TOKEN}", "Upstash token"),
    ("UPSTASH_REDIS_REST_TOKEN=hunter22", "Upstash token"),
    ("connect with rediss://default:Zx81kQpa9@eu1-lucia.upstash.io:6379", "URL with a password"),
    ("REDIS_URL=redis://:onlyapassword@localhost:6379/0", "URL with a password"),
    ("AKIAIOSFODNN7EXAMPLE", "AWS Access Key"),
    ("ghp_1234567890abcdefghijABCDEFGHIJ123456", "GitHub Token"),
    ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "JSON Web Token"),
    ("password = hunter2xyzzy", "credential assignment"),
    ("Authorization: Bearer AXbcASQgZmY5MzE0NzctZjFlZS00", "bearer token"),
    ("-----BEGIN RSA PRIVATE KEY-----", "Private Key"),
    ("old key d41d8cd98f00b204e9800998ecf8427e leaked", "Hex High Entropy String"),
])
def test_it_finds_pasted_secrets(text, kind):
    assert kind in find_secrets(text)


@pytest.mark.parametrize("text", [
    "Redis is the bridge, not the cathedral. It solves a real problem right now: shared short-lived continuity.",
    "Rotated after the incident; the new value is at op://Lucia Prod/Upstash Redis lucia/REST token?attribute=otp",
    "token: see op://Lucia/Upstash/token",
    "The Engine reads UPSTASH_REDIS_REST_TOKEN from the environment; rotate it every 90 days.",
    "Dashboard at https://console.upstash.com/redis/9f8e7d6c-1234-4abc-9def-0123456789ab?teamid=0",
    "rediss://default@eu1-sure-cat-12345.upstash.io:6379 (password in 1Password)",
    "password: $REDIS_PASSWORD",
    "Engine redeployed, /healthz green, PING from the worker returned PONG at 14:02.",
    "Distress streak restarts at stage 0; the durable record lives in Postgres.",
    "",
])
def test_it_lets_ordinary_notes_through(text):
    # The entropy thresholds (base64 4.5 on 20+ chars, hex 3.0 on 32+) were re-checked on these.
    assert find_secrets(text) == []
