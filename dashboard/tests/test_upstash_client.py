"""The Upstash Developer API client (dashboard.sources.upstash) against a local server that
serves the API as Upstash documents it: upstash/docs devops/developer-api/openapi.yml (OpenAPI
3.0.4, "Developer API - Upstash" 1.0.0) and its Get Database / Get Database Stats pages.

- GET /v2/redis/database/{id}: the `credentials` query parameter, "Set to 'hide' to remove
  credentials from the response" (password, rest_token, read_only_rest_token). Fields read:
  database_id, database_name, region ("global" for a global database), primary_region,
  read_regions, tls, eviction, budget, db_max_request_size, db_max_entry_size.
- GET /v2/redis/stats/{id}: total_monthly_requests ("total requests in current month").
- GET /v2/redis/databases lists every database with its credentials and has no such
  parameter: the client never calls it.
HTTP basic auth (email, API key); 401, 403, 404, 429, timeouts and malformed JSON tested."""

import pytest

from dashboard.sources import (BAD_TOKEN, FORBIDDEN, MALFORMED, RATE_LIMITED, TIMED_OUT, UNREACHABLE, NotFound,
                               Unavailable)
from dashboard.sources.upstash import Database, DeveloperApi, Stats, parse_database
from dashboard.tests.conftest import CREDENTIALS, UPSTASH_ACCOUNT, UPSTASH_ID, upstash_database

EXPECTED = {"region": "eu-central-1", "read_regions": ["us-east-1"], "tls": True, "eviction": False, "budget": 20,
            "max_request_size": 10485760, "max_entry_size": 104857600}


def _api(server, **kwargs):
    return DeveloperApi(server.url, *UPSTASH_ACCOUNT, **kwargs)


def test_it_reads_the_settings_with_credentials_hidden(upstash_api):
    database = _api(upstash_api).database(UPSTASH_ID)
    assert database == Database(name="lucia-prod", values=EXPECTED, anomalies=[])
    (request,) = upstash_api.requests
    assert request["path"] == f"/v2/redis/database/{UPSTASH_ID}" and request["query"] == {"credentials": ["hide"]}
    assert request["authorized"]


def test_it_reads_this_months_commands(upstash_api):
    assert _api(upstash_api).stats(UPSTASH_ID) == Stats(monthly_commands=1_000_000, anomalies=[])
    assert upstash_api.paths() == [f"/v2/redis/stats/{UPSTASH_ID}"]


def test_it_never_lists_the_databases_and_never_asks_for_credentials(upstash_api):
    api = _api(upstash_api)
    api.database(UPSTASH_ID)
    api.stats(UPSTASH_ID)
    assert "/v2/redis/databases" not in upstash_api.paths()
    details = [r for r in upstash_api.requests if r["path"].startswith("/v2/redis/database/")]
    assert details and all(r["query"].get("credentials") == ["hide"] for r in details)


def test_credentials_sent_anyway_are_dropped_unread(upstash_api):
    """A server that ignored `credentials=hide` still gives the dashboard no credential."""
    answer = upstash_database()
    assert set(CREDENTIALS) <= set(answer)
    parsed = parse_database(answer, UPSTASH_ID)
    assert not set(CREDENTIALS) & set(parsed.values)
    assert not any(value in repr(parsed) for value in CREDENTIALS.values())


def test_a_regional_database_has_its_region_and_no_read_regions(upstash_api):
    answer = upstash_database(region="us-east-1")
    answer.pop("primary_region"), answer.pop("read_regions")
    parsed = parse_database(answer, UPSTASH_ID)
    assert parsed.values["region"] == "us-east-1" and parsed.values["read_regions"] == []


def test_an_unknown_id_is_not_found(upstash_api):
    with pytest.raises(NotFound):
        _api(upstash_api).database("0000-unknown")


@pytest.mark.parametrize("status,kind", [(401, BAD_TOKEN), (403, FORBIDDEN), (429, RATE_LIMITED)])
def test_an_error_status_is_a_failure(upstash_api, status, kind):
    upstash_api.fail_next("status", status)
    with pytest.raises(Unavailable) as failed:
        _api(upstash_api).database(UPSTASH_ID)
    assert failed.value.kind == kind


def test_wrong_credentials_are_refused_by_the_server(upstash_api):
    with pytest.raises(Unavailable) as failed:
        DeveloperApi(upstash_api.url, UPSTASH_ACCOUNT[0], "wrong-key").database(UPSTASH_ID)
    assert failed.value.kind == BAD_TOKEN and upstash_api.requests[0]["authorized"] is False


def test_a_slow_server_times_out(upstash_api):
    upstash_api.fail_next("delay", 1.5)
    with pytest.raises(Unavailable) as failed:
        _api(upstash_api, timeout=0.3).database(UPSTASH_ID)
    assert failed.value.kind == TIMED_OUT


def test_a_server_that_is_not_there_is_unreachable(upstash_api):
    upstash_api.close()
    with pytest.raises(Unavailable) as failed:
        _api(upstash_api, timeout=1).stats(UPSTASH_ID)
    assert failed.value.kind == UNREACHABLE


@pytest.mark.parametrize("body", [b"{not json", b"", b"[]", b'"text"', b"null", b"x" * (1024 * 1024 + 10)])
def test_a_malformed_answer_is_a_failure(upstash_api, body):
    upstash_api.fail_next("body", body, times=2)
    for call in ("database", "stats"):
        with pytest.raises(Unavailable) as failed:
            getattr(_api(upstash_api), call)(UPSTASH_ID)
        assert failed.value.kind == MALFORMED


def test_an_answer_about_another_database_is_a_failure(upstash_api):
    with pytest.raises(Unavailable):
        parse_database(upstash_database(database_id="someone-else"), UPSTASH_ID)


@pytest.mark.parametrize("changes,anomaly", [
    ({"tls": "true"}, "tls"), ({"eviction": 1}, "eviction"), ({"budget": "20"}, "budget"), ({"budget": True}, "budget"),
    ({"budget": -5}, "budget"), ({"db_max_request_size": 1.5}, "max_request_size"),
    ({"db_max_entry_size": None}, "max_entry_size"), ({"read_regions": "us-east-1"}, "read_regions"),
    ({"read_regions": ["us-east-1", "<b>x</b>"]}, "read_regions"),
    ({"primary_region": "EU CENTRAL", "region": "global"}, "region"), ({"region": 3, "primary_region": None}, "region"),
    ({"database_name": ["lucia"]}, "database_name"), ({"database_name": "lucia\x00prod"}, "database_name"),
    ({"database_name": CREDENTIALS["rest_token"]}, "database_name"),  # looks like a secret: never kept
])
def test_a_setting_of_an_unexpected_type_is_left_out_and_named(changes, anomaly):
    parsed = parse_database(upstash_database(**changes), UPSTASH_ID)
    assert anomaly in parsed.anomalies
    assert (anomaly not in parsed.values) and (anomaly != "database_name" or parsed.name == "")
    assert {k: v for k, v in EXPECTED.items() if k != anomaly} == {k: v for k, v in parsed.values.items()}


def test_missing_fields_are_named_not_guessed():
    answer = {"database_id": UPSTASH_ID}
    parsed = parse_database(answer, UPSTASH_ID)
    assert parsed.values == {"read_regions": []}
    assert set(parsed.anomalies) == {"region", "tls", "eviction", "budget", "max_request_size", "max_entry_size",
                                     "database_name"}


def test_a_long_name_with_html_is_kept_as_text_and_cut(upstash_api):
    name = "<script>alert(1)</script>" + "n" * 500
    assert parse_database(upstash_database(database_name=name), UPSTASH_ID).name == name[:200]


@pytest.mark.parametrize("value,commands", [(1_283_856_937, 1_283_856_937), (12.0, 12), (12.5, None), ("12", None),
                                            (None, None), (-1, None), (True, None)])
def test_the_monthly_count_must_be_a_count(upstash_api, value, commands):
    upstash_api.stats[UPSTASH_ID]["total_monthly_requests"] = value
    stats = _api(upstash_api).stats(UPSTASH_ID)
    assert stats.monthly_commands == commands
    assert stats.anomalies == ([] if commands is not None else ["total_monthly_requests"])
