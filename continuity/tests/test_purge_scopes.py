"""Purges scoped by intersection — namespace ∩ literal prefix ∩ finding — through the page,
`manage.py purge`, `manage.py policy_purge` and the tasks: Redis keeps exactly the keys
outside the scope. The least destructive action is the default; Delete is never chosen for
the operator. Real redis-server, real Postgres, a real review."""

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from continuity.models import Namespace, PurgeRun, ReviewNamespaceStat
from continuity.models.reviews import estimate as sample_estimate
from continuity.operations import purge, review
from continuity.tasks.purge import policy_purge_task, preview_purge_task, purge_task
from dashboard.models import AuditEntry

FOCUS_A_NO_TTL = [b"lucia:focus:a:%02d" % i for i in range(10)]
FOCUS_B_NO_TTL = [b"lucia:focus:b:%02d" % i for i in range(5)]
FOCUS_A_FINE = [b"lucia:focus:a:ok:%d" % i for i in range(5)]
FOCUS_A_LONG = [b"lucia:focus:a:long:%d" % i for i in range(3)]  # TTL above focus's 24 h maximum
SESSION_NO_TTL = [b"lucia:session:x:%d" % i for i in range(9)]
ADMIN_NO_TTL = [b"lucia:session:admin:%d" % i for i in range(4)]  # a namespace nested in session
SESSION_FINE = [b"lucia:session:ok:%d" % i for i in range(6)]
NO_TTL = FOCUS_A_NO_TTL + FOCUS_B_NO_TTL + SESSION_NO_TTL + ADMIN_NO_TTL


def keys(client):
    return set(client.scan_iter(count=1000))


def ttls(client):
    """{key: PTTL} of the whole keyspace (-1: no TTL)."""
    return {key: client.pttl(key) for key in keys(client)}


@pytest.fixture
def space(monitored, lucia):
    Namespace.objects.create(database=lucia, name="session-admin", prefix="lucia:session:admin:",
                             ttl_required=True, max_ttl_seconds=120, max_payload_bytes=16384)
    pipe = monitored.pipeline(transaction=False)
    for key in NO_TTL:
        pipe.set(key, b"v")
    for key in FOCUS_A_FINE + SESSION_FINE:
        pipe.set(key, b"v", ex=600)
    for key in FOCUS_A_LONG:
        pipe.set(key, b"v", ex=200_000)
    pipe.execute()
    return monitored


@pytest.fixture
def reviewed(space, lucia):
    run = review.review_database(database=lucia).run
    assert run.findings["no_ttl"] == len(NO_TTL) == 28 and run.findings["ttl_above_max"] == 3
    return run


# --- the engine --------------------------------------------------------------------------------
def test_it_scopes_a_prefix_to_a_finding_and_applies_the_policy_ttl_by_default(space, lucia, operator):
    before = ttls(space)
    preview = purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:focus:a:", finding="no_ttl",
                                  actor=operator)
    run = preview.run
    assert (run.action, run.condition, run.finding) == ("expire", "no_ttl", "no_ttl")  # never delete by default
    assert (preview.matched, preview.actionable) == (18, 10)  # every key under the prefix is read, 10 qualify
    assert purge.scope_of(run) == {"namespaces": ["lucia:focus:"], "prefix": "lucia:focus:a:",
                                   "keys": "still without TTL"}
    run = purge.confirm_purge(run=run, confirmation="lucia:focus:a:", reason="repair", actor=operator)
    result = purge.execute_purge(run_id=run.pk)
    assert (result.status, result.done) == ("succeeded", 10)
    after = ttls(space)
    assert set(after) == set(before)  # a repair deletes nothing
    changed = {key for key in after if after[key] != before[key] and before[key] == -1}
    assert changed == set(FOCUS_A_NO_TTL)
    assert all(0 < after[key] <= 86_400_000 for key in FOCUS_A_NO_TTL)  # focus's maximum, 24 h
    assert all(after[key] == -1 for key in FOCUS_B_NO_TTL + SESSION_NO_TTL + ADMIN_NO_TTL)


def test_it_deletes_only_inside_the_scope_when_delete_is_chosen(space, lucia, operator):
    before = keys(space)
    preview = purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:session:", namespace="session",
                                  finding="no_ttl", action="delete", actor=operator)
    # The namespace leaves its nested namespace out: session-admin's keys are not its own.
    assert preview.namespaces == {"lucia:session:": 15} and preview.actionable == 9
    run = purge.confirm_purge(run=preview.run, confirmation="lucia:session:", reason="r", actor=operator)
    assert purge.execute_purge(run_id=run.pk).done == 9
    assert keys(space) == before - set(SESSION_NO_TTL)


@pytest.mark.parametrize("target,refusal", [
    ({"kind": "prefix", "value": b"lucia:focus:"}, "Delete is never chosen for you"),
    ({"kind": "prefix", "value": b"lucia:focus:", "finding": "oversized"}, "Delete is never chosen for you"),
    ({"kind": "prefix", "value": b"lucia:focus:", "namespace": "session", "action": "delete"},
     "lies outside the namespace session"),
    ({"kind": "prefix", "value": b"lucia:session:admin:", "namespace": "session", "action": "delete"},
     "lies outside the namespace session"),
    ({"kind": "prefix", "value": b"lucia:focus:", "namespace": "nope", "action": "delete"},
     "no namespace named 'nope'"),
])
def test_it_refuses_an_empty_scope_or_an_unchosen_delete_before_any_redis_command(space, lucia, operator, target,
                                                                                    refusal):
    space.config_resetstat()
    with pytest.raises(purge.PurgeRefused, match=refusal):
        purge.request_preview(database=lucia, actor=operator, **target)
    assert not PurgeRun.objects.exists() and "cmdstat_scan" not in space.info("commandstats")


def test_it_never_drops_a_typed_prefix_on_a_review_finding(monitored, reviewed, lucia, operator):
    before = keys(monitored)
    preview = purge.preview_purge(database=lucia, kind="finding", review_id=reviewed.pk, finding="no_ttl",
                                  value=b"lucia:focus:a:", action="delete", actor=operator)
    run = preview.run
    assert run.target_value == f"review {reviewed.pk} no_ttl under lucia:focus:a:"
    assert run.match_pattern == "lucia:focus:a:*" and preview.namespaces == {"lucia:focus:": 10}
    assert purge.review_counts(run) == {"lucia:focus:": 15}  # the review's figure for the whole namespace
    run = purge.confirm_purge(run=run, confirmation=run.target_value, reason="r", actor=operator)
    assert purge.execute_purge(run_id=run.pk).done == 10
    assert keys(monitored) == before - set(FOCUS_A_NO_TTL)


def test_a_scoped_finding_preview_costs_a_fraction_of_the_unscoped_one(reviewed, lucia, operator):
    scoped = purge.new_run(database=lucia, kind="finding", review_id=reviewed.pk, finding="no_ttl",
                           value=b"lucia:focus:", action="delete", actor=operator)
    whole = purge.new_run(database=lucia, kind="finding", review_id=reviewed.pk, finding="no_ttl", action="delete",
                          actor=operator)
    # Its estimate comes from the exact review: the focus namespace only, 15 of whose keys have no TTL.
    assert (scoped.estimate_keys, scoped.estimate_at_most, scoped.estimate_detail["acting"]) == (18 + 5, False,
                                                                                                 [15, 15, 15])
    assert whole.estimate_keys == 18 + 5 + 15 + 4 and whole.estimate_detail["acting"] == [28, 28, 28]
    assert 0 < scoped.estimate_detail["preview_billed"] < whole.estimate_detail["preview_billed"]
    assert 0 < scoped.estimate_detail["execution_billed"] < whole.estimate_detail["execution_billed"]


# --- the page ----------------------------------------------------------------------------------
def test_it_purges_a_review_finding_limited_to_a_typed_prefix_from_the_page(operator_client, monitored, reviewed, lucia,
                                                                            eager,
                                                                            django_capture_on_commit_callbacks):
    before = keys(monitored)
    form = {"database": "lucia", "target_kind": "finding", "review": reviewed.pk, "finding": "no_ttl",
            "target": "lucia:focus:a:", "action": "delete"}
    # The estimate region, before anything runs: the scope and what preview and purge will cost.
    fragment = operator_client.get(reverse("continuity:purge_estimate"), form, HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert "<html" not in body and 'data-testid="estimate-preview-billed"' in body
    assert re.search(r'data-testid="scope-namespaces">namespace <code class="key">lucia:focus:</code>', body)
    assert 'prefix <code class="key">lucia:focus:a:</code>' in body and "keys still without TTL" in body
    assert not PurgeRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("continuity:purge_new"), form)
    run = PurgeRun.objects.get()
    assert response.status_code == 302 and run.status == "previewed"
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert re.search(r'data-testid="preview-matched">10<', page)
    assert 'data-testid="purge-scope"' in page and 'prefix <code class="key">lucia:focus:a:</code>' in page
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                             {"confirmation": f"review {reviewed.pk} no_ttl under lucia:focus:a:", "reason": "r"})
    run.refresh_from_db()
    assert (run.status, run.done) == ("succeeded", 10)
    assert keys(monitored) == before - set(FOCUS_A_NO_TTL)


def test_the_page_defaults_to_the_least_destructive_action_and_refuses_an_unchosen_delete(operator_client, reviewed,
                                                                                          lucia):
    prefilled = operator_client.get(reverse("continuity:purge_new"), {
        "database": "lucia", "target_kind": "finding", "review": reviewed.pk, "finding": "no_ttl"}).content.decode()
    assert '<option value="" selected>The least destructive fix' in prefilled
    assert 'data-testid="estimate-cost"' in prefilled  # the cost, before the preview runs
    response = operator_client.post(reverse("continuity:purge_new"), {
        "database": "lucia", "target_kind": "finding", "review": reviewed.pk, "finding": "no_ttl"})
    assert response.status_code == 302 and PurgeRun.objects.get().action == "expire"
    response = operator_client.post(reverse("continuity:purge_new"), {
        "database": "lucia", "target_kind": "prefix", "target": "lucia:focus:"})
    assert response.status_code == 400 and "Delete is never chosen for you" in response.content.decode()
    assert PurgeRun.objects.count() == 1


# --- the command line --------------------------------------------------------------------------
def run_purge(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("purge", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_scopes_by_namespace_and_finding_and_shows_the_scope_first(space, lucia, operator):
    before = keys(space)
    out, err = run_purge("--database", "lucia", "--namespace", "session", "--finding", "no_ttl", "--action", "delete",
                         "--reason", "r", "--yes", "--as", "otto")
    assert err.index("Scope: namespaces lucia:session:; prefix lucia:session:; keys still without TTL; action "
                      "delete.") < err.index("Estimate:")
    assert "deleted 9" in out
    assert keys(space) == before - set(SESSION_NO_TTL)


def test_the_command_limits_a_review_finding_to_its_prefix(monitored, reviewed, lucia, operator):
    before = keys(monitored)
    out, _ = run_purge("--database", "lucia", "--review", str(reviewed.pk), "--finding", "no_ttl", "--prefix",
                       "lucia:focus:b:", "--action", "delete", "--reason", "r", "--yes", "--as", "otto")
    assert "deleted 5" in out
    assert keys(monitored) == before - set(FOCUS_B_NO_TTL)


def test_the_command_never_deletes_unless_told(space, lucia, operator):
    with pytest.raises(CommandError, match="Delete is never chosen for you"):
        run_purge("--database", "lucia", "--prefix", "lucia:focus:", "--dry-run", "--as", "otto")
    before = ttls(space)
    out, _ = run_purge("--database", "lucia", "--prefix", "lucia:focus:", "--finding", "ttl_above_max", "--reason",
                       "r", "--yes", "--as", "otto")
    assert "expired 3" in out
    after = ttls(space)
    assert set(after) == set(before)
    assert all(0 < after[key] <= 86_400_000 for key in FOCUS_A_LONG)


def test_policy_purge_acts_only_inside_its_scope(space, lucia, operator):
    Namespace.objects.filter(database=lucia).update(violation_action=Namespace.DELETE)
    before = keys(space)
    out = io.StringIO()
    call_command("policy_purge", "--database", "lucia", "--prefix", "lucia:focus:a:", stdout=out)
    # Only focus's keys under the prefix that break a TTL rule: no TTL, and above the maximum.
    assert keys(space) == before - set(FOCUS_A_NO_TTL) - set(FOCUS_A_LONG)
    run = PurgeRun.objects.get()
    assert (run.target_kind, run.target_value, run.done) == ("policy", "lucia:focus:a:", 13)
    with pytest.raises(CommandError, match="No namespace of lucia with a TTL rule lies in the scope"):
        call_command("policy_purge", "--database", "lucia", "--prefix", "lucia:focus:a:", "--namespace", "session",
                     stdout=io.StringIO())


# --- the tasks ---------------------------------------------------------------------------------
def test_the_tasks_keep_every_key_outside_the_scope(monitored, reviewed, lucia, operator):
    before = keys(monitored)
    run = purge.new_run(database=lucia, kind="finding", review_id=reviewed.pk, finding="no_ttl", namespace="session",
                        action="delete", actor=operator)
    run.save()
    assert preview_purge_task.apply(args=[run.pk]).get()["matched"] == 9  # session's own, not session-admin's
    run = purge.confirm_purge(run=PurgeRun.objects.get(pk=run.pk), confirmation=run.target_value, reason="r",
                              actor=operator)
    assert run.target_value == f"review {reviewed.pk} no_ttl under lucia:session:"
    assert purge_task.apply(args=[run.pk]).get()["done"] == 9
    assert keys(monitored) == before - set(SESSION_NO_TTL)
    # The scheduled policy purge with a scope: the nested namespace alone.
    Namespace.objects.filter(database=lucia).update(violation_action=Namespace.DELETE)
    outcome = policy_purge_task.apply(kwargs={"database": "lucia", "namespace": "session-admin"}).get()
    assert outcome["lucia"]["refused"] == {} and len(outcome["lucia"]["runs"]) == 1
    assert keys(monitored) == before - set(SESSION_NO_TTL) - set(ADMIN_NO_TTL)
    assert AuditEntry.objects.filter(action="purge.finish").count() == 2


# --- instant estimates from a sampled review ------------------------------------------------------
def test_it_scales_a_sampled_reviews_counts_with_their_interval(monitored, lucia, operator):
    pipe = monitored.pipeline(transaction=False)
    for i in range(2400):
        pipe.set(b"lucia:focus:%05d" % i, b"v", ex=600)
    for i in range(600):
        pipe.set(b"lucia:session:%05d" % i, b"v")  # no TTL: a finding
    pipe.execute()
    sampled = review.review_database(database=lucia, sample=500).run
    assert sampled.sampled and sampled.keys_scanned == 500 and sampled.dbsize_before == 3000
    stat = ReviewNamespaceStat.objects.get(run=sampled, namespace__name="session")
    run = purge.new_run(database=lucia, kind="prefix", value=b"lucia:session:", finding="no_ttl", actor=operator)
    expected = sample_estimate(stat.keys, 500, 3000)
    assert stat.keys < 300  # the sample's own count: about a sixth of the keyspace
    assert (run.estimate_keys, run.estimate_at_most) == (expected.value, False)
    detail = run.estimate_detail
    assert (detail["low"], detail["high"], detail["sampled"]) == (expected.low, expected.high, True)
    assert detail["low"] < run.estimate_keys < detail["high"]
    assert detail["acting"] == [expected.value, expected.low, expected.high]  # every session key lacks a TTL
    run.save()
    page = _page_of(run, operator)
    assert f'data-testid="estimate-interval">(95% interval {expected.low:,}–{expected.high:,})' in page
    assert f"sampled TTL review #{sampled.pk}</a>" in page


def _page_of(run, user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.get(run.get_absolute_url()).content.decode()
