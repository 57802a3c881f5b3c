"""Purging the offending keys of a TTL review finding: engine and command, against a real
redis-server and a real Postgres, after a real review."""

import io
import json
import sys

import pytest
from django.core.management import CommandError, call_command

from continuity import keyspace
from continuity.keyspace import purge as redis_purge
from continuity.keyspace.nodes import Node
from continuity.models import Namespace, PurgeRun, PurgeTargetKey, ReviewRun
from continuity.operations import purge, review
from dashboard.models import AuditEntry, RedisDatabase

pytestmark = pytest.mark.usefixtures("transport")

NO_TTL = ([b"lucia:session:nottl:%02d" % i for i in range(30)] + [b"lucia:focus:nottl:%02d" % i for i in range(5)]
          + [b"lucia:session:admin:%02d" % i for i in range(7)])
ABOVE_MAX = [b"lucia:focus:long:%02d" % i for i in range(20)]
OVERSIZED = [b"lucia:action:big:%d" % i for i in range(4)]
WRONG_TYPE = [b"lucia:distress:s:%d" % i for i in range(6)]
FINE = ([b"lucia:session:ok:%02d" % i for i in range(10)] + [b"lucia:rate:%02d" % i for i in range(10)]
        + [b"lucia:session:admin:ok:%d" % i for i in range(3)])
UNKNOWN = [b"lucia:legacy:%d" % i for i in range(3)]
FOREIGN = [b"other:app:1"]
TOTAL = len(NO_TTL + ABOVE_MAX + OVERSIZED + WRONG_TYPE + FINE + UNKNOWN + FOREIGN)


def all_keys(client):
    return set(client.scan_iter(count=1000))


def scans(client):
    return client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)


@pytest.fixture
def reviewed(monitored, lucia):
    """A keyspace with known offenders and a succeeded review of it. `lucia:session:admin:`
    is a namespace nested inside `lucia:session:`: its keys must not be read twice."""
    Namespace.objects.create(database=lucia, name="session-admin", prefix="lucia:session:admin:",
                             ttl_required=True, max_ttl_seconds=120, max_payload_bytes=16384)
    Namespace.objects.filter(database=lucia, name="distress").update(expected_type="hash")
    pipe = monitored.pipeline(transaction=False)
    for key in NO_TTL + UNKNOWN + FOREIGN:
        pipe.set(key, b"v")
    for key in ABOVE_MAX:
        pipe.set(key, b"v", ex=200_000)
    for key in OVERSIZED:
        pipe.set(key, b"x" * 40_000, ex=60)
    for key in WRONG_TYPE:
        pipe.set(key, b"v", ex=100)
    for key in FINE:
        pipe.hset(key, b"f", b"v") if key.startswith(b"lucia:distress:") else pipe.set(key, b"v", ex=100)
    pipe.execute()
    run = review.review_database(database=lucia).run
    assert run.status == "succeeded"
    assert run.findings == {"no_ttl": 42, "ttl_above_max": 20, "oversized": 4, "wrong_type": 6,
                            "unknown_namespace": 3}
    return run


def preview(operator, run, finding, action="delete", **kwargs):
    return purge.preview_purge(database=run.database, kind="finding", review_id=run.pk, finding=finding,
                               action=action, actor=operator, **kwargs)


def confirmed(operator, preview_result):
    run = preview_result.run
    return purge.confirm_purge(run=run, confirmation=f"review {run.review_id} {run.finding}", reason="findings",
                               actor=operator, source="cli")


# --- preview ------------------------------------------------------------------------------------
def test_it_previews_the_current_offenders_exactly_and_touches_nothing(monitored, reviewed, operator):
    monitored.expire(NO_TTL[0], 30)  # fixed after the review
    before, before_dbsize = all_keys(monitored), monitored.dbsize()
    result = preview(operator, reviewed, "no_ttl", batch_size=7)
    assert (result.matched, result.actionable) == (41, 41)
    assert result.namespaces == {"lucia:session:": 29, "lucia:session:admin:": 7, "lucia:focus:": 5}
    run = result.run
    assert run.target_value == f"review {reviewed.pk} no_ttl" and run.condition == "no_ttl"
    assert run.match_pattern == "lucia:focus:* lucia:session:*"  # admin: is inside session:, scanned once
    assert purge.review_counts(run) == {"lucia:session:": 30, "lucia:session:admin:": 7, "lucia:focus:": 5}
    stored = list(PurgeTargetKey.objects.filter(run=run).order_by("position").values_list("position", "key"))
    assert [p for p, _ in stored] == list(range(1, 42))
    assert {bytes(k) for _, k in stored} == set(NO_TTL[1:])
    assert {keyspace.decode_key(t) for t in result.sample} <= set(NO_TTL[1:]) and len(result.sample) == 20
    assert run.estimated_commands == 7  # ceil(41 / 7) acting commands, no SCAN, and the marker's DEL
    assert all_keys(monitored) == before and monitored.dbsize() == before_dbsize


@pytest.mark.parametrize("finding,expected", [("ttl_above_max", ABOVE_MAX), ("oversized", OVERSIZED),
                                              ("wrong_type", WRONG_TYPE)])
def test_it_finds_the_offenders_of_each_finding(monitored, reviewed, operator, finding, expected):
    result = preview(operator, reviewed, finding)
    assert result.matched == len(expected)
    assert {bytes(k) for k in PurgeTargetKey.objects.filter(run=result.run).values_list("key", flat=True)} \
        == set(expected)


# --- execution ----------------------------------------------------------------------------------
def test_it_deletes_the_offenders_and_skips_keys_fixed_since_the_preview(monitored, reviewed, operator):
    result = preview(operator, reviewed, "no_ttl", batch_size=10)
    fixed = NO_TTL[:3]
    for key in fixed:
        monitored.expire(key, 30)
    run = confirmed(operator, result)
    monitored.script_flush()  # whether an earlier test loaded the script must not change the count
    outcome = purge.execute_purge(run_id=run.pk)
    assert (outcome.status, outcome.matched, outcome.done, outcome.skipped) == ("succeeded", 42, 39, 3)
    assert all_keys(monitored) == set(fixed + ABOVE_MAX + OVERSIZED + WRONG_TYPE + FINE + UNKNOWN + FOREIGN)
    # One acting script per stored batch of 10 keys, no SCAN; the marker's DEL; and, the server
    # lacking the script, the first call's NOSCRIPT answer and its SCRIPT LOAD.
    assert outcome.commands == 6 + 2
    assert not PurgeTargetKey.objects.filter(run=run).exists()  # the spent list is dropped
    entry = AuditEntry.objects.get(action="purge.finish", target_id=str(run.pk))
    assert entry.after["deleted"] == 39 and entry.after["skipped"] == 3 and entry.after["target_kind"] == "finding"
    assert entry.after["target"] == f"review {reviewed.pk} no_ttl" and entry.note == "findings"


def test_it_applies_the_policy_ttl_to_keys_still_without_one(monitored, reviewed, operator):
    result = preview(operator, reviewed, "no_ttl", action="expire")
    assert result.actionable == 42
    monitored.expire(NO_TTL[0], 30)
    outcome = purge.execute_purge(run_id=confirmed(operator, result).pk)
    assert (outcome.matched, outcome.done, outcome.skipped) == (42, 41, 1)
    assert monitored.dbsize() == TOTAL  # a repair deletes nothing
    assert 3590 < monitored.ttl(b"lucia:session:nottl:05") <= 3600
    assert 86390 < monitored.ttl(b"lucia:focus:nottl:01") <= 86400
    assert 110 < monitored.ttl(b"lucia:session:admin:03") <= 120  # the nested namespace's own maximum
    assert monitored.ttl(NO_TTL[0]) <= 30  # fixed meanwhile: left alone


@pytest.mark.parametrize("finding,keys", [("ttl_above_max", ABOVE_MAX), ("oversized", OVERSIZED),
                                          ("wrong_type", WRONG_TYPE)])
def test_it_deletes_the_offenders_of_each_finding(monitored, reviewed, operator, finding, keys):
    outcome = purge.execute_purge(run_id=confirmed(operator, preview(operator, reviewed, finding)).pk)
    assert (outcome.matched, outcome.done, outcome.skipped) == (len(keys), len(keys), 0)
    assert not any(monitored.exists(key) for key in keys)
    assert monitored.dbsize() == TOTAL - len(keys)


def test_it_rechecks_ttl_above_max_at_execution(monitored, reviewed, operator):
    result = preview(operator, reviewed, "ttl_above_max")
    monitored.expire(ABOVE_MAX[0], 60)  # now within the maximum
    monitored.delete(ABOVE_MAX[1])
    outcome = purge.execute_purge(run_id=confirmed(operator, result).pk)
    assert (outcome.matched, outcome.done, outcome.skipped) == (20, 18, 2)
    assert monitored.exists(ABOVE_MAX[0])


def test_it_shortens_ttls_above_the_maximum_to_the_maximum(monitored, reviewed, operator):
    result = preview(operator, reviewed, "ttl_above_max", action="expire")
    assert result.actionable == 20
    monitored.expire(ABOVE_MAX[0], 60)  # within the maximum now: left alone
    outcome = purge.execute_purge(run_id=confirmed(operator, result).pk)
    assert (outcome.matched, outcome.done, outcome.skipped) == (20, 19, 1)
    assert monitored.dbsize() == TOTAL  # a repair deletes nothing
    assert all(86390 < monitored.ttl(key) <= 86400 for key in ABOVE_MAX[1:])  # focus: 1 day
    assert monitored.ttl(ABOVE_MAX[0]) <= 60


def test_it_rechecks_oversized_and_wrong_type_at_execution(monitored, reviewed, operator):
    """The re-check asks the same policy: a key rewritten small (or with the right type)
    since the preview is skipped, not deleted because it still exists."""
    big = preview(operator, reviewed, "oversized")
    monitored.set(OVERSIZED[0], b"small", ex=60)
    outcome = purge.execute_purge(run_id=confirmed(operator, big).pk)
    assert (outcome.matched, outcome.done, outcome.skipped) == (4, 3, 1) and monitored.exists(OVERSIZED[0])
    typed = preview(operator, reviewed, "wrong_type")
    monitored.delete(WRONG_TYPE[0])
    monitored.hset(WRONG_TYPE[0], b"f", b"v")
    outcome = purge.execute_purge(run_id=confirmed(operator, typed).pk)
    assert (outcome.matched, outcome.done, outcome.skipped) == (6, 5, 1) and monitored.exists(WRONG_TYPE[0])


class Crash(Exception):
    pass


def test_it_resumes_from_a_mid_list_checkpoint_without_double_counting(monitored, reviewed, operator, settings):
    settings.PURGE_CHECKPOINT_SECONDS = 0
    run = confirmed(operator, preview(operator, reviewed, "no_ttl", batch_size=10, rate_cap=0))

    def crash(progress_run):
        if progress_run.batches == 2:
            raise Crash()

    with pytest.raises(Crash):
        purge.execute_purge(run_id=run.pk, progress=crash)
    run.refresh_from_db()
    assert (run.status, list(run.node_cursors.values()), run.matched, run.done) == ("running", ["20"], 20, 20)
    assert sum(monitored.exists(key) for key in NO_TTL) == 22
    outcome = purge.execute_purge(run_id=run.pk, lease_seconds=0)
    assert outcome.resumed and outcome.status == "succeeded"
    assert (outcome.matched, outcome.done, outcome.skipped) == (42, 42, 0)
    assert not any(monitored.exists(key) for key in NO_TTL)
    assert monitored.dbsize() == TOTAL - 42


def test_it_recovers_batches_acted_on_but_not_checkpointed(monitored, reviewed, operator, monkeypatch, settings):
    settings.PURGE_CHECKPOINT_SECONDS = 3600  # checkpoints after the first batch and at the end only
    run = confirmed(operator, preview(operator, reviewed, "no_ttl", batch_size=10, rate_cap=0))
    original, calls = PurgeRun.checkpoint, {"n": 0}

    def dying_checkpoint(r, claim):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash()
        return original(r, claim)

    monkeypatch.setattr(PurgeRun, "checkpoint", dying_checkpoint)
    with pytest.raises(Crash):
        purge.execute_purge(run_id=run.pk)
    monkeypatch.setattr(PurgeRun, "checkpoint", original)  # the worker that resumes is healthy
    marker = redis_purge.read_marker(Node("one", monitored), run.pk)
    run.refresh_from_db()
    assert marker.done > run.done
    outcome = purge.execute_purge(run_id=run.pk, lease_seconds=0)
    assert (outcome.matched, outcome.done, outcome.skipped) == (42, 42, 0)


# --- refusals -----------------------------------------------------------------------------------
@pytest.fixture
def other_database(lucia):
    other = RedisDatabase.objects.create(name="other", key_prefix="lucia:", url_env="REDIS_URL")
    Namespace.objects.create(database=other, name="session", prefix="lucia:session:", max_ttl_seconds=3600)
    return other


@pytest.mark.parametrize("case,needle", [
    ("wrong database", "reviewed lucia, not other"),
    ("failed review", "only a succeeded review"),
    ("missing review", "There is no TTL review"),
    ("unknown finding", "Unknown review finding"),
    ("unknown namespace", "no registered namespace"),
    ("expire oversized", "cannot repair oversized"),
    ("finding not reported", "found no no_ttl keys"),
])
def test_it_refuses_bad_finding_targets_and_touches_nothing(monitored, reviewed, operator, other_database,
                                                            case, needle):
    database, review_id, finding, action = reviewed.database, reviewed.pk, "no_ttl", "delete"
    if case == "wrong database":
        database = other_database
    elif case == "failed review":
        review_id = ReviewRun.objects.create(database=reviewed.database, status="failed").pk
    elif case == "missing review":
        review_id = reviewed.pk + 1000
    elif case == "unknown finding":
        finding = "bogus"
    elif case == "unknown namespace":
        finding = "unknown_namespace"
    elif case == "expire oversized":
        finding, action = "oversized", "expire"
    elif case == "expire above max":
        finding, action = "ttl_above_max", "expire"
    elif case == "finding not reported":
        review_id = ReviewRun.objects.create(database=reviewed.database, status="succeeded",
                                             findings={"no_ttl": 0}).pk
    before = all_keys(monitored)
    before_scans = scans(monitored)
    with pytest.raises(purge.PurgeRefused, match=needle):
        purge.preview_purge(database=database, kind="finding", review_id=review_id, finding=finding, action=action,
                            actor=operator)
    assert scans(monitored) == before_scans  # not one SCAN for a refused target
    assert all_keys(monitored) == before
    assert not PurgeRun.objects.exists() and not PurgeTargetKey.objects.exists()


def test_it_refuses_a_confirmation_that_is_not_the_finding_phrase(monitored, reviewed, operator):
    result = preview(operator, reviewed, "no_ttl")
    with pytest.raises(purge.PurgeRefused, match="does not match"):
        purge.confirm_purge(run=result.run, confirmation="no_ttl", reason="x", actor=operator)
    result.run.refresh_from_db()
    assert result.run.status == "previewed" and all(monitored.exists(key) for key in NO_TTL)


# --- command ------------------------------------------------------------------------------------
def run_purge(*args, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command("purge", "--action", "delete", *args, stdout=out, stderr=err)
    finally:
        sys.stdin = old
    return out.getvalue(), err.getvalue()


def test_it_previews_a_finding_from_the_command_line_as_json(monitored, reviewed, operator):
    out, _ = run_purge("--database", "lucia", "--review", str(reviewed.pk), "--finding", "no_ttl", "--dry-run",
                       "--json", "--as", "otto")
    data = json.loads(out)
    assert data["dry_run"] is True and data["matched"] == 42 and data["target_kind"] == "finding"
    assert (data["review"], data["finding"], data["target"]) == (reviewed.pk, "no_ttl", f"review {reviewed.pk} no_ttl")
    assert data["namespaces"] == data["review_counts"] == {"lucia:session:": 30, "lucia:session:admin:": 7,
                                                           "lucia:focus:": 5}
    assert monitored.dbsize() == TOTAL


def test_it_deletes_a_findings_keys_from_the_command_line(monitored, reviewed, operator):
    out, _ = run_purge("--database", "lucia", "--review", str(reviewed.pk), "--finding", "ttl_above_max",
                       "--reason", "too long", "--yes", "--json", "--as", "otto")
    data = json.loads(out)
    assert (data["dry_run"], data["matched"], data["deleted"], data["skipped"], data["status"]) \
        == (False, 20, 20, 0, "succeeded")
    assert monitored.dbsize() == TOTAL - 20


def test_it_asks_for_the_finding_phrase_interactively(monitored, reviewed, operator):
    phrase = f"review {reviewed.pk} no_ttl"
    out, err = run_purge("--database", "lucia", "--review", str(reviewed.pk), "--finding", "no_ttl",
                         "--action", "expire", "--reason", "repair", "--as", "otto", stdin=phrase + "\n")
    assert f"Type the target to confirm ({phrase})" in err and "expired 42" in out
    assert f"(review #{reviewed.pk} counted 30)" in err
    assert monitored.ttl(NO_TTL[0]) > 0


@pytest.mark.parametrize("args,needle", [
    (["--finding", "oversized", "--action", "expire"], "cannot repair oversized"),
    (["--finding", "unknown_namespace"], "no registered namespace"),
    ([], "Give --finding"),
])
def test_it_refuses_finding_purges_from_the_command_line_with_a_non_zero_exit(monitored, reviewed, operator,
                                                                             args, needle):
    before = all_keys(monitored)
    with pytest.raises(CommandError, match=needle) as exc:
        run_purge("--database", "lucia", "--review", str(reviewed.pk), *args, "--reason", "r", "--yes", "--as",
                  "otto")
    assert exc.value.returncode == 1
    assert all_keys(monitored) == before and not PurgeRun.objects.exists()


def test_it_limits_a_finding_by_a_literal_prefix_never_a_pattern(monitored, reviewed, operator):
    # A typed --prefix scopes the finding (test_purge_scopes.py); a glob cannot.
    with pytest.raises(CommandError, match="literal --prefix, not a --pattern"):
        run_purge("--database", "lucia", "--review", str(reviewed.pk), "--pattern", "lucia:session:*", "--finding",
                  "no_ttl", "--dry-run", "--as", "otto")
    with pytest.raises(CommandError, match="Give --prefix or --pattern, not both"):
        run_purge("--database", "lucia", "--prefix", "lucia:session:", "--pattern", "lucia:focus:*", "--dry-run",
                  "--as", "otto")
    assert monitored.dbsize() == TOTAL and not PurgeRun.objects.exists()
