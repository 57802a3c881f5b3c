"""Postgres going away mid-job (issue 11, item 10): the test run's own Postgres is
stopped and started again while a purge or review runs against the real redis-server.

These tests are transactional (a restart ends every open transaction) and always leave
Postgres running for the tests after them."""

import time

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError

from continuity.keyspace import purge as redis_purge
from continuity.keyspace.nodes import Node, address_of
from continuity.models import PurgeRun
from continuity.operations import purge
from continuity.operations.purge.common import namespace_policies
from dashboard import postgres
from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)

SESSION = b"lucia:session:"


def fill(client, n, prefix=SESSION):
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(prefix + f"{i:06d}".encode(), b"v")
    pipe.execute()


def queued(operator, database, **kwargs):
    preview = purge.preview_purge(database=database, kind="prefix", value=SESSION, actor=operator,
                                  **{"action": "delete", **kwargs})
    return purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="tidy up",
                               actor=operator, source="cli")


def session_keys(client):
    return sum(1 for _ in client.scan_iter(match=SESSION + b"*", count=1000))


# --- purges -------------------------------------------------------------------------------
def test_it_rides_a_purge_through_a_one_second_postgres_restart(monitored, lucia, operator, outage, settings):
    settings.PURGE_CHECKPOINT_SECONDS = 0  # a checkpoint after every batch
    fill(monitored, 3000)
    run = queued(operator, lucia, batch_size=200)
    calls = []

    def progress(live):
        calls.append(live.done)
        if len(calls) == 1:  # Postgres goes away after the first checkpoint, for about a second
            outage.stop()
            outage.start_after(1.0)

    started = time.monotonic()
    result = purge.execute_purge(run_id=run.pk, progress=progress)
    assert time.monotonic() - started >= 1.0  # it did wait for Postgres
    assert not outage.down

    # Exactly what Redis deleted. (SCAN may return a key twice once deletions shrink the
    # table: such a key is matched again and skipped, never counted as deleted twice.)
    assert result.status == PurgeRun.SUCCEEDED and result.done == 3000
    assert result.matched == 3000 + result.skipped
    assert session_keys(monitored) == 0 and monitored.dbsize() == 0  # the marker is gone too
    assert len(calls) > 2  # checkpoints went on after the restart
    run.refresh_from_db()
    assert (run.status, run.done, run.skipped, run.claim_token) == (PurgeRun.SUCCEEDED, 3000, result.skipped, "")
    finish = AuditEntry.objects.get(action="purge.finish")
    assert finish.after["deleted"] == 3000 and finish.after["matched"] == run.matched


@pytest.mark.parametrize("entry", ["cli", "task"])
def test_a_purge_stops_resumable_past_the_outage_bound_and_resumes_exactly(
        monitored, lucia, operator, outage, settings, entry, eager):
    settings.PURGE_CHECKPOINT_SECONDS = 0
    settings.JOB_DB_OUTAGE_SECONDS = 1
    settings.PURGE_BATCH_SIZE = 100
    fill(monitored, 3000)
    # Postgres stops right after the first acting batch (its marker appears in Redis).
    outage.stop_when(lambda: next(monitored.scan_iter(match=redis_purge.MARKER_PREFIX + b"*"), None) is not None)

    if entry == "cli":
        with pytest.raises(CommandError) as stopped:
            call_command("purge", "--action", "delete",
                         "--database", "lucia", "--prefix", "lucia:session:", "--reason", "tidy up",
                         "--yes", "--as", operator.username, "--rate-cap", "600")
        message = str(stopped.value)
    else:
        from continuity.tasks.purge import purge_task

        run = queued(operator, lucia, rate_cap=600)
        outcome = purge_task.apply(args=[run.pk]).get()
        assert outcome["status"] == "running"
        assert outcome["stopped"].startswith("Postgres was unreachable for more than 1 s")
        message = None
    outage.join()
    outage.start()

    run = PurgeRun.objects.get()
    left = session_keys(monitored)
    deleted = 3000 - left
    assert 0 < deleted < 3000  # stopped mid-run
    progress = redis_purge.read_marker(one(monitored), run.pk)
    assert progress.done == deleted  # Redis's own count of what it deleted
    assert run.status == PurgeRun.RUNNING and not run.error  # not failed: resumable
    assert not AuditEntry.objects.filter(action="purge.fail").exists()
    if message is not None:  # the CLI says which run, how far it got and how it resumes
        assert message.startswith(f"Purge #{run.pk} of lucia stopped: Postgres was unreachable for more than 1 s")
        assert f"and deleted {deleted:,} (skipped {progress.skipped:,})" in message
        assert "'resume stalled purges' job takes it within PURGE_LEASE_SECONDS (60 s)" in message
        assert "`manage.py resume_purges`" in message and "Redis error" not in message

    settings.PURGE_LEASE_SECONDS = 0
    settings.PURGE_RATE_CAP = 0
    PurgeRun.objects.filter(pk=run.pk).update(rate_cap=0)
    call_command("resume_purges")
    run.refresh_from_db()
    assert (run.status, run.done) == (PurgeRun.SUCCEEDED, 3000) and run.matched == 3000 + run.skipped
    assert session_keys(monitored) == 0 and monitored.dbsize() == 0  # marker deleted
    finish = AuditEntry.objects.get(action="purge.finish")
    assert finish.after["deleted"] == 3000 and finish.after["matched"] == run.matched


def one(client):
    """The one node of a standalone server, as a job sees it."""
    return Node(address_of(client), client)


def _act(client, run, keys, page, totals, cursor):
    """One acting page exactly as the engine sends it (the node's marker written with it)."""
    policies = namespace_policies(run.database)
    node = one(client)
    progress = redis_purge.Progress(redis_purge.marker_key(node, run.pk),
                                    redis_purge.marker_head(page, cursor, totals[2] + len(keys)), totals[0], totals[1],
                                    totals[3])
    return redis_purge.act(node, keys, action="delete", policies=[policies.for_key(k) for k in keys],
                           progress=progress)


def _running_with_unsaved_batches(monitored, lucia, operator):
    """A running purge that deleted 200 keys in two batches after its last checkpoint
    (which still says 0): where a worker stands when Postgres goes away."""
    fill(monitored, 300)
    run = queued(operator, lucia)
    run.claim(60)
    keys = sorted(monitored.scan_iter(match=SESSION + b"*", count=1000))
    first = _act(monitored, run, keys[:100], 1, (0, 0, 0, 0), "17")
    _act(monitored, run, keys[100:200], 2, (100, 0, 100, first.billed), "42")
    run.refresh_from_db()
    assert run.done == 0 and session_keys(monitored) == 100
    return run


def test_a_failed_purge_records_what_redis_deleted_and_leaves_no_marker(monitored, lucia, operator):
    run = _running_with_unsaved_batches(monitored, lucia, operator)
    purge.fail_purge(run_id=run.pk, error="Redis is unreachable: gone")
    run.refresh_from_db()
    assert (run.status, run.matched, run.done, run.batches) == (PurgeRun.FAILED, 200, 200, 2)
    assert run.node_cursors == {address_of(monitored): "42"}
    entry = AuditEntry.objects.get(action="purge.fail")
    assert entry.after["deleted"] == 200 and entry.after["matched"] == 200
    assert not monitored.exists(redis_purge.marker_key(one(monitored), run.pk))
    assert monitored.dbsize() == 100  # the 100 keys never reached, nothing else


def test_a_cancelled_resumed_purge_records_what_redis_deleted_and_leaves_no_marker(monitored, lucia, operator):
    run = _running_with_unsaved_batches(monitored, lucia, operator)
    PurgeRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    result = purge.execute_purge(run_id=run.pk, lease_seconds=0)  # the resume job takes it over
    assert (result.status, result.done, result.resumed) == (PurgeRun.CANCELLED, 200, True)
    entry = AuditEntry.objects.get(action="purge.cancel")
    assert entry.after["deleted"] == 200
    assert not monitored.exists(redis_purge.marker_key(one(monitored), run.pk)) and monitored.dbsize() == 100


def test_errors_name_postgres_not_redis():
    error = OperationalError("terminating connection due to administrator command\nSSL SYSCALL error")
    assert purge.describe_failure(error) == ("Postgres is unreachable: terminating connection due to "
                                             "administrator command")
    away = postgres.PostgresAway(30, error)
    assert purge.describe_failure(away) == ("Postgres was unreachable for more than 30 s (terminating "
                                            "connection due to administrator command)")
    assert purge.describe_failure(ValueError("x")) == "ValueError: x"


def test_ride_through_gives_up_after_the_bound_with_backoff(settings):
    settings.JOB_DB_OUTAGE_SECONDS = 1
    now, slept, tries = [0.0], [], []

    def sleep(seconds):
        slept.append(round(seconds, 3))
        now[0] += seconds

    def call():
        tries.append(now[0])
        raise OperationalError("connection refused")

    with pytest.raises(postgres.PostgresAway, match="more than 1 s"):
        postgres.ride_through(call, sleep=sleep, clock=lambda: now[0])
    assert slept == [0.2, 0.4, 0.4]  # 0.2 s doubling, cut at the bound
    assert len(tries) == 4


# --- reviews ------------------------------------------------------------------------------
def _stop_after_first_checkpoint(outage, *, restart_after=None):
    """on_batch: Postgres stops after the first batch was checkpointed (every batch is)."""
    calls = []

    def on_batch(tally):
        calls.append(tally.keys_scanned)
        if len(calls) == 2:
            outage.stop()
            if restart_after is not None:
                outage.start_after(restart_after)

    return on_batch, calls


def test_it_rides_a_review_through_a_one_second_postgres_restart(monitored, lucia, outage, settings):
    from continuity.models import ReviewRun
    from continuity.operations import review

    settings.REVIEW_CHECKPOINT_BATCHES = 1
    fill(monitored, 3000)
    on_batch, calls = _stop_after_first_checkpoint(outage, restart_after=1.0)
    result = review.review_database(database=lucia, batch=100, on_batch=on_batch)
    assert not outage.down and len(calls) > 2
    assert result.status == ReviewRun.SUCCEEDED and result.keys_scanned == 3000
    run = ReviewRun.objects.get()
    assert (run.status, run.keys_scanned, run.resumes, run.error) == (ReviewRun.SUCCEEDED, 3000, 0, "")


def test_a_review_stops_resumable_past_the_outage_bound_and_the_command_resumes_it(
        monitored, lucia, outage, settings):
    from continuity.models import ReviewRun
    from continuity.operations import review

    settings.REVIEW_CHECKPOINT_BATCHES = 1
    settings.JOB_DB_OUTAGE_SECONDS = 1
    fill(monitored, 3000)
    on_batch, _ = _stop_after_first_checkpoint(outage)
    with pytest.raises(review.ReviewInterrupted) as stopped:
        review.review_database(database=lucia, batch=100, on_batch=on_batch)
    outage.start()
    assert stopped.value.postgres
    assert stopped.value.reason.startswith("Postgres was unreachable for more than 1 s")
    run = ReviewRun.objects.get()
    assert run.status == ReviewRun.RUNNING and run.error == ""  # not failed; its lease lapses
    assert 0 < run.node_runs.get().keys_scanned < 3000  # its part's last checkpoint before Postgres left
    assert stopped.value.resumable_message().startswith(
        f"Review #{run.pk} of lucia stopped: Postgres was unreachable for more than 1 s")
    assert "`manage.py ttl_review --database lucia` again" in stopped.value.resumable_message()

    settings.REVIEW_LEASE_SECONDS = 0
    call_command("ttl_review", "--database", "lucia")  # continues the same run from its checkpoint
    run.refresh_from_db()
    assert (run.status, run.keys_scanned, run.resumes) == (ReviewRun.SUCCEEDED, 3000, 1)
    assert ReviewRun.objects.count() == 1


# --- pages --------------------------------------------------------------------------------
def test_pages_answer_a_plain_503_while_postgres_is_down_and_healthz_keeps_its_json(operator_client, outage,
                                                                                       settings):
    import json

    from django.test import Client

    operator_client.raise_request_exception = False  # as a real server: the response, not the exception
    anon = Client(raise_request_exception=False)
    assert operator_client.get("/").status_code == 200
    outage.stop()
    signing_in = {"username": "otto", "password": "correct horse battery staple"}
    for method, client, path in (("get", operator_client, "/"), ("get", operator_client, "/keyspace/jobs/"),
                                 ("post", anon, "/accounts/login/")):
        response = getattr(client, method)(path, signing_in) if method == "post" else client.get(path)
        body = response.content.decode()
        assert response.status_code == 503, path
        assert response["Content-Type"].startswith("text/html") and response["Retry-After"] == "10"
        assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY  # the 503 too
        assert response["X-Frame-Options"] == "DENY" and response["Permissions-Policy"] == settings.PERMISSIONS_POLICY
        assert "The dashboard's database (Postgres) is unavailable." in body
        assert "Traceback" not in body and "OperationalError" not in body
    settings.DEBUG = True  # `make run`: still the plain page, not Django's technical 500
    debug = operator_client.get("/")
    assert debug.status_code == 503 and "Traceback" not in debug.content.decode()
    settings.DEBUG = False
    health = anon.get("/healthz")
    assert health.status_code == 503
    assert json.loads(health.content) == {"status": "down", "checks": {
        "postgres": "down", "broker": "up", "cache": "up", "celery": "up", "monitored": "up"}}
    outage.start()
    assert operator_client.get("/").status_code == 200


# --- the scenario: `manage.py purge` in its own process -----------------------------
@pytest.mark.parametrize("outage_seconds", [1.0, None])
def test_a_cli_purge_process_through_a_postgres_restart(monitored, lucia, operator, outage, redis_server,
                                                          outage_seconds):
    """A real `manage.py purge` process; Postgres stops after its first acting batch and
    comes back after a second (ridden through), or only after the command has given up
    (JOB_DB_OUTAGE_SECONDS=1): a clear message, exit 1, no traceback, resumable."""
    import os
    import subprocess
    import sys

    from django.conf import settings as live
    from django.db import connection

    from dashboard import dbroles

    fill(monitored, 3000)
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{dbroles.APP}@127.0.0.1:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": redis_server.url(0), "CELERY_BROKER_URL": redis_server.url(1),
           "CACHE_URL": redis_server.url(2), "DJANGO_DEBUG": "0", "DJANGO_HTTPS": "0",
           "DJANGO_SECRET_KEY": live.SECRET_KEY, "PURGE_CHECKPOINT_SECONDS": "0", "PURGE_BATCH_SIZE": "100",
           "JOB_DB_OUTAGE_SECONDS": "30" if outage_seconds else "1"}
    outage.stop_when(lambda: next(monitored.scan_iter(match=redis_purge.MARKER_PREFIX + b"*"), None) is not None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "purge", "--action", "delete",
         "--database", "lucia", "--prefix", "lucia:session:",
         "--reason", "tidy up", "--yes", "--as", operator.username, "--rate-cap", "600"],
        cwd=live.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if outage_seconds:
        outage.threads[-1].join(timeout=30)  # stopped after the first batch: back a second later
        assert outage.down
        outage.start_after(outage_seconds)
    stdout, stderr = process.communicate(timeout=120)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    outage.join()
    outage.start()
    run = PurgeRun.objects.get()
    assert "Traceback" not in done.stderr
    if outage_seconds:
        assert done.returncode == 0, done.stderr
        assert f"Purge #{run.pk} succeeded: matched {run.matched}, deleted 3000, skipped {run.skipped}." in done.stdout
    else:
        deleted = 3000 - session_keys(monitored)
        assert done.returncode == 1 and 0 < deleted < 3000
        assert (f"CommandError: Purge #{run.pk} of lucia stopped: Postgres was unreachable for more than 1 s"
                in done.stderr)
        progress = redis_purge.read_marker(one(monitored), run.pk)
        assert progress.done == deleted
        assert f"deleted {deleted:,} (skipped {progress.skipped:,})" in done.stderr
        assert "Redis error" not in done.stderr
        assert run.status == PurgeRun.RUNNING
        PurgeRun.objects.filter(pk=run.pk).update(rate_cap=0)
        purge.execute_purge(run_id=run.pk, lease_seconds=0)  # what the resume job does
    run.refresh_from_db()
    assert (run.status, run.done) == (PurgeRun.SUCCEEDED, 3000) and run.matched == 3000 + run.skipped
    assert AuditEntry.objects.get(action="purge.finish").after["deleted"] == 3000
    assert monitored.dbsize() == 0  # every key, and the marker
