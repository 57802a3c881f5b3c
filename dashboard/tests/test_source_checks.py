"""The checks against the sources of truth (dashboard.sources.secrets and .databases) against
the local Connect (spec 1.7.1) and Developer API (openapi.yml 1.0.0) servers: states and their
boundaries, "unverified since", alerts once per transition, the one-click rotation and adopting
Upstash's value, each audited."""

from datetime import datetime, timedelta, timezone

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from dashboard.models import AlertChannel, AlertDelivery, AuditEntry, RedisDatabase, Rotation, Secret, SecretCheck, UpstashLink
from dashboard.sources import BAD_TOKEN, RATE_LIMITED, TIMED_OUT
from dashboard.sources import databases as upstash_checks
from dashboard.sources import secrets as onepassword_checks
from dashboard.tests.conftest import CHANGED, FIELD_VALUE, UPSTASH_ID

GRACE = timedelta(hours=24)


@pytest.fixture
def channel(db):
    return AlertChannel.objects.create(name="ops", url="https://hooks.example.test/x")


def _rotated(secret, at):
    Secret.objects.filter(pk=secret.pk).update(last_rotated=at)


def _state(name):
    check = SecretCheck.objects.select_related("secret").get(secret__name=name)
    return check.state(GRACE)


def test_with_1password_not_configured_nothing_is_asked_or_written(referenced, no_sources):
    result = onepassword_checks.check_secrets()
    assert result.configured is False and not SecretCheck.objects.exists()


def test_it_gives_each_referenced_secret_its_state(connect, referenced):
    _rotated(referenced["lucia-rest-url"], CHANGED - timedelta(days=30))
    result = onepassword_checks.check_secrets()
    assert result.states == {"lucia-redis-password": "broken", "lucia-rest-token": "changed",
                             "lucia-rest-url": "checked"}
    broken = SecretCheck.objects.get(secret__name="lucia-redis-password")
    assert broken.broken == SecretCheck.NO_ITEM and broken.item_version is None
    token = SecretCheck.objects.get(secret__name="lucia-rest-token")
    assert (token.item_version, token.item_changed_at) == (7, CHANGED) and token.checked_at is not None


def test_a_secret_without_a_reference_is_not_asked_about(connect, lucia):
    assert onepassword_checks.check_secrets().states == {}
    assert connect.requests == [] and not SecretCheck.objects.exists()


@pytest.mark.parametrize("rotated,state", [
    (None, "changed"),  # never rotated: 1Password's change was never recorded
    (CHANGED - GRACE - timedelta(seconds=1), "changed"),
    (CHANGED - GRACE, "checked"),  # exactly the grace period: still covered
    (CHANGED - timedelta(hours=1), "checked"),
    (CHANGED + timedelta(days=1), "checked"),
])
def test_changed_means_later_than_the_last_rotation_plus_the_grace_period(connect, referenced, rotated, state):
    _rotated(referenced["lucia-rest-token"], rotated)
    onepassword_checks.check_secrets(secrets=Secret.objects.filter(name="lucia-rest-token"))
    assert _state("lucia-rest-token") == state


def test_the_grace_period_is_a_setting(connect, referenced, settings):
    _rotated(referenced["lucia-rest-token"], CHANGED - timedelta(hours=30))
    settings.ONEPASSWORD_CHANGE_GRACE_HOURS = 24
    assert onepassword_checks.check_secrets().states["lucia-rest-token"] == "changed"
    settings.ONEPASSWORD_CHANGE_GRACE_HOURS = 36
    assert onepassword_checks.check_secrets().states["lucia-rest-token"] == "checked"


@pytest.mark.parametrize("status,kind", [(401, BAD_TOKEN), (429, RATE_LIMITED)])
def test_a_failed_ask_keeps_the_last_state_unverified_since_the_first_failure(connect, referenced, status, kind):
    first = datetime(2026, 3, 15, 8, tzinfo=timezone.utc)
    onepassword_checks.check_secrets(now=first)
    connect.fail_next("status", status, times=2)
    onepassword_checks.check_secrets(now=first + timedelta(hours=1))
    result = onepassword_checks.check_secrets(now=first + timedelta(hours=2))
    assert result.failure == kind and set(result.states.values()) == {"unverified"}
    token = SecretCheck.objects.get(secret__name="lucia-rest-token")
    assert token.unverified_since == first + timedelta(hours=1) and token.failed_at == first + timedelta(hours=2)
    assert token.failure == kind and token.checked_at == first and _state("lucia-rest-token") == "changed"
    # The next good answer clears the mark.
    onepassword_checks.check_secrets(now=first + timedelta(hours=3))
    token.refresh_from_db()
    assert token.unverified_since is None and token.failure == "" and token.checked_at == first + timedelta(hours=3)


def test_a_rate_limit_stops_the_run_instead_of_asking_again(connect, referenced):
    connect.fail_next("status", 429, path="/v1/vaults/")
    onepassword_checks.check_secrets()
    assert connect.paths().count("/v1/vaults") == 1 and len(connect.requests) == 2


def test_a_timeout_marks_every_secret_unverified(connect, referenced):
    connect.fail_next("delay", 1.5)
    result = onepassword_checks.check_secrets(timeout=0.3)
    assert result.failure == TIMED_OUT and len(result.states) == 3
    assert SecretCheck.objects.filter(unverified_since__isnull=False).count() == 3


def test_it_alerts_once_per_transition_into_broken_or_changed(connect, referenced, channel):
    _rotated(referenced["lucia-rest-url"], CHANGED - timedelta(days=30))
    first = onepassword_checks.check_secrets()
    assert sorted(first.transitions) == [("lucia-redis-password", "", "broken"), ("lucia-rest-token", "", "changed"),
                                         ("lucia-rest-url", "", "checked")]
    assert first.queued == 2 and onepassword_checks.check_secrets().queued == 0  # no change, no alert
    titles = sorted(AlertDelivery.objects.values_list("title", flat=True))
    assert titles == ["1Password: changed, not recorded: lucia-rest-token", "1Password: reference broken: lucia-redis-password"]
    texts = " ".join(AlertDelivery.objects.values_list("text", flat=True))
    assert "op://" not in texts and "Upstash Redis lucia" not in texts  # names and states only
    connect.vaults[0]["items"][2]["title"] = "Redis password lucia"  # renamed back: fixed
    _rotated(referenced["lucia-redis-password"], CHANGED)
    assert onepassword_checks.check_secrets().transitions == [("lucia-redis-password", "broken", "checked")]
    assert AlertDelivery.objects.count() == 2


def test_one_click_records_the_rotation_at_1passwords_change_time(connect, referenced, operator):
    onepassword_checks.check_secrets()
    result = onepassword_checks.record_changed_rotation(secret=referenced["lucia-rest-token"], version="7", actor=operator)
    rotation = Rotation.objects.get()
    assert rotation.rotated_at == CHANGED and rotation.recorded_by == operator
    assert rotation.note == "1Password item version 7"
    assert result.secret.last_rotated == CHANGED and _state("lucia-rest-token") == "checked"
    entry = AuditEntry.objects.get(action="secret.rotate")
    assert entry.actor == operator and entry.note == "1Password item version 7"
    assert entry.after["last_rotated"] == "2026-03-10 12:00:00+00:00"


def test_the_one_click_is_refused_for_a_stale_version_or_nothing_to_record(connect, referenced, operator):
    onepassword_checks.check_secrets()
    with pytest.raises(ValidationError, match="changed again"):
        onepassword_checks.record_changed_rotation(secret=referenced["lucia-rest-token"], version="6", actor=operator)
    with pytest.raises(ValidationError, match="Nothing to record"):
        onepassword_checks.record_changed_rotation(secret=referenced["lucia-redis-password"], version="", actor=operator)
    onepassword_checks.record_changed_rotation(secret=referenced["lucia-rest-token"], version="7", actor=operator)
    with pytest.raises(ValidationError, match="Nothing to record"):  # a second click records nothing more
        onepassword_checks.record_changed_rotation(secret=referenced["lucia-rest-token"], version="7", actor=operator)
    assert Rotation.objects.count() == 1


def test_a_viewer_cannot_record_the_rotation(connect, referenced, viewer):
    onepassword_checks.check_secrets()
    with pytest.raises(PermissionDenied):
        onepassword_checks.record_changed_rotation(secret=referenced["lucia-rest-token"], version="7", actor=viewer)
    assert not Rotation.objects.exists()


def test_no_field_value_is_ever_requested_or_stored(connect, referenced):
    onepassword_checks.check_secrets()
    assert not [p for p in connect.paths() if "/items/" in p or p.endswith("/files")]
    stored = str(list(SecretCheck.objects.values())) + str(list(AuditEntry.objects.values()))
    assert FIELD_VALUE not in stored


# --- Upstash ------------------------------------------------------------------------------
def test_with_upstash_not_configured_nothing_is_asked_or_written(linked, no_sources):
    assert upstash_checks.check_databases().configured is False
    linked.refresh_from_db()
    assert linked.checked_at is None and linked.found is None


def test_it_shows_the_drift_between_the_record_and_upstash(upstash_api, linked):
    result = upstash_checks.check_databases()
    assert result.found == {"lucia": True}
    linked.refresh_from_db()
    assert [(d.field, d.recorded, d.upstash) for d in linked.drift()] == [("region", "eu-west-1", "eu-central-1")]
    assert linked.observed_name == "lucia-prod" and linked.monthly_commands == 1_000_000
    for field, value in (("tls", False), ("eviction", None), ("budget", 25), ("max_entry_size", 1)):
        setattr(linked, field, value)
    assert [d.field for d in linked.drift()] == ["region", "tls", "eviction", "budget", "max_entry_size"]
    assert [d.unrecorded for d in linked.drift()] == [False, False, True, False, False]


def test_read_regions_compare_as_a_set(upstash_api, linked):
    upstash_api.databases[UPSTASH_ID]["read_regions"] = ["us-west-1", "us-east-1"]
    RedisDatabase.objects.filter(pk=linked.database_id).update(read_regions=["us-east-1", "us-west-1"], region="EU-central-1")
    upstash_checks.check_databases()
    assert UpstashLink.objects.select_related("database").get().drift() == []


def test_an_unknown_upstash_id_is_an_answer_not_a_failure(upstash_api, linked):
    UpstashLink.objects.filter(pk=linked.pk).update(upstash_id="0000-gone")
    assert upstash_checks.check_databases().found == {"lucia": False}
    linked.refresh_from_db()
    assert linked.found is False and linked.unverified_since is None and linked.drift() == []


def test_a_failed_ask_keeps_the_last_answer_unverified(upstash_api, linked):
    at = datetime(2026, 3, 15, 8, tzinfo=timezone.utc)
    upstash_checks.check_databases(now=at)
    upstash_api.fail_next("status", 429)
    assert upstash_checks.check_databases(now=at + timedelta(hours=1)).failure == RATE_LIMITED
    linked.refresh_from_db()
    assert linked.unverified_since == at + timedelta(hours=1) and linked.checked_at == at
    assert [d.field for d in linked.drift()] == ["region"] and linked.monthly_commands == 1_000_000


def test_adopting_upstashs_value_changes_the_record_and_is_audited(upstash_api, linked, operator):
    upstash_checks.check_databases()
    database = upstash_checks.adopt(database=linked.database, field_name="region", actor=operator)
    assert database.region == "eu-central-1" and RedisDatabase.objects.get().region == "eu-central-1"
    entry = AuditEntry.objects.get(action="database.adopt_upstash")
    assert entry.actor == operator and entry.before == {"region": "eu-west-1"} and entry.after == {"region": "eu-central-1"}
    assert entry.target_label == "lucia" and entry.note.startswith("Adopted Upstash's region")
    UpstashLink.objects.filter(pk=linked.pk).update(budget=None)
    upstash_checks.adopt(database=linked.database, field_name="budget", actor=operator)
    assert UpstashLink.objects.get().budget == 20 and UpstashLink.objects.select_related("database").get().drift() == []


def test_adopting_is_for_operators_and_compared_settings_only(upstash_api, linked, viewer, operator):
    upstash_checks.check_databases()
    with pytest.raises(PermissionDenied):
        upstash_checks.adopt(database=linked.database, field_name="region", actor=viewer)
    for field in ("key_prefix", "url_env", "readonly_url_env", "name", "observed"):
        with pytest.raises(ValidationError):
            upstash_checks.adopt(database=linked.database, field_name=field, actor=operator)
    database = RedisDatabase.objects.get()
    assert (database.region, database.key_prefix, database.url_env) == ("eu-west-1", "lucia:", "REDIS_URL")
    assert not AuditEntry.objects.filter(action="database.adopt_upstash").exists()


def test_no_compared_setting_is_a_guarded_field():
    assert not set(upstash_checks.COMPARED) & set(RedisDatabase.GUARDED_FIELDS)


def test_adopting_needs_an_answer_first(upstash_api, linked, operator):
    with pytest.raises(ValidationError, match="check the database first"):
        upstash_checks.adopt(database=linked.database, field_name="region", actor=operator)


# The price is $0.20 per 100k commands: a $20 budget is 10M commands a month (March: 31 days).
@pytest.mark.parametrize("at,commands,projected,over", [
    (datetime(2026, 3, 16, 12, tzinfo=timezone.utc), 5_000_000, 10_000_000, False),  # exactly the budget: not past it
    (datetime(2026, 3, 16, 12, tzinfo=timezone.utc), 5_000_001, 10_000_002, True),
    (datetime(2026, 3, 16, 0, tzinfo=timezone.utc), 4_838_709, 9_999_999, False),
    (datetime(2026, 3, 16, 0, tzinfo=timezone.utc), 4_838_710, 10_000_001, True),
    (datetime(2026, 3, 1, 2, tzinfo=timezone.utc), 322_580, 9_999_980, False),  # the first hours count as a day
    (datetime(2026, 3, 1, 2, tzinfo=timezone.utc), 322_581, 10_000_011, True),
])
def test_the_projection_holds_the_month_to_its_budget(linked, at, commands, projected, over):
    link = UpstashLink(database=linked.database, budget=20, monthly_commands=commands, stats_at=at)
    projection = link.projection(0.20)
    assert (projection.commands, projection.over, projection.budget_usd) == (projected, over, 20)


def test_without_a_recorded_budget_upstashs_holds(linked):
    link = UpstashLink(database=linked.database, monthly_commands=10, stats_at=datetime(2026, 3, 16, tzinfo=timezone.utc),
                       observed={"budget": 7})
    assert link.projection(0.20).budget_usd == 7
    assert UpstashLink(database=linked.database, monthly_commands=10, stats_at=link.stats_at).projection(0.2) is None


def test_it_alerts_once_when_the_projection_passes_the_budget(upstash_api, linked, channel, settings):
    settings.REDIS_PRICE_PER_100K_COMMANDS = 0.20
    at = datetime(2026, 3, 16, 0, tzinfo=timezone.utc)
    upstash_api.stats[UPSTASH_ID]["total_monthly_requests"] = 6_000_000
    assert upstash_checks.check_databases(now=at).alerts == ["lucia"]
    assert upstash_checks.check_databases(now=at + timedelta(hours=1)).alerts == []
    delivery = AlertDelivery.objects.get()
    assert delivery.event == "upstash.budget" and "over its $20 monthly budget" in delivery.text
    upstash_api.stats[UPSTASH_ID]["total_monthly_requests"] = 1_000
    upstash_checks.check_databases(now=at + timedelta(hours=2))
    assert UpstashLink.objects.get().budget_alerted is False  # re-armed
    upstash_api.stats[UPSTASH_ID]["total_monthly_requests"] = 9_000_000
    assert upstash_checks.check_databases(now=at + timedelta(hours=3)).alerts == ["lucia"]
    assert AlertDelivery.objects.count() == 2


def test_no_credential_is_requested_or_stored(upstash_api, linked):
    upstash_checks.check_databases()
    assert all(r["query"].get("credentials") == ["hide"] for r in upstash_api.requests if "/database/" in r["path"])
    stored = str(list(UpstashLink.objects.values()))
    assert "038a8e27c45e43068d5f186085399884" not in stored and "rest_token" not in stored


def test_a_connect_host_that_is_not_a_url_is_unreachable_not_an_error(connect, referenced, monkeypatch):
    monkeypatch.setenv("OP_CONNECT_HOST", "::::")
    result = onepassword_checks.check_secrets()
    assert result.failure == "unreachable" and set(result.states.values()) == {"unverified"}


def test_an_upstash_url_that_is_not_a_url_is_unreachable_not_an_error(upstash_api, linked, monkeypatch):
    monkeypatch.setenv("UPSTASH_API_URL", "::::")
    assert upstash_checks.check_databases().failure == "unreachable"


def test_check_now_queues_nothing_without_a_reference_or_a_link(connect, upstash_api, lucia, operator,
                                                                 django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        assert onepassword_checks.request_check(secret=Secret.objects.get(name="lucia-rest-token"), actor=operator) is None
        link = upstash_checks.request_check(database=lucia, actor=operator)
    assert queued == [] and link.requested_at is None and not SecretCheck.objects.exists()


def test_a_new_upstash_id_drops_what_was_said_about_the_old_one(upstash_api, linked, operator):
    from dashboard.sources.forms import UpstashLinkForm

    upstash_checks.check_databases()
    form = UpstashLinkForm({"upstash_id": "another-id", "tls": "true", "eviction": "false", "budget": "20",
                            "max_request_size": "10485760", "max_entry_size": "104857600"}, instance=UpstashLink.objects.get())
    assert form.is_valid(), form.errors
    upstash_checks.save_link(form=form, actor=operator)
    link = UpstashLink.objects.select_related("database").get()
    assert (link.upstash_id, link.found, link.observed, link.monthly_commands) == ("another-id", None, {}, None)
    assert link.drift() == [] and AuditEntry.objects.get(action="upstash_link.edit").before["upstash_id"] == UPSTASH_ID
