"""What a REST token may not do, and what Upstash answers when it has had enough (issue 17,
leftovers 2 and 3), through the local bridge in front of the real redis-server.

- A token whose user may not run scripts (an ACL user's `ACL RESTTOKEN`, `-@scripting`): a
  purge cannot run over REST (its way without scripts needs WATCH). The page, `manage.py
  purge` and the task each end it with a clear refusal naming the REST endpoint (never the
  token), nothing deleted, no 500, its billed commands what Redis counted.
- A 429 (Upstash's "max requests limit exceeded"): a job stops resumable or ends failed with
  the reason, its counts exact; the pages say so.
- Upstash's read-only token (no SCAN, no scripts, no writes): the jobs end failed with the
  reason, nothing deleted; the pages say what it cannot do.
"""

import io

import pytest
import redis
from django.core.management import CommandError, call_command
from django.urls import reverse

from conftest import REST_READONLY_TOKEN, use_rest
from continuity import keyspace
from continuity.billing import FREE
from continuity.keyspace import meta, stream
from continuity.keyspace import purge as redis_purge
from continuity.models import PolicyReport, PurgeRun
from continuity.operations import purge, review
from continuity.tasks.purge import preview_purge_task, purge_task
from continuity.tasks.review import review_database_task
from dashboard.devtools.restbridge import RestBridge

NOSCRIPT_TOKEN = "rest-token-of-a-user-without-scripts"
SESSIONS = 120


def billed_since(client, before):
    total = 0
    for name, row in client.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        if command.split("|")[0] not in FREE:
            total += row["calls"] - before.get(name, {}).get("calls", 0)
    return total


def told(text, bridge, said, token):
    assert said in text and f"REST endpoint {bridge.url}" in text, text
    assert token not in text


@pytest.fixture
def sessions(monitored):
    monitored.mset({f"lucia:session:{i:04d}".encode(): b"v" for i in range(SESSIONS)})
    monitored.set(b"lucia:session:\xff\xfebin", b"v")
    return monitored


# --- a token that may not run scripts -----------------------------------------------------------
@pytest.fixture
def noscript(lucia, sessions, monkeypatch, redis_server):
    """`lucia` over REST with the token of an ACL user allowed everything but scripting (what
    `ACL RESTTOKEN` gives for such a user on Upstash)."""
    sessions.execute_command("ACL", "SETUSER", "noscript", "reset", "on", ">noscript-pw", "~*", "&*", "+@all",
                             "-@scripting")
    bridge = RestBridge(redis_server.url(0), {NOSCRIPT_TOKEN: ("noscript", "noscript-pw")}).start()
    use_rest(monkeypatch, bridge, token=NOSCRIPT_TOKEN)
    yield bridge
    keyspace.forget_clients()
    bridge.stop()
    sessions.execute_command("ACL", "DELUSER", "noscript")


SCRIPTS_REFUSED = "refused scripts for this token"


def ended_refused(run, sessions, bridge, before):
    run.refresh_from_db()
    assert run.status == "failed", run.status
    told(run.error, bridge, SCRIPTS_REFUSED, NOSCRIPT_TOKEN)
    assert "Nothing was changed" in run.error and "ACL RESTTOKEN" in run.error
    # What Redis executed (the NOPERM refusal is rejected before execution: not billed), before the DBSIZE below.
    assert run.billed_commands + run.preview_billed_commands == billed_since(sessions, before)
    assert run.done == 0 and sessions.dbsize() == SESSIONS + 1  # nothing deleted, no marker left


def test_it_refuses_a_purge_by_the_page_when_the_token_may_not_run_scripts(
        operator_client, noscript, sessions, eager, django_capture_on_commit_callbacks):
    before = sessions.info("commandstats")
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("continuity:purge_new"), {"database": "lucia", "target_kind": "prefix",
                                                               "target": "lucia:session:", "action": "delete"})
    run = PurgeRun.objects.get()
    assert run.status == "previewed" and run.preview_matched == SESSIONS + 1  # a SCAN needs no script
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                        {"confirmation": "lucia:session:", "reason": "cleanup"})
    assert response.status_code == 302
    ended_refused(run, sessions, noscript, before)
    page = operator_client.get(run.get_absolute_url())
    assert page.status_code == 200
    told(page.content.decode(), noscript, SCRIPTS_REFUSED, NOSCRIPT_TOKEN)


def test_it_refuses_a_purge_by_the_command_when_the_token_may_not_run_scripts(operator, noscript, sessions):
    before = sessions.info("commandstats")
    with pytest.raises(CommandError) as refused:
        call_command("purge", "--database", "lucia", "--prefix", "lucia:session:", "--action", "delete", "--yes",
                     "--reason", "cleanup", "--as", "otto", stdout=io.StringIO(), stderr=io.StringIO())
    assert str(refused.value).startswith("Refused: ")
    told(str(refused.value), noscript, SCRIPTS_REFUSED, NOSCRIPT_TOKEN)
    ended_refused(PurgeRun.objects.get(), sessions, noscript, before)


def test_it_refuses_a_purge_task_when_the_token_may_not_run_scripts(operator, lucia, noscript, sessions):
    before = sessions.info("commandstats")
    preview = purge.preview_purge(database=lucia, actor=operator, kind="prefix", value=b"lucia:session:",
                                  action="delete")
    run = purge.confirm_purge(run=preview.run, confirmation="lucia:session:", reason="cleanup", actor=operator,
                              source="cli")
    assert purge_task.apply(args=[run.pk]).get() == {"run": run.pk, "status": "failed"}  # at once: no retry
    ended_refused(run, sessions, noscript, before)


def test_it_refuses_a_preview_that_must_count_by_script_when_the_token_may_not(operator, lucia, noscript,
                                                                               sessions):
    # Applying the policy TTL re-checks each key: the preview counts with a script.
    with pytest.raises(purge.PurgeRefused) as refused:
        purge.preview_purge(database=lucia, actor=operator, kind="prefix", value=b"lucia:session:",
                            action="expire")
    told(str(refused.value), noscript, SCRIPTS_REFUSED, NOSCRIPT_TOKEN)
    assert sessions.dbsize() == SESSIONS + 1 and sessions.ttl(b"lucia:session:0001") == -1


# --- a 429: the plan's request limit, reached in the middle of a job --------------------------------
LIMIT_SAID = "is rate-limiting this database (HTTP 429 Too Many Requests: ERR max requests limit exceeded"
STANDARD_TOKEN = "standard-rest-token-of-a-limited-plan"


@pytest.fixture
def limited(lucia, sessions, monkeypatch, redis_server, settings):
    """`lucia` over REST through a bridge of its own, whose request limit the test sets
    (`RestBridge.limit_requests`); pages of 30 keys, a checkpoint at the first page only. The
    scripts are loaded, so that the requests a job sends do not depend on the tests before (a
    NOSCRIPT costs a round trip more)."""
    settings.PURGE_CHECKPOINT_SECONDS = 3600
    settings.PURGE_BATCH_SIZE = 30
    for script in (redis_purge.PURGE_SCRIPT, meta.META_SCRIPT):
        sessions.script_load(script.body)
    bridge = RestBridge(redis_server.url(0), {STANDARD_TOKEN: (None, None)}).start()
    use_rest(monkeypatch, bridge, token=STANDARD_TOKEN)
    yield bridge
    keyspace.forget_clients()
    bridge.stop()


def queued(database, operator):
    preview = purge.preview_purge(database=database, actor=operator, kind="prefix", value=b"lucia:session:",
                                  action="delete")
    return purge.confirm_purge(run=preview.run, confirmation="lucia:session:", reason="cleanup", actor=operator,
                               source="cli")


def sessions_left(client):
    return len(list(client.scan_iter(match=b"lucia:session:*", count=1000)))


def exact(run, client, before):
    """The run's figures are what Redis did: keys deleted, commands executed (a 429 ran nothing)."""
    run.refresh_from_db()
    assert run.billed_commands + run.preview_billed_commands == billed_since(client, before)
    assert run.done == SESSIONS + 1 - sessions_left(client) and run.matched - run.skipped == run.done
    return run


def test_a_purge_task_waits_out_a_429_and_finishes_exactly(operator, lucia, limited, sessions):
    before = sessions.info("commandstats")
    run = queued(lucia, operator)
    limited.limit_requests(3, refused=1)  # the marker with the first SCAN, two pages, then one 429
    assert purge_task.apply(args=[run.pk]).get()["status"] == "succeeded"  # retried (eagerly here)
    run = exact(run, sessions, before)
    assert run.done == SESSIONS + 1 and run.resumes == 1 and run.error == ""


def failed_calls(stats, command):
    return stats.get(f"cmdstat_{command}", {}).get("failed_calls", 0)


def test_a_purge_task_counts_the_noscript_that_a_429_interrupted(operator, lucia, limited, sessions):
    """A page's SCAN and EVALSHA ran (NOSCRIPT: executed, billed), then the SCRIPT LOAD with the
    call again met the 429: the run counts what Redis executed, though no marker recorded it."""
    sessions.delete(b"lucia:session:\xff\xfebin")  # every page by EVALSHA (that key travels as EVAL of the body)
    sessions.script_flush()
    before = sessions.info("commandstats")
    run = queued(lucia, operator)
    limited.limit_requests(2, refused=1)  # the marker with the first SCAN, the first page (NOSCRIPT), a 429
    assert purge_task.apply(args=[run.pk]).get()["status"] == "succeeded"  # retried (eagerly here)
    after = sessions.info("commandstats")
    assert failed_calls(after, "evalsha") - failed_calls(before, "evalsha") >= 1  # NOSCRIPT
    run.refresh_from_db()
    assert run.billed_commands + run.preview_billed_commands == billed_since(sessions, before)
    assert run.done == SESSIONS and sessions_left(sessions) == 0 and run.resumes == 1


def test_a_review_task_counts_the_noscript_that_a_429_interrupted(lucia, limited, sessions, eager, pages_of_20,
                                                                 django_capture_on_commit_callbacks):
    sessions.script_flush()
    before = sessions.info("commandstats")
    run = review.start_review(database=lucia, batch=pages_of_20)
    # DBSIZE, the sizer's INFO, the first SCAN, the first page's metadata (NOSCRIPT) with the
    # next SCAN, then a 429 for SCRIPT LOAD with the calls again.
    limited.limit_requests(4, refused=1)
    with django_capture_on_commit_callbacks(execute=True):
        review_database_task.apply(args=[run.pk])
    after = sessions.info("commandstats")
    assert failed_calls(after, "evalsha_ro") - failed_calls(before, "evalsha_ro") >= 1  # NOSCRIPT
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.keys_scanned == SESSIONS + 1 and run.findings["no_ttl"] == SESSIONS + 1
    assert run.billed_commands == billed_since(sessions, before)
    (part,) = run.node_runs.all()
    assert part.resumes == 1


@pytest.mark.parametrize("served", [1, 2, 3])
def test_a_sampled_review_task_waits_out_a_429_wherever_it_lands_and_bills_what_ran(
        lucia, limited, sessions, eager, django_capture_on_commit_callbacks, served):
    """A sample's round trips (DBSIZE, the random SCANs together, the sample's metadata), the
    429 cutting in after `served` of them: the retried part draws its sample again, and the
    run bills both draws, as Redis executed them."""
    before = sessions.info("commandstats")
    run = review.start_review(database=lucia, sample=60)
    limited.limit_requests(served, refused=1)
    with django_capture_on_commit_callbacks(execute=True):
        review_database_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == "succeeded" and run.sampled, run.error
    assert 50 <= run.keys_scanned <= 60
    assert run.billed_commands == billed_since(sessions, before)


@pytest.mark.parametrize("action,served", [("delete", 2), ("delete", 3), ("expire", 2), ("expire", 3)])
def test_a_preview_task_waits_out_a_429_and_bills_both_attempts(operator, lucia, limited, sessions, eager, action,
                                                                served, django_capture_on_commit_callbacks):
    """The instant estimate's DBSIZE, then the preview's pages (SCAN COUNT 30; for expire each
    page's count by script travels with the next SCAN), a 429 after `served` requests: the
    retried preview counts again from the start, and the run bills what both attempts ran."""
    before = sessions.info("commandstats")
    with django_capture_on_commit_callbacks(execute=False) as queued_tasks:
        run = purge.request_preview(database=lucia, kind="prefix", value=b"lucia:session:", action=action,
                                    actor=operator)
    assert len(queued_tasks) == 1  # the preview's task, sent when the transaction commits
    limited.limit_requests(served, refused=1)
    assert preview_purge_task.apply(args=[run.pk]).get()["status"] == "previewed"
    run.refresh_from_db()
    assert run.preview_matched == SESSIONS + 1
    assert run.preview_billed_commands == billed_since(sessions, before)


@pytest.mark.parametrize("served", [1, 2, 4])
def test_a_report_only_policy_purge_stopped_by_a_429_records_what_it_sent(lucia, limited, sessions, served):
    """Every namespace of the seeded `lucia` reports only: the policy purge counts, node by
    node, and a lasting 429 stops it; its report still holds every command Redis executed."""
    before = sessions.info("commandstats")
    limited.limit_requests(served)  # then 429s
    with pytest.raises(redis.RedisError) as stopped:
        purge.policy_purge(database=lucia)
    told(keyspace.describe_error(stopped.value), limited, LIMIT_SAID, STANDARD_TOKEN)
    (report,) = PolicyReport.objects.filter(database=lucia)
    assert report.billed_commands == billed_since(sessions, before) > 0


def test_a_purge_task_ends_failed_with_the_429_and_exact_counts_when_it_lasts(
        operator_client, operator, lucia, limited, sessions, settings):
    settings.PURGE_TASK_MAX_RETRIES = 1
    before = sessions.info("commandstats")
    run = queued(lucia, operator)
    limited.limit_requests(3)  # the marker with the first SCAN, two pages, then 429s
    assert purge_task.apply(args=[run.pk]).get() == {"run": run.pk, "status": "failed"}
    run = exact(run, sessions, before)
    # Two pages (SCAN COUNT 30: about 30 keys each), though only the first was checkpointed.
    assert run.status == "failed" and 40 < run.done < SESSIONS
    told(run.error, limited, LIMIT_SAID, STANDARD_TOKEN)
    assert "(gave up after 2 attempts)" in run.error
    page = operator_client.get(run.get_absolute_url())
    assert page.status_code == 200
    told(page.content.decode(), limited, LIMIT_SAID, STANDARD_TOKEN)
    assert f'data-testid="progress-done">{run.done}<' in page.content.decode()


def test_the_purge_command_ends_failed_with_the_429_and_exact_counts(operator, lucia, limited, sessions):
    before = sessions.info("commandstats")
    limited.limit_requests(4)  # the estimate's DBSIZE, then as in the task
    with pytest.raises(CommandError) as failed:
        call_command("purge", "--database", "lucia", "--prefix", "lucia:session:", "--action", "delete", "--yes",
                     "--reason", "cleanup", "--as", "otto", stdout=io.StringIO(), stderr=io.StringIO())
    run = exact(PurgeRun.objects.get(), sessions, before)
    assert str(failed.value).startswith(f"Purge #{run.pk} failed: ")
    told(str(failed.value), limited, LIMIT_SAID, STANDARD_TOKEN)
    assert run.status == "failed" and 40 < run.done < SESSIONS and run.error in str(failed.value)


@pytest.fixture
def pages_of_20(monkeypatch):
    """A review's pages of at most 20 keys, one script call each: on a busy machine the bridge's
    round trip can pass `BatchSizer.SLOW_LINK_S`, and pages of several calls would then end
    the review before the request that the bridge refuses."""
    monkeypatch.setattr(stream.BatchSizer, "MAX_CALLS_PER_TRIP", 1)
    return 20


def test_a_review_task_waits_out_a_429_and_resumes_from_its_checkpoint(lucia, limited, sessions, eager, pages_of_20,
                                                                      django_capture_on_commit_callbacks):
    before = sessions.info("commandstats")
    run = review.start_review(database=lucia, batch=pages_of_20)
    limited.limit_requests(6, refused=1)
    with django_capture_on_commit_callbacks(execute=True):  # the retry hands the part to a worker again
        review_database_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    # The pages read before the 429 are read again from the checkpoint: both readings billed.
    assert run.billed_commands == billed_since(sessions, before)
    assert run.keys_scanned == SESSIONS + 1 and run.findings["no_ttl"] == SESSIONS + 1  # every key once
    (part,) = run.node_runs.all()
    assert part.resumes == 1 and part.error == ""  # why it stopped is no longer the news


def test_a_review_task_ends_failed_with_the_429_when_it_lasts(viewer_client, lucia, limited, sessions, settings,
                                                             eager, pages_of_20, django_capture_on_commit_callbacks):
    settings.REVIEW_TASK_MAX_RETRIES = 1
    before = sessions.info("commandstats")
    run = review.start_review(database=lucia, batch=pages_of_20)
    limited.limit_requests(6)
    with django_capture_on_commit_callbacks(execute=True):
        review_database_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.billed_commands == billed_since(sessions, before)  # what the pages before the 429 cost
    told(run.error, limited, LIMIT_SAID, STANDARD_TOKEN)
    page = viewer_client.get(reverse("continuity:review_detail", args=[run.pk]))
    assert page.status_code == 200
    told(page.content.decode(), limited, LIMIT_SAID, STANDARD_TOKEN)


# --- Upstash's read-only token ---------------------------------------------------------------------
READ_ONLY_SAID = "may not run SCAN (ACL)"


def said_read_only(text, bridge):
    told(text, bridge, READ_ONLY_SAID, REST_READONLY_TOKEN)
    assert "read-only REST token reads known keys only" in text and "ACL RESTTOKEN" in text


@pytest.fixture
def read_only(over_rest, monkeypatch):
    """Switch `lucia` to the bridge's read-only token (`default_ro`: +@read -@dangerous, no SCAN)."""

    def switch():
        monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", REST_READONLY_TOKEN)
        keyspace.forget_clients()

    return switch


def test_a_read_only_token_ends_a_purge_task_failed_with_the_reason(operator_client, operator, lucia, over_rest,
                                                                    read_only, sessions):
    before = sessions.info("commandstats")
    run = queued(lucia, operator)  # previewed with the standard token
    read_only()
    assert purge_task.apply(args=[run.pk]).get() == {"run": run.pk, "status": "failed"}  # a refusal: no retry
    run.refresh_from_db()
    said_read_only(run.error, over_rest)
    assert run.billed_commands + run.preview_billed_commands == billed_since(sessions, before)
    assert run.done == 0 and sessions.dbsize() == SESSIONS + 1  # nothing deleted, no marker written
    page = operator_client.get(run.get_absolute_url())
    assert page.status_code == 200
    said_read_only(page.content.decode(), over_rest)


def test_a_read_only_token_ends_a_review_task_and_the_commands_with_the_reason(viewer_client, operator, lucia,
                                                                               over_rest, read_only, sessions, eager):
    read_only()
    run = review.start_review(database=lucia)
    review_database_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == "failed" and run.keys_scanned == 0
    said_read_only(run.error, over_rest)
    page = viewer_client.get(reverse("continuity:review_detail", args=[run.pk]))
    assert page.status_code == 200
    said_read_only(page.content.decode(), over_rest)
    with pytest.raises(CommandError) as refused:
        call_command("purge", "--database", "lucia", "--prefix", "lucia:session:", "--action", "delete", "--dry-run",
                     "--as", "otto", stdout=io.StringIO(), stderr=io.StringIO())
    said_read_only(str(refused.value), over_rest)


def test_a_read_only_token_is_told_on_the_pages_not_as_an_unreachable_redis(viewer_client, lucia, over_rest, read_only,
                                                                             sessions):
    read_only()
    browse = viewer_client.get(reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia%3Asession%3A")
    assert browse.status_code == 200
    said_read_only(browse.content.decode(), over_rest)
    assert "is unreachable" not in browse.content.decode()  # it answered: a PING it may not send is no outage
    health = viewer_client.get(reverse("healthz")).json()
    assert health["checks"]["monitored"]["lucia"]["ok"] is True
