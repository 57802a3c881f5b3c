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


GITHUB_TOKEN = "ghp_1234567890abcdefghijABCDEFGHIJ123456"


# M4: an op:// reference was taken out of the text whole, so a token inside it was never scanned.
@pytest.mark.parametrize("text,kind", [
    (f"op://{UPSTASH_TOKEN}", "Upstash token"),
    (f"op://vault/{GITHUB_TOKEN}/field", "GitHub Token"),
    (f"see op://Ops/{UPSTASH_TOKEN}/token for the new one", "Upstash token"),
    (f"op://Ops/Upstash/{GITHUB_TOKEN}", "GitHub Token"),
    (f"op://Ops/Upstash/token?attribute={UPSTASH_TOKEN}", "Upstash token"),
    (f"OP://Ops/{UPSTASH_TOKEN}/token", "Upstash token"),
    (f"token: op://Lucia/{GITHUB_TOKEN}/credential", "GitHub Token"),
])
def test_it_scans_each_part_of_an_op_reference(text, kind):
    assert kind in find_secrets(text)


@pytest.mark.parametrize("text", [
    "op://Lucia/Upstash REST token/credential",
    "op://Lucia/Upstash/credential",
    "op://Ops/6rkxpm4z2ihdwshx7ttwjm7mqe/password",  # a 1Password item id
    "op://app-prod/db/one-time password?attribute=otp",
    "op://Lucia Prod/Upstash Redis lucia/REST/token",
    "password=op://Lucia/Redis/password",
])
def test_it_lets_legitimate_references_through(text):
    assert find_secrets(text) == []


# L8: shapes the scanner missed.
@pytest.mark.parametrize("text,kind", [
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "basic auth credentials"),
    ("curl -H 'Authorization: Basic b3BzOnM='", "basic auth credentials"),
    ("authorization=Basic abcd", "basic auth credentials"),
    ("header Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ== on every call", "basic auth credentials"),  # base64 of user:pass
    ("redis-cli -a s3cretpass", "redis-cli password"),
    ("redis-cli -h eu1-lucia.upstash.io -p 6379 --tls -a hunter ping", "redis-cli password"),
    ("redis-cli --user ops --pass correcthorse", "redis-cli password"),
    ("REDISCLI_AUTH=hunter redis-cli ping", "redis-cli password"),
    ("password=correct horse battery staple", "password assignment"),
    ("password=correcthorsebatterystaple", "password assignment"),
    ("password = hunter", "password assignment"),
    ("passwd='correct horse'", "password assignment"),
    ("https://hooks.example.test/x?password=letmein", "credential in a query string"),
    ("/login?user=ops&pass=hunter", "credential in a query string"),
    ("?token=abcdefgh", "credential in a query string"),
])
def test_it_finds_the_shapes_it_used_to_miss(text, kind):
    assert kind in find_secrets(text)


@pytest.mark.parametrize("text", [
    "password",
    "Reset the password after the incident; the new one is in 1Password.",
    "password=",
    "password: rotated",
    "set the password= field in the form",
    "password=$REDIS_PASSWORD",
    "password=<redacted>",
    "password={password}",
    "password=***",
    "password = None",
    "https://hooks.example.test/x?password=&user=ops",
    "Basic auth is off on the REST endpoint.",
    "Basic configuration steps are in the README.",
    "Authorization: Basic",
    "Authorization: Basic $CREDENTIALS",
    "redis-cli -a $REDIS_PASSWORD ping",
    'redis-cli -a "$REDISCLI_AUTH" ping',
    "redis-cli -a <password> ping",
    "redis-cli --askpass -h eu1-lucia.upstash.io ping",
    "redis-cli -h localhost -p 6379 INFO keyspace",
    "REDISCLI_AUTH=$(op read op://Lucia/Redis/password) redis-cli ping",
    "/keyspace/lucia/browse/?prefix=lucia:session:&type=hash",
])
def test_it_lets_the_boundary_rows_of_those_shapes_through(text):
    assert find_secrets(text) == []
