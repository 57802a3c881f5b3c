"""Purge tasks: retries and failure, scheduling, and a real worker killed mid-purge."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.db import connection

from continuity.models import Namespace, PurgeRun
from continuity.operations import purge
from continuity.tasks.purge import purge_task, resume_purges_task
from continuity.tasks.retries import backoff
from dashboard.devtools import localservers
from dashboard.models import AuditEntry, RedisDatabase
from continuity.tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("transport")

ROOT = Path(__file__).resolve().parents[2]


def fill(client, n, prefix=b"lucia:session:"):
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(prefix + f"{i:06d}".encode(), b"v")
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def queued(operator, **kwargs):
    preview = purge.preview_purge(actor=operator, **{"action": "delete", **kwargs})
    return purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="task test",
                               actor=operator, source="cli")


def test_it_runs_a_purge_task_idempotently(monitored, lucia, operator):
    fill(monitored, 300)
    run = queued(operator, database=lucia, kind="prefix", value=b"lucia:session:")
    assert purge_task.apply(args=[run.pk]).get()["done"] == 300
    # A second delivery of the same message changes nothing and counts nothing twice.
    assert purge_task.apply(args=[run.pk]).get()["status"] == "succeeded"
    run.refresh_from_db()
    assert (run.status, run.matched, run.done) == ("succeeded", 300, 300)
    assert AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).count() == 1


def test_it_retries_with_backoff_then_records_the_failure_when_redis_is_down(db, lucia, operator, settings,
                                                                           monkeypatch):
    port = localservers.free_port()
    monkeypatch.setenv("PURGE_DOWN_URL", f"redis://127.0.0.1:{port}/0")
    down = RedisDatabase.objects.create(name="down", url_env="PURGE_DOWN_URL", key_prefix="lucia:")
    Namespace.objects.create(database=down, name="session", prefix="lucia:session:", max_ttl_seconds=60)
    run = PurgeRun.objects.create(database=down, target_kind="prefix", target_value="lucia:session:",
                                  target_token="bHVjaWE6c2Vzc2lvbjo", match_pattern="lucia:session:*",
                                  status="queued", requested_by=operator, requested_label="otto", reason="r")
    settings.PURGE_TASK_MAX_RETRIES = 2
    attempts = []
    original = purge.execute_purge

    def counting(**kwargs):
        attempts.append(1)
        return original(**kwargs)

    monkeypatch.setattr(purge, "execute_purge", counting)
    purge_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert len(attempts) == 3
    assert run.status == "failed" and "unreachable" in run.error and "after 3 attempts" in run.error
    entry = AuditEntry.objects.get(action="purge.fail", target_id=str(run.pk))
    assert entry.after["status"] == "failed" and "unreachable" in entry.note
    assert [backoff(n) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_it_seeds_the_policy_purge_disabled_and_only_once(lucia):
    from django_celery_beat.models import PeriodicTask

    from continuity import seed

    policy = PeriodicTask.objects.get(name="policy purge")
    assert policy.task == "continuity.policy_purge" and policy.enabled is False
    PeriodicTask.objects.filter(pk=policy.pk).update(enabled=True)  # an admin enables it
    seed.seed_all()
    assert PeriodicTask.objects.get(name="policy purge").enabled is True
    assert PeriodicTask.objects.filter(name="resume stalled purges", enabled=True).count() == 1


def test_it_enqueues_stalled_purges_for_resume(monitored, lucia, operator, settings, django_capture_on_commit_callbacks):
    from django.utils import timezone

    fill(monitored, 50)
    run = queued(operator, database=lucia, kind="prefix", value=b"lucia:session:")
    PurgeRun.objects.filter(pk=run.pk).update(status="running", heartbeat_at=timezone.now() - timezone.timedelta(
        seconds=settings.PURGE_LEASE_SECONDS + 5))
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from dashboard.celery import app

    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):  # the resume is queued when the job commits
            assert resume_purges_task.apply().get() == [run.pk]
    finally:
        app.conf.task_always_eager = False
    run.refresh_from_db()
    assert (run.status, run.done, run.resumes) == ("succeeded", 50, 1)  # the resume job took it over


# --- a real worker, killed mid-purge --------------------------------------------------------
def _worker(env, log):
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool=prefork", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)



@pytest.mark.django_db(transaction=True)
def test_it_resumes_with_a_new_worker_after_one_is_killed_mid_purge(monitored, redis_server, operator, tmp_path):
    from continuity import seed

    seed.seed_all()
    lucia = RedisDatabase.objects.get(name="lucia")
    fill(monitored, 10000)
    fill(monitored, 150, prefix=b"lucia:focus:")
    survivors = {b"lucia:focus:" + f"{i:06d}".encode() for i in range(150)}
    broker = redis.Redis.from_url(redis_server.url(1))
    broker.flushdb()
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": redis_server.url(0), "CELERY_BROKER_URL": redis_server.url(1),
           "CACHE_URL": redis_server.url(2), "PURGE_LEASE_SECONDS": "2", "DJANGO_DEBUG": "0"}
    # 1,000 keys/s: the run takes ~10 s, so the kill below lands mid-purge on any machine.
    run = queued(operator, database=lucia, kind="prefix", value=b"lucia:session:", rate_cap=1000, batch_size=200)
    log_path = tmp_path / "worker.log"
    workers = []
    try:
        with open(log_path, "wb") as log:
            workers.append(_worker(env, log))
            purge_task.delay(run.pk)
            wait_for(lambda: PurgeRun.objects.get(pk=run.pk).done >= 1000, 60, "the first worker to make progress")
            os.killpg(workers[0].pid, signal.SIGKILL)
            workers[0].wait(10)
            killed = PurgeRun.objects.get(pk=run.pk)
            assert killed.status == "running" and 1000 <= killed.done < 10000
            left_at_kill = monitored.dbsize()
            # The resume runs uncapped: what is tested is that it resumes exactly, not its pace.
            PurgeRun.objects.filter(pk=run.pk).update(rate_cap=0)
            workers.append(_worker(env, log))
            # The resume check, sent once the dead worker's lease has lapsed (state, not a countdown).
            wait_for(lambda: run.pk in purge.stalled_purges(lease_seconds=2), 30, "the lease to lapse")
            resume_purges_task.delay()
            final = wait_for(lambda: (r := PurgeRun.objects.get(pk=run.pk)).is_finished and r, 90,
                          "the second worker to resume and finish")
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(20)
    assert left_at_kill > 150, log_path.read_text()[-3000:]
    # Deleting shrinks Redis's hash table, and SCAN may then return a key twice: the second
    # time it is already gone and counts as skipped. What was deleted is exact.
    assert (final.status, final.done, final.matched - final.skipped) == ("succeeded", 10000, 10000), \
        log_path.read_text()[-3000:]
    assert final.skipped <= 50
    assert final.resumes == 1  # the second worker took it over once
    assert set(monitored.scan_iter(count=1000)) == survivors
    assert AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).count() == 1
