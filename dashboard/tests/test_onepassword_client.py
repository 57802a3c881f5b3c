"""The 1Password client (dashboard.sources.onepassword), driven through the official SDK
(onepasswordconnectsdk 2.1.1) against a local server that serves the Connect API as its spec
documents it: 1Password/connect docs/openapi/spec.yaml, version 1.7.1.

Endpoints used: GET /v1/vaults (Vault: id `^[\\da-z]{26}$`, name) and
GET /v1/vaults/{vaultUuid}/items with `filter=title eq "…"` (Item: id, title, vault.id,
version, updatedAt). Never GET /v1/vaults/{vaultUuid}/items/{itemUuid} (FullItem: fields with
their values) nor …/files. Errors: ErrorResponse {status, message}, 401 invalid token,
403 not in scope, 404 not found; 429 and timeouts from any HTTP server."""

import re
from datetime import datetime, timezone

import pytest

from dashboard.models import SecretCheck
from dashboard.references import parse_reference
from dashboard.sources import (BAD_TOKEN, FORBIDDEN, MALFORMED, RATE_LIMITED, SERVER_ERROR, TIMED_OUT,
                               UNREACHABLE, Unavailable)
from dashboard.sources.onepassword import Broken, Connect, Item
from dashboard.tests.conftest import CHANGED, CONNECT_TOKEN, FIELD_VALUE, ITEM_IDS, VAULT_ID, connect_item

DETAILS = re.compile(r"^/v1/vaults/[^/]+/items/[^/]+")  # an item's details, its fields or files


def _item(server, reference, **kwargs):
    session = Connect(server.url, CONNECT_TOKEN, **kwargs)
    try:
        return session.item(parse_reference(reference))
    finally:
        session.close()


def _no_detail_was_asked(server):
    assert server.requests, "the server saw no request"
    assert not [path for path in server.paths() if DETAILS.match(path)]


def test_it_finds_an_item_by_vault_name_and_title_with_list_calls_only(connect):
    found = _item(connect, "op://Lucia/Upstash Redis lucia/REST token")
    assert found == Item(version=7, changed_at=CHANGED)
    assert connect.paths() == ["/v1/vaults", f"/v1/vaults/{VAULT_ID}/items"]
    assert connect.requests[1]["query"] == {"filter": ['title eq "Upstash Redis lucia"']}
    assert all(entry["authorized"] and entry["user_agent"].startswith("python-httpx/") for entry in connect.requests)
    _no_detail_was_asked(connect)


def test_it_matches_names_regardless_of_case_as_1password_references_do(connect):
    assert _item(connect, "op://LUCIA/upstash redis LUCIA/REST token").version == 7


def test_it_finds_an_item_and_a_vault_named_by_id(connect):
    found = _item(connect, f"op://{VAULT_ID}/{ITEM_IDS['password']}/password")
    assert found.version == 2
    # The title filter found nothing for an id: the vault's items were listed, still no details.
    assert connect.paths()[-1] == f"/v1/vaults/{VAULT_ID}/items" and "query" in connect.requests[-1]
    _no_detail_was_asked(connect)


@pytest.mark.parametrize("reference,reason", [
    ("op://Lucia/Redis password lucia/password", SecretCheck.NO_ITEM),  # the item was renamed
    ("op://Archive/Upstash Redis lucia/REST token", SecretCheck.NO_VAULT),
])
def test_it_reports_a_broken_reference(connect, reference, reason):
    assert _item(connect, reference) == Broken(reason)
    _no_detail_was_asked(connect)


def test_it_refuses_to_guess_between_two_items_or_vaults_of_one_name(connect):
    connect.vaults[0]["items"].append(connect_item("twin00000000item0000000001", "upstash redis LUCIA"))
    assert _item(connect, "op://Lucia/Upstash Redis lucia/x") == Broken(SecretCheck.ITEMS)
    connect.vaults[1]["name"] = "lucia"
    assert _item(connect, "op://Lucia/Upstash Redis lucia/x") == Broken(SecretCheck.VAULTS)


def test_it_lists_the_vaults_once_per_session(connect):
    session = Connect(connect.url, CONNECT_TOKEN)
    for reference in ("op://Lucia/Upstash Redis lucia/a", "op://Lucia/Upstash REST URL lucia/b"):
        session.item(parse_reference(reference))
    session.close()
    assert connect.paths().count("/v1/vaults") == 1


@pytest.mark.parametrize("status,kind", [(401, BAD_TOKEN), (403, FORBIDDEN), (429, RATE_LIMITED),
                                         (500, SERVER_ERROR), (404, MALFORMED)])
def test_an_error_status_of_the_vault_list_is_a_failure_never_a_broken_reference(connect, status, kind):
    connect.fail_next("status", status, path="/v1/vaults")
    with pytest.raises(Unavailable) as failed:
        _item(connect, "op://Lucia/Upstash Redis lucia/x")
    assert failed.value.kind == kind


@pytest.mark.parametrize("status,kind", [(401, BAD_TOKEN), (403, FORBIDDEN), (429, RATE_LIMITED)])
def test_an_error_status_of_the_item_list_is_a_failure(connect, status, kind):
    connect.fail_next("status", status, path=f"/v1/vaults/{VAULT_ID}/items")
    with pytest.raises(Unavailable) as failed:
        _item(connect, "op://Lucia/Upstash Redis lucia/x")
    assert failed.value.kind == kind


def test_a_vault_gone_between_the_two_calls_is_a_broken_reference(connect):
    connect.fail_next("status", 404, path=f"/v1/vaults/{VAULT_ID}/items")
    assert _item(connect, "op://Lucia/Upstash Redis lucia/x") == Broken(SecretCheck.NO_VAULT)


def test_a_wrong_token_is_refused_by_the_server_and_named(connect):
    session = Connect(connect.url, "not-the-token")
    with pytest.raises(Unavailable) as failed:
        session.item(parse_reference("op://Lucia/Upstash Redis lucia/x"))
    session.close()
    assert failed.value.kind == BAD_TOKEN and connect.requests[0]["authorized"] is False


def test_a_slow_server_times_out(connect):
    connect.fail_next("delay", 1.5)
    with pytest.raises(Unavailable) as failed:
        _item(connect, "op://Lucia/Upstash Redis lucia/x", timeout=0.3)
    assert failed.value.kind == TIMED_OUT


def test_a_server_that_is_not_there_is_unreachable(connect):
    connect.close()
    with pytest.raises(Unavailable) as failed:
        _item(connect, "op://Lucia/Upstash Redis lucia/x", timeout=1)
    assert failed.value.kind == UNREACHABLE


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"vaults": []}', b"[1, 2]", b'"text"',
                                  b'[{"id": "short", "name": "Lucia"}]', b'[{"id": "lucia0test0vault0000000001", "name": 7}]'])
def test_a_malformed_vault_list_is_a_failure_never_an_empty_account(connect, body):
    connect.fail_next("body", body, path="/v1/vaults")
    with pytest.raises(Unavailable) as failed:
        _item(connect, "op://Lucia/Upstash Redis lucia/x")
    assert failed.value.kind == MALFORMED


@pytest.mark.parametrize("changes", [
    {"version": "seven"}, {"version": True}, {"version": -1}, {"version": 2**40}, {"updatedAt": "yesterday"},
    {"updatedAt": 1700000000}, {"updatedAt": "2026-03-10T12:00:00"},  # no offset: not RFC 3339
    {"updatedAt": None}, {"version": None},  # missing fields
])
def test_an_item_summary_with_unexpected_types_or_missing_fields_is_a_failure(connect, changes):
    item = connect.vaults[0]["items"][0]
    for key, value in changes.items():
        if value is None:
            item.pop(key)
        else:
            item[key] = value
    with pytest.raises(Unavailable) as failed:
        _item(connect, "op://Lucia/Upstash Redis lucia/x")
    assert failed.value.kind == MALFORMED


def test_a_long_title_with_html_is_matched_as_text_and_never_kept(connect):
    title = "<script>alert(1)</script> " + "x" * 5000
    connect.vaults[0]["items"].append(connect_item("longtitle0item000000000001", title, version=9))
    # A reference cannot hold "<" (dashboard.references): the item is found by its id.
    found = _item(connect, "op://Lucia/longtitle0item000000000001/x")
    assert found == Item(version=9, changed_at=CHANGED)
    assert not hasattr(found, "title")


def test_the_answer_carries_offsets_as_1password_writes_them(connect):
    connect.vaults[0]["items"][0]["updatedAt"] = "2026-03-10T14:00:00+02:00"
    assert _item(connect, "op://Lucia/Upstash Redis lucia/x").changed_at == datetime(2026, 3, 10, 12, tzinfo=timezone.utc)


def test_the_field_values_the_server_holds_are_never_requested(connect):
    for reference in ("op://Lucia/Upstash Redis lucia/a", f"op://Lucia/{ITEM_IDS['url']}/b", "op://Lucia/gone/c"):
        _item(connect, reference)
    _no_detail_was_asked(connect)
    # The server does serve them (so the assertion above can fail): an item's details carry the value.
    import requests

    answer = requests.get(f"{connect.url}/v1/vaults/{VAULT_ID}/items/{ITEM_IDS['token']}",
                          headers={"Authorization": f"Bearer {CONNECT_TOKEN}"}, timeout=5).json()
    assert answer["fields"][0]["value"] == FIELD_VALUE
