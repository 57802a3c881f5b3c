"""Fixtures of the sources-of-truth tests: the local 1Password Connect and Upstash Developer
API servers (dashboard.devtools.sourceservers), configured through the environment as in
production, and the records they describe."""

from datetime import datetime, timedelta, timezone

import pytest

from dashboard.devtools.sourceservers import LocalConnect, LocalUpstash

SOURCE_VARIABLES = ("OP_CONNECT_HOST", "OP_CONNECT_TOKEN", "UPSTASH_EMAIL", "UPSTASH_API_KEY", "UPSTASH_API_URL")
CONNECT_TOKEN = "connect-token-for-tests"
UPSTASH_ACCOUNT = ("ops@example.test", "upstash-api-key-for-tests")
VAULT_ID = "lucia0test0vault0000000001"
OTHER_VAULT_ID = "other0test0vault0000000001"
ITEM_IDS = {"token": "resttoken00item00000000001", "url": "resturl000item00000000001x", "password": "redispw000item000000000001"}
UPSTASH_ID = "96ad0856-03b1-4ee7-9666-e81abd0349e1"
# The values stored in the fake items' fields and the fake database's credentials: they must
# never be requested, stored, logged or shown.
FIELD_VALUE = "field-value-that-must-never-be-read"
CREDENTIALS = {"password": "038a8e27c45e43068d5f186085399884",
               "rest_token": "AXW_ASQgOTZhZDA4NTYtMDNiMS00ZWU3LTk2NjYtZTgxYWJkMDM0OWUxMDM4YThlMjdjNDVlNDMwNjhkNWY=",
               "read_only_rest_token": "AnW_ASQgOTZhZDA4NTYtMDNiMS00ZWU3LTk2NjYtZTgxYWJkMDM0OWUx8sbmiEcMm9u7Ks5Qx-k="}
CHANGED = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def connect_item(item_id, title, version=3, changed=CHANGED, vault=VAULT_ID):
    """A FullItem as the Connect API spec 1.7.1 documents it (its fields carry values)."""
    return {"id": item_id, "title": title, "vault": {"id": vault}, "category": "API_CREDENTIAL", "version": version,
            "createdAt": "2025-01-02T03:04:05Z", "updatedAt": changed.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastEditedBy": "editor000000000000000000001"[:26], "tags": [], "favorite": False,
            "fields": [{"id": "credential", "type": "CONCEALED", "label": "credential", "value": FIELD_VALUE}],
            "files": [{"id": "file00000000000000000000001"[:26], "name": "notes.txt", "size": 10,
                       "content_path": f"v1/vaults/{vault}/items/{item_id}/files/x/content"}]}


def connect_vaults():
    return [{"id": VAULT_ID, "name": "Lucia", "items": [
        connect_item(ITEM_IDS["token"], "Upstash Redis lucia", version=7),
        connect_item(ITEM_IDS["url"], "Upstash REST URL lucia", version=1, changed=CHANGED - timedelta(days=60)),
        connect_item(ITEM_IDS["password"], "Redis password (lucia)", version=2),
    ]}, {"id": OTHER_VAULT_ID, "name": "Other", "items": []}]


def upstash_database(**changes):
    """A Get Database answer as the Developer API documents it (upstash/docs openapi.yml),
    credentials included: the server drops them only for `credentials=hide`."""
    database = {"database_id": UPSTASH_ID, "database_name": "lucia-prod", "database_type": "Pay as You Go",
                "region": "global", "primary_region": "eu-central-1", "read_regions": ["us-east-1"], "port": 6379,
                "creation_time": 1658909671, "state": "active", "endpoint": "eu2-sought-mollusk-30143.upstash.io",
                "tls": True, "eviction": False, "budget": 20, "type": "payg", "db_max_request_size": 10485760,
                "db_max_entry_size": 104857600, "db_max_clients": 10000, **CREDENTIALS}
    database.update(changes)
    return database


def upstash_stats(total=1_000_000, **changes):
    return {"total_monthly_requests": total, "total_monthly_read_requests": total - 1000,
            "total_monthly_write_requests": 1000, "daily_net_commands": 7, "total_monthly_billing": 2.0,
            "keyspace": [{"x": "2026-03-15 10:59:23.426 +0000 UTC", "y": 320}], "days": ["Sunday"], **changes}


@pytest.fixture
def no_sources(monkeypatch):
    for name in SOURCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)


@pytest.fixture
def connect(monkeypatch, no_sources):
    """A local Connect server with the vault "Lucia", configured as OP_CONNECT_HOST/TOKEN."""
    server = LocalConnect(CONNECT_TOKEN, connect_vaults())
    monkeypatch.setenv("OP_CONNECT_HOST", server.url)
    monkeypatch.setenv("OP_CONNECT_TOKEN", CONNECT_TOKEN)
    yield server
    server.close()


@pytest.fixture
def upstash_api(monkeypatch, no_sources):
    """A local Developer API with one database, configured as UPSTASH_EMAIL/API_KEY/API_URL."""
    server = LocalUpstash(*UPSTASH_ACCOUNT, {UPSTASH_ID: upstash_database()}, {UPSTASH_ID: upstash_stats()})
    monkeypatch.setenv("UPSTASH_EMAIL", UPSTASH_ACCOUNT[0])
    monkeypatch.setenv("UPSTASH_API_KEY", UPSTASH_ACCOUNT[1])
    monkeypatch.setenv("UPSTASH_API_URL", server.url)
    yield server
    server.close()


@pytest.fixture
def referenced(lucia):
    """The seeded secrets with references into the vault "Lucia": the token's item exists,
    the URL's too, the password's item was renamed."""
    from dashboard.models import Secret

    references = {"lucia-rest-token": "op://Lucia/Upstash Redis lucia/REST token",
                  "lucia-rest-url": "op://lucia/upstash rest url lucia/url",
                  "lucia-redis-password": "op://Lucia/Redis password lucia/password"}
    for name, reference in references.items():
        secret = Secret.objects.get(name=name)
        secret.set_reference(reference)
        secret.save()
    return {secret.name: secret for secret in Secret.objects.all()}


@pytest.fixture
def linked(lucia):
    """The `lucia` record linked to the Upstash database, its record agreeing with Upstash on
    everything but the region."""
    from dashboard.models import RedisDatabase, UpstashLink

    RedisDatabase.objects.filter(pk=lucia.pk).update(region="eu-west-1", read_regions=["us-east-1"])
    lucia.refresh_from_db()
    return UpstashLink.objects.create(database=lucia, upstash_id=UPSTASH_ID, tls=True, eviction=False, budget=20,
                                      max_request_size=10485760, max_entry_size=104857600)
