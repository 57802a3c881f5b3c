"""The sources of truth on the pages, in the command and in the beat schedules, against the
local Connect (spec 1.7.1) and Developer API (openapi.yml 1.0.0) servers: each state on the
secret's page, drift badges and adopting on the database's page, Upstash's count on the jobs
page, escaping of whatever a source answers, and nothing at all while neither is configured."""

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from continuity.models import ReviewRun
from dashboard.models import AuditEntry, RedisDatabase, Rotation, Secret, SecretCheck, UpstashLink
from dashboard.sources import databases as upstash_checks
from dashboard.sources import secrets as onepassword_checks
from dashboard.tests.conftest import CHANGED, CONNECT_TOKEN, CREDENTIALS, FIELD_VALUE, UPSTASH_ACCOUNT, UPSTASH_ID

PANELS = ('data-testid="onepassword-panel"', 'data-testid="upstash-panel"', 'data-testid="upstash-month"',
          "onepassword-check-now", "upstash-check-now")


def _page(client, url, **headers):
    response = client.get(url, **headers)
    assert response.status_code == 200, (url, response.status_code)
    return " ".join(response.content.decode().split())  # the text as read, not as wrapped in the template


def _state(body):
    return body.split('data-testid="onepassword-state" data-state="')[1].split('"')[0]


# --- neither configured: nothing changes --------------------------------------------------
def test_with_neither_source_configured_no_page_shows_them(operator_client, referenced, no_sources):
    from continuity.seed import seed_all

    UpstashLink.objects.create(database=RedisDatabase.objects.get(), upstash_id=UPSTASH_ID, monthly_commands=5,
                               found=True, stats_at=CHANGED)
    for url in ("/", referenced["lucia-rest-token"].get_absolute_url(), "/databases/lucia/", "/keyspace/jobs/",
                "/secrets/", "/databases/"):
        body = _page(operator_client, url)
        assert not [marker for marker in PANELS if marker in body], url
    for name in ("secret_source", "secret_source_check", "secret_source_record"):
        url = reverse(f"dashboard:{name}", args=["lucia-rest-token"])
        assert operator_client.post(url, HTTP_HX_REQUEST="true").status_code == 404
    for name in ("database_source", "database_source_check", "database_source_adopt", "database_source_link"):
        assert operator_client.post(reverse(f"dashboard:{name}", args=["lucia"])).status_code == 404
    seed_all()
    from django_celery_beat.models import PeriodicTask

    assert not PeriodicTask.objects.filter(task__in=["dashboard.check_onepassword", "dashboard.check_upstash"]).exists()


def test_the_beat_jobs_are_seeded_once_a_source_is_configured(connect, upstash_api, lucia):
    from django_celery_beat.models import PeriodicTask

    from continuity.seed import seed_all

    seed_all()
    seeded = {task.name: task for task in PeriodicTask.objects.filter(task__startswith="dashboard.check_")}
    assert seeded["1password check"].task == "dashboard.check_onepassword" and seeded["1password check"].crontab.hour == "6"
    assert seeded["upstash check"].interval.every == 1 and seeded["upstash check"].interval.period == "hours"
    assert seed_all()["schedules"] == 0  # idempotent


# --- the secret's page ----------------------------------------------------------------------
def test_the_secret_page_explains_each_state(viewer_client, connect, referenced):
    _ = referenced
    Secret.objects.filter(name="lucia-rest-url").update(last_rotated=CHANGED - timedelta(days=30))
    body = _page(viewer_client, "/secrets/lucia-rest-token/")
    assert _state(body) == "" and "Not checked against 1Password yet" in body
    onepassword_checks.check_secrets()
    broken = _page(viewer_client, "/secrets/lucia-redis-password/")
    assert _state(broken) == "broken" and "renamed or deleted" in broken and "reference broken" in broken
    changed = _page(viewer_client, "/secrets/lucia-rest-token/")
    assert _state(changed) == "changed" and "2026-03-10 12:00" in changed and "(version 7)" in changed
    assert "grace period of 24 hours" in changed and 'data-testid="onepassword-record"' not in changed  # viewer
    checked = _page(viewer_client, "/secrets/lucia-rest-url/")
    assert _state(checked) == "checked" and "is covered by the last" in checked
    assert "onepassword-check-now" not in checked and FIELD_VALUE not in changed + broken + checked


def test_an_operator_records_the_change_in_one_click(operator_client, connect, referenced):
    onepassword_checks.check_secrets()
    page = _page(operator_client, "/secrets/lucia-rest-token/")
    assert 'data-testid="onepassword-record"' in page and 'name="version" value="7"' in page
    url = reverse("dashboard:secret_source_record", args=["lucia-rest-token"])
    response = operator_client.post(url, {"version": "7"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Refresh"] == "true"
    rotation = Rotation.objects.get()
    assert rotation.rotated_at == CHANGED and rotation.recorded_by.username == "otto"
    entry = AuditEntry.objects.get(action="secret.rotate")
    assert entry.actor_label == "otto" and entry.note == "1Password item version 7" and entry.request_id
    after = _page(operator_client, "/secrets/lucia-rest-token/")
    assert _state(after) == "checked" and 'data-testid="rotation-row"' in after


def test_a_stale_click_is_refused_in_the_panel(operator_client, connect, referenced):
    onepassword_checks.check_secrets()
    url = reverse("dashboard:secret_source_record", args=["lucia-rest-token"])
    response = operator_client.post(url, {"version": "6"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 409 and "changed again" in response.content.decode()
    assert "<html" not in response.content.decode() and not Rotation.objects.exists()
    plain = operator_client.post(url, {"version": "<b>6</b>"})
    assert plain.status_code == 302 and not Rotation.objects.exists()


def test_viewers_may_not_check_or_record(viewer_client, connect, referenced):
    onepassword_checks.check_secrets()
    for name in ("secret_source_check", "secret_source_record"):
        assert viewer_client.post(reverse(f"dashboard:{name}", args=["lucia-rest-token"]), {"version": "7"}).status_code == 403
    assert not Rotation.objects.exists() and SecretCheck.objects.get(secret__name="lucia-rest-token").requested_at is None


def test_check_now_runs_on_the_worker_and_the_panel_polls_until_then(operator_client, connect, referenced):
    url = reverse("dashboard:secret_source_check", args=["lucia-rest-token"])
    pending = operator_client.post(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="onepassword-pending"' in pending and 'hx-trigger="every 2s"' in pending
    assert "<html" not in pending and connect.requests == []  # not asked in the web request


def test_check_now_with_a_worker_shows_the_answer(operator_client, connect, referenced, eager,
                                                  django_capture_on_commit_callbacks):
    url = reverse("dashboard:secret_source_check", args=["lucia-redis-password"])
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(url, HTTP_HX_REQUEST="true")
    panel = _page(operator_client, reverse("dashboard:secret_source", args=["lucia-redis-password"]), HTTP_HX_REQUEST="true")
    assert _state(panel) == "broken" and "every 2s" not in panel
    assert [p for p in connect.paths()] == ["/v1/vaults", "/v1/vaults/lucia0test0vault0000000001/items",
                                            "/v1/vaults/lucia0test0vault0000000001/items"]  # this secret only


@pytest.mark.parametrize("fault", [("status", 401), ("status", 429), ("status", 403), ("body", b"<html>oops")])
def test_a_failing_connect_server_never_breaks_the_page(operator_client, connect, referenced, eager,
                                                        django_capture_on_commit_callbacks, fault):
    onepassword_checks.check_secrets()
    connect.fail_next(*fault, times=5)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("dashboard:secret_source_check", args=["lucia-rest-token"]),
                                        HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = _page(operator_client, "/secrets/lucia-rest-token/")
    assert _state(page) == "changed" and 'data-testid="onepassword-unverified"' in page and "Unverified since" in page


def test_an_unreachable_connect_server_never_breaks_the_page(operator_client, connect, referenced):
    connect.close()
    onepassword_checks.check_secrets(timeout=1)
    page = _page(operator_client, "/secrets/lucia-rest-token/")
    assert "Unverified since" in page and "could not be reached" in page


# --- the database's page --------------------------------------------------------------------
def test_the_database_page_shows_a_region_drift_badge_and_adopts_in_one_click(operator_client, upstash_api, linked):
    upstash_checks.check_databases()
    page = _page(operator_client, "/databases/lucia/")
    assert page.count('data-testid="drift-row"') == 1 and 'data-field="region"' in page
    assert 'data-testid="drift-badge" data-kind="differs"' in page and "eu-central-1" in page
    assert "1,000,000" in page and 'data-testid="adopt"' in page
    response = operator_client.post(reverse("dashboard:database_source_adopt", args=["lucia"]), {"field": "region"},
                                    HTTP_HX_REQUEST="true")
    assert response["HX-Refresh"] == "true" and RedisDatabase.objects.get().region == "eu-central-1"
    assert AuditEntry.objects.get(action="database.adopt_upstash").actor_label == "otto"
    after = _page(operator_client, "/databases/lucia/")
    assert 'data-testid="drift-row"' not in after and "The record agrees with Upstash" in after


def test_check_now_on_the_database_page_runs_the_upstash_task(operator_client, upstash_api, linked, eager,
                                                                django_capture_on_commit_callbacks):
    url = reverse("dashboard:database_source_check", args=["lucia"])
    with django_capture_on_commit_callbacks(execute=True):
        pending = operator_client.post(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="upstash-pending"' in pending  # rendered before the task ran, on commit
    panel = _page(operator_client, reverse("dashboard:database_source", args=["lucia"]))
    assert 'data-state="found"' in panel and 'data-field="region"' in panel and "every 2s" not in panel
    assert upstash_api.paths() == [f"/v2/redis/database/{UPSTASH_ID}", f"/v2/redis/stats/{UPSTASH_ID}"]


def test_adopting_a_guarded_or_unknown_field_is_refused(operator_client, admin_client, upstash_api, linked):
    upstash_checks.check_databases()
    url = reverse("dashboard:database_source_adopt", args=["lucia"])
    for client in (operator_client, admin_client):
        response = client.post(url, {"field": "key_prefix"}, HTTP_HX_REQUEST="true")
        assert response.status_code == 409 and "compared setting" in response.content.decode()
    assert RedisDatabase.objects.get().key_prefix == "lucia:"


def test_viewers_see_the_drift_but_may_not_adopt_link_or_check(viewer_client, upstash_api, linked):
    upstash_checks.check_databases()
    page = _page(viewer_client, "/databases/lucia/")
    assert 'data-testid="drift-badge"' in page and 'data-testid="adopt"' not in page and "upstash-check-now" not in page
    for name, data in (("database_source_adopt", {"field": "region"}), ("database_source_check", {}),
                       ("database_source_link", {"upstash_id": "x"})):
        assert viewer_client.post(reverse(f"dashboard:{name}", args=["lucia"]), data).status_code == 403
    assert RedisDatabase.objects.get().region == "eu-west-1"


def test_html_and_long_names_from_upstash_are_escaped_and_cut(viewer_client, upstash_api, linked):
    upstash_api.databases[UPSTASH_ID]["database_name"] = "<script>alert('x')</script>" + "y" * 300
    upstash_checks.check_databases()
    page = _page(viewer_client, "/databases/lucia/")
    name = page.split('data-testid="upstash-name">')[1].split("</strong>")[0]
    assert name.startswith("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") and name.endswith("…")
    assert len(name.replace("&lt;", "<").replace("&gt;", ">").replace("&#x27;", "'")) == 64
    assert "<script>alert" not in page


def test_unexpected_values_are_named_and_nothing_secret_is_shown(viewer_client, upstash_api, linked):
    upstash_api.databases[UPSTASH_ID].update(tls="yes", database_name=CREDENTIALS["rest_token"])
    upstash_checks.check_databases(now=datetime(2026, 3, 15, tzinfo=timezone.utc))
    page = _page(viewer_client, "/databases/lucia/")
    assert "unexpected one, for: tls, database_name" in page and "(no name given)" in page
    assert not any(value in page for value in CREDENTIALS.values())


def test_an_unknown_id_and_a_failing_api_are_shown_without_a_500(viewer_client, upstash_api, linked):
    UpstashLink.objects.filter(pk=linked.pk).update(upstash_id="0000-gone")
    upstash_checks.check_databases()
    assert 'data-state="not_found"' in _page(viewer_client, "/databases/lucia/")
    upstash_api.fail_next("status", 403)
    upstash_checks.check_databases()
    page = _page(viewer_client, "/databases/lucia/")
    assert "Unverified since" in page and "refused access (403)" in page


def test_an_operator_links_a_record_to_its_upstash_database(operator_client, upstash_api, lucia):
    url = reverse("dashboard:database_source_link", args=["lucia"])
    assert 'name="upstash_id"' in _page(operator_client, url)
    assert 'data-state="unlinked"' in _page(operator_client, "/databases/lucia/")
    response = operator_client.post(url, {"upstash_id": UPSTASH_ID, "tls": "true", "eviction": "unknown", "budget": "20",
                                          "max_request_size": "", "max_entry_size": ""})
    assert response.status_code == 302
    link = UpstashLink.objects.get()
    assert (link.upstash_id, link.tls, link.eviction, link.budget) == (UPSTASH_ID, True, None, 20)
    assert AuditEntry.objects.get(action="upstash_link.edit").actor_label == "otto"
    refused = operator_client.post(url, {"upstash_id": "<b>bad id</b>"})
    assert refused.status_code == 200 and UpstashLink.objects.get().upstash_id == UPSTASH_ID


# --- the jobs page ----------------------------------------------------------------------------
def test_the_jobs_page_sets_upstashs_count_beside_the_dashboards_own(viewer_client, upstash_api, linked):
    counted = datetime(2026, 3, 15, 12, tzinfo=timezone.utc)
    upstash_checks.check_databases(now=counted)
    for created, billed in ((datetime(2026, 3, 1, tzinfo=timezone.utc), 30_000),  # the month's first moment: in
                            (counted - timedelta(seconds=1), 1_000),  # in
                            (datetime(2026, 2, 28, 23, 59, tzinfo=timezone.utc), 500_000),  # last month: out
                            (counted, 700_000)):  # after Upstash counted: out
        run = ReviewRun.objects.create(database=linked.database, status=ReviewRun.SUCCEEDED, billed_commands=billed)
        ReviewRun.objects.filter(pk=run.pk).update(created_at=created)
    page = _page(viewer_client, "/keyspace/jobs/")
    row = page.split('data-testid="upstash-month-row"')[1].split("</tr>")[0]
    assert "1,000,000" in row and "31,000" in row
    assert "dashboard jobs: 3.1 % of this month's commands" in row


# --- the command ------------------------------------------------------------------------------
def test_check_sources_reports_both_sources_as_json(connect, upstash_api, referenced, linked):
    out = io.StringIO()
    call_command("check_sources", "--json", stdout=out)
    report = json.loads(out.getvalue())
    states = {row["name"]: row["state"] for row in report["1password"]["secrets"]}
    assert states == {"lucia-redis-password": "reference broken", "lucia-rest-token": "changed, not recorded",
                      "lucia-rest-url": "changed, not recorded"}
    (database,) = report["upstash"]["databases"]
    assert database["found"] is True and database["monthly_commands"] == 1_000_000
    assert database["drift"] == [{"setting": "region", "record": "eu-west-1", "upstash": "eu-central-1"}]
    assert CONNECT_TOKEN not in out.getvalue() and UPSTASH_ACCOUNT[1] not in out.getvalue()


def test_check_sources_fails_when_a_source_cannot_be_asked(connect, upstash_api, referenced, linked):
    connect.fail_next("status", 401)
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"Not verified: 1password could not be asked \(refused the credentials"):
        call_command("check_sources", "--only", "1password", stdout=out)
    assert "1password: 3 checked; could not be asked" in out.getvalue()


def test_check_sources_without_configuration_says_so(no_sources, lucia):
    out = io.StringIO()
    call_command("check_sources", stdout=out)
    assert out.getvalue().splitlines() == ["1password: not configured (see README, 'Sources of truth').",
                                           "upstash: not configured (see README, 'Sources of truth')."]


def test_check_sources_checks_one_record(connect, upstash_api, referenced, linked):
    out = io.StringIO()
    call_command("check_sources", "--secret", "lucia-rest-token", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert list(report) == ["1password"] and [r["name"] for r in report["1password"]["secrets"]] == ["lucia-rest-token"]
    with pytest.raises(CommandError, match="No database record"):
        call_command("check_sources", "--database", "nope", stdout=io.StringIO())
