import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from continuity import demo
from continuity.models import ReviewNodeRun, ReviewRun
from continuity.operations import review
from continuity.operations.review_requests import request_review
from continuity.tasks.review import REVIEW_ALL_TASK, review_all_databases_task, review_database_task
from dashboard.celery import app
from dashboard.models import RedisDatabase
from continuity.tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("transport")


def test_it_retries_then_records_the_failure_when_redis_is_down(lucia, monkeypatch):
    monkeypatch.setenv("DOWN_URL", "redis://127.0.0.1:1/0")
    down = RedisDatabase.objects.create(name="down", url_env="DOWN_URL")
    run = review.start_review(database=down)
    result = review_database_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == ReviewRun.FAILED
    attempts = review_database_task.max_retries + 1
    assert "unreachable" in run.error.lower() and f"Gave up after {attempts} attempts" in run.error
    assert run.finished_at is not None
    assert result.get() == ReviewRun.FAILED


def test_it_leaves_a_finished_run_alone(lucia, monitored):
    monitored.set(b"lucia:session:1", b"v")
    run = review.review_database(database=lucia).run
    monitored.set(b"lucia:session:2", b"v")
    assert review_database_task.apply(args=[run.pk]).get() == ReviewRun.SUCCEEDED
    run.refresh_from_db()
    assert run.keys_scanned == 1


def test_it_enqueues_the_review_after_commit(lucia, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run, created = request_review(database=lucia)
        again, created_again = request_review(database=lucia)
    assert created and not created_again and again.pk == run.pk
    assert len(callbacks) == 1  # the second request found the active run and queued nothing


def test_it_requeues_an_active_run_whose_worker_went_quiet(lucia, django_capture_on_commit_callbacks):
    run = review.start_review(database=lucia)
    ReviewRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again, created = request_review(database=lucia, triggered_by=ReviewRun.SCHEDULE)
    assert again.pk == run.pk and not created and len(callbacks) == 1


def _broker_messages():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        return [json.loads(raw) for raw in client.lrange("celery", 0, -1)]
    finally:
        client.close()


@pytest.mark.django_db(transaction=True)  # the scheduler closes and reopens DB connections
def test_it_ticks_beat_into_a_review_of_every_database(lucia, monitored):
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("celery")
    task = PeriodicTask.objects.get(name="ttl review")
    assert task.enabled and task.interval.every == 15 and task.interval.period == "minutes"
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now() - timedelta(hours=1))

    DatabaseScheduler(app=app).tick()

    sent = [m["headers"]["task"] for m in _broker_messages()]
    assert sent == [REVIEW_ALL_TASK]
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("celery")
    queued = review_all_databases_task()  # what the worker runs for that message
    assert [run.database.name for run in ReviewRun.objects.filter(pk__in=queued)] == ["lucia"]
    assert ReviewRun.objects.get().triggered_by == ReviewRun.SCHEDULE
    assert [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in _broker_messages()] == \
        [("continuity.review_database", f"({queued[0]},)")]


def _start_worker(redis_server):
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": redis_server.url(0), "CELERY_BROKER_URL": redis_server.url(1), "CACHE_URL": redis_server.url(2),
        "REVIEW_CHECKPOINT_BATCHES": "2", "REVIEW_LEASE_SECONDS": "2", "DJANGO_DEBUG": "0",
    }
    command = [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool=prefork", "--concurrency=1",
               "--without-mingle", "--without-gossip", "--loglevel=WARNING"]
    return subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)



@pytest.mark.django_db(transaction=True)
def test_it_resumes_after_a_real_worker_is_killed_mid_review(lucia, monitored, redis_server):
    redis.Redis.from_url(redis_server.url(1)).flushdb()
    # No TTL short enough to expire during the test: the keyspace must stay static.
    specs = (dataclasses.replace(s, ttl_seconds=max(s.ttl_seconds, 600)) if s.ttl_seconds else s
             for s in demo.lucia_keyspace(60_000, seed=21))
    demo.write_keyspace(monitored, specs)
    reference = review.review_database(database=lucia, persist=False)

    first = _start_worker(redis_server)
    try:
        run = review.start_review(database=lucia, batch=100)
        review_database_task.delay(run.pk)
        wait_for(lambda: ReviewNodeRun.objects.filter(run=run, batches__gte=20).exists(), 60, "a checkpoint")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    run.refresh_from_db()
    part = run.node_runs.get()  # a standalone server: one part, holding the checkpoint
    assert run.status == ReviewRun.RUNNING and part.cursor != "0" and part.keys_scanned < 60_000

    # The schedule's sweep finds the run quiet past its lease and enqueues it again (the new
    # worker boots meanwhile).
    killed_at = time.monotonic()
    second = _start_worker(redis_server)
    time.sleep(max(0.0, 2.5 - (time.monotonic() - killed_at)))
    try:
        with override_lease(2):
            request_review(database=lucia, triggered_by=ReviewRun.SCHEDULE)
        wait_for(lambda: ReviewRun.objects.filter(pk=run.pk, status=ReviewRun.SUCCEEDED).exists(), 90,
                  "the resumed review")
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        try:
            second.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
    run.refresh_from_db()
    resumed = review.result_from_run(run)
    assert run.resumes == 1
    assert resumed.keys_scanned == reference.keys_scanned == 60_000
    assert resumed.findings == reference.findings
    assert resumed.foreign_keys == reference.foreign_keys
    assert not run.keyspace_changed()
    # (TTL histograms are left out: remaining TTLs move between buckets as time passes.)
    assert [(r["prefix"], r["keys"], r["bytes"], r["findings"], r["top_keys"]) for r in resumed.namespaces] == \
        [(r["prefix"], r["keys"], r["bytes"], r["findings"], r["top_keys"]) for r in reference.namespaces]


def override_lease(seconds):
    from django.test import override_settings

    return override_settings(REVIEW_LEASE_SECONDS=seconds)


def test_it_seeds_a_sampled_review_every_15_minutes_and_an_exact_one_nightly(lucia):
    import json as _json

    sampled = PeriodicTask.objects.get(name="ttl review")
    exact = PeriodicTask.objects.get(name="ttl review (exact)")
    assert _json.loads(sampled.kwargs) == {"sample": settings.REVIEW_SAMPLE_SIZE} and sampled.interval.every == 15
    assert _json.loads(exact.kwargs or "{}") == {} and (exact.crontab.minute, exact.crontab.hour) == ("15", "2")


def test_it_turns_an_untouched_old_schedule_sampled_and_leaves_an_edited_one_alone(lucia, admin):
    import json as _json

    from continuity.operations import configuration
    from continuity import seed

    old = PeriodicTask.objects.get(name="ttl review")
    PeriodicTask.objects.filter(name="ttl review (exact)").delete()
    PeriodicTask.objects.filter(pk=old.pk).update(kwargs="{}")  # as seeded before sampled reviews
    seed.seed_schedules()
    assert _json.loads(PeriodicTask.objects.get(pk=old.pk).kwargs) == {"sample": settings.REVIEW_SAMPLE_SIZE}
    assert PeriodicTask.objects.filter(name="ttl review (exact)").exists()

    PeriodicTask.objects.filter(name="ttl review (exact)").delete()
    PeriodicTask.objects.filter(pk=old.pk).update(kwargs="{}")
    configuration.update_schedule(task=PeriodicTask.objects.get(pk=old.pk), enabled=True, interval=(5, "minutes"),
                                  actor=admin)
    seed.seed_schedules()
    edited = PeriodicTask.objects.get(pk=old.pk)
    assert edited.kwargs == "{}" and edited.interval.every == 5
    assert not PeriodicTask.objects.filter(name="ttl review (exact)").exists()
