"""The parts of a Redis Cluster review on workers, when things go wrong: the run cancelled
mid-review, Postgres stopped and restarted under a part's task (the test run's real
Postgres), and a real Celery worker process SIGKILLed mid-part. A real local 3-primary
cluster throughout; every test is transactional (workers and restarts need real commits)."""

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings as live_settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse
from django_celery_results.models import TaskResult

from continuity import demo
from continuity.models import ReviewNodeRun, ReviewRun
from continuity.operations import review, review_requests
from continuity.tasks.review import (FINISH_CLUSTER_REVIEW_TASK, finish_cluster_review_task, review_database_task,
                                    review_node_task)
from continuity.tests.clusters import parts_of
from continuity.tests.test_cluster_review import cluster_record, finished
from continuity.tests.test_review import expected_from_specs
from continuity.tests.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def static_spread(client, n, seed):
    """The generator's keyspace, no TTL short enough to expire during the test."""
    specs = [dataclasses.replace(s, ttl_seconds=max(s.ttl_seconds, 600)) if s.ttl_seconds else s
             for s in demo.lucia_keyspace(n, seed=seed, violation_rate=0.05)]
    demo.write_keyspace(client, specs)
    return specs


def scans(port):
    """SCANs the node ran (one per review batch, inside the scan script or not: the seeded
    `lucia` bills per command, so its cluster parts read with SCAN + per-key pipelines)."""
    with redis.Redis(port=port) as node:
        stats = node.info("commandstats")
    return stats.get("cmdstat_scan", {}).get("calls", 0)


def port_of(node):
    return int(node.address.rsplit(":", 1)[1])


# --- cancelling ----------------------------------------------------------------------------------
def test_a_cancelled_cluster_review_cancels_its_parts_and_their_tasks_stop(
        empty_broker, redis_cluster, cluster_keys, monkeypatch, settings, celery_worker, operator_client,
        viewer_client):
    settings.REVIEW_CHECKPOINT_BATCHES = 1
    settings.REVIEW_SCAN_COUNT = 20  # many small batches: the parts run for a while
    lucia = cluster_record("LUCIA_CLUSTER_URL", redis_cluster.url(0), monkeypatch)
    static_spread(cluster_keys, 30_000, seed=51)
    run, _ = review_requests.request_review(database=lucia)
    busy = wait_for(lambda: ReviewNodeRun.objects.filter(run=run, status="running", batches__gte=3).first(), 60,
                    "a part under way")

    response = operator_client.post(reverse("continuity:review_cancel", args=[run.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == "cancelled"
    # Every part not ended is cancelled at once; none stays "running".
    assert set(run.node_runs.values_list("status", flat=True)) <= {"cancelled", "succeeded"}
    assert ReviewNodeRun.objects.get(pk=busy.pk).status == "cancelled"

    # The chord's callback ran (every part's task returned) and left the run cancelled.
    callback = wait_for(lambda: TaskResult.objects.filter(task_name=FINISH_CLUSTER_REVIEW_TASK).first(), 60,
                        "the chord's callback")
    assert json.loads(callback.result) == "cancelled"
    # The parts' tasks stopped at their next checkpoint: no primary scans for the run any more.
    calls = [scans(port) for port in redis_cluster.ports]
    time.sleep(1.0)
    assert [scans(port) for port in redis_cluster.ports] == calls
    for node in run.node_runs.filter(status="cancelled"):  # stopped short of the end of their primary
        assert node.dbsize_before is None or node.keys_scanned < node.dbsize_before
    busy.refresh_from_db()
    assert busy.status == "cancelled" and 0 < busy.keys_scanned and busy.cursor != "0"
    run.refresh_from_db()
    assert (run.status, run.keys_scanned) == ("cancelled", 0) and not run.namespace_stats.exists()

    page = viewer_client.get(reverse("continuity:review_detail", args=[run.pk])).content.decode()
    statuses = [node.status for node in run.node_runs.all()]
    assert page.count('data-testid="node-status">cancelled<') == statuses.count("cancelled") >= 1
    assert 'data-testid="node-status">running<' not in page
    assert 'data-testid="review-status">cancelled<' in page


# --- Postgres going away under a part's task ------------------------------------------------------
@pytest.fixture
def cluster_run(redis_cluster, cluster_keys, monkeypatch, settings):
    """A cluster review with its three parts prepared, every batch checkpointed; the specs."""
    settings.REVIEW_CHECKPOINT_BATCHES = 1
    lucia = cluster_record("LUCIA_CLUSTER_URL", redis_cluster.url(0), monkeypatch)
    specs = static_spread(cluster_keys, 9000, seed=52)
    run = review.start_review(database=lucia, batch=5)
    run.claim(settings.REVIEW_LEASE_SECONDS)
    parts_of(run)
    return run, list(run.node_runs.all()), specs


def test_a_parts_task_rides_through_a_one_second_postgres_restart(cluster_run, outage, eager):
    run, nodes, specs = cluster_run
    findings, _, _ = expected_from_specs(specs)
    first = nodes[0]
    start = scans(port_of(first))
    outage.stop_when(lambda: scans(port_of(first)) >= start + 3, back_after=1.0)

    began = time.monotonic()
    assert review_node_task.apply(args=[first.pk]).get() == "succeeded"
    assert time.monotonic() - began >= 1.0 and not outage.down  # it waited for Postgres
    first.refresh_from_db()
    assert (first.status, first.resumes, first.error, first.cursor) == ("succeeded", 0, "", "0")
    for node in nodes[1:]:
        assert review_node_task.apply(args=[node.pk]).get() == "succeeded"
    assert finish_cluster_review_task.apply(args=[["succeeded"] * 3, run.pk]).get() == "succeeded"
    run.refresh_from_db()
    assert (run.status, run.keys_scanned, run.findings) == ("succeeded", 9000, findings)
    assert first.keys_scanned == run.node_runs.get(pk=first.pk).keys_scanned


def test_past_the_bound_a_part_stops_resumable_and_the_next_request_finishes_the_run(
        cluster_run, outage, eager, settings, caplog, monkeypatch):
    run, nodes, specs = cluster_run
    findings, per_namespace, _ = expected_from_specs(specs)
    settings.JOB_DB_OUTAGE_SECONDS = 1
    settings.REVIEW_TASK_MAX_RETRIES = 0
    first = nodes[0]
    start = scans(port_of(first))
    outage.stop_when(lambda: scans(port_of(first)) >= start + 3)  # and it stays down
    # The task's own logger, whatever an earlier worker did to logging's propagation.
    worker_log = logging.getLogger("continuity.tasks.review")
    monkeypatch.setattr(worker_log, "disabled", False)
    level = worker_log.level
    worker_log.setLevel(logging.WARNING)
    worker_log.addHandler(caplog.handler)
    try:
        assert review_node_task.apply(args=[first.pk]).get() == "interrupted"  # not failed
    finally:
        worker_log.removeHandler(caplog.handler)
        worker_log.setLevel(level)
    outage.join()
    outage.start()
    # The worker's log says which part stopped, why, and that it is resumable, not failed.
    assert (f"Review part {first.pk} ({first.address}) stopped resumable: {first.address}: Postgres was "
            f"unreachable for more than 1 s") in caplog.text
    assert "The part keeps its last checkpoint and is not failed" in caplog.text
    first.refresh_from_db()
    assert first.status == "running" and 0 < first.batches and first.cursor != "0"  # its last checkpoint
    assert 0 < first.keys_scanned < 3000 * 1.5
    # The other parts finish; the chord's callback leaves the run running, waiting for the first.
    for node in nodes[1:]:
        assert review_node_task.apply(args=[node.pk]).get() == "succeeded"
    assert finish_cluster_review_task.apply(args=[["interrupted", "succeeded", "succeeded"], run.pk]).get() == "running"
    run.refresh_from_db()
    assert run.status == "running" and run.error == ""

    # The next request (the schedule) finds the run quiet past its lease and resumes it: a new
    # chord of the part not ended, whose callback ends the run exactly.
    settings.REVIEW_LEASE_SECONDS = 0
    again, created = review_requests.request_review(database=run.database, triggered_by=ReviewRun.SCHEDULE)
    assert again.pk == run.pk and not created
    run.refresh_from_db()
    assert (run.status, run.keys_scanned, run.findings) == ("succeeded", 9000, findings)
    assert {s.label: s.keys for s in run.namespace_stats.all()} == per_namespace
    first.refresh_from_db()
    assert (first.status, first.resumes) == ("succeeded", 1)
    assert all(node.resumes == 0 for node in run.node_runs.exclude(pk=first.pk))


def test_ttl_review_on_a_cluster_stops_resumable_with_a_clear_message_and_resumes(
        redis_cluster, cluster_keys, monkeypatch, settings, outage):
    settings.REVIEW_CHECKPOINT_BATCHES = 1
    settings.JOB_DB_OUTAGE_SECONDS = 1
    cluster_record("LUCIA_CLUSTER_URL", redis_cluster.url(0), monkeypatch)
    specs = static_spread(cluster_keys, 9000, seed=53)
    findings, _, _ = expected_from_specs(specs)
    start = sum(scans(port) for port in redis_cluster.ports)
    outage.stop_when(lambda: sum(scans(port) for port in redis_cluster.ports) >= start + 5)

    with pytest.raises(CommandError) as stopped:
        call_command("ttl_review", "--database", "lucia", "--batch", "20")
    outage.join()
    outage.start()
    run = ReviewRun.objects.get()
    message = str(stopped.value)
    assert message.startswith(f"Review #{run.pk} of lucia stopped: Postgres was unreachable for more than 1 s")
    assert "Each primary keeps its own checkpoint and is not marked failed" in message
    assert "`manage.py ttl_review --database lucia` again" in message and "Redis" not in message
    assert run.status in ("queued", "running") and run.has_checkpoint()  # not failed: resumable

    settings.REVIEW_LEASE_SECONDS = 0
    call_command("ttl_review", "--database", "lucia")  # continues the same run, each part from its checkpoint
    run.refresh_from_db()
    assert (run.status, run.keys_scanned, run.findings) == ("succeeded", 9000, findings)
    assert ReviewRun.objects.count() == 1 and sum(node.resumes for node in run.node_runs.all()) == 1


# --- a real worker process killed mid-part -------------------------------------------------------
def _start_worker(redis_server, cluster_url):
    db = live_settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": redis_server.url(0), "CELERY_BROKER_URL": redis_server.url(1), "CACHE_URL": redis_server.url(2),
        "LUCIA_CLUSTER_URL": cluster_url,
        "REVIEW_CHECKPOINT_BATCHES": "2", "REVIEW_LEASE_SECONDS": "2", "DJANGO_DEBUG": "0",
    }
    command = [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool=prefork", "--concurrency=1",
               "--without-mingle", "--without-gossip", "--loglevel=WARNING"]
    return subprocess.Popen(command, env=env, cwd=live_settings.BASE_DIR, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(worker, sig=signal.SIGTERM):
    if worker.poll() is None:
        os.killpg(worker.pid, sig)
    try:
        worker.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(5)


def test_a_killed_worker_leaves_its_part_to_another_which_resumes_it_alone(
        empty_broker, redis_server, redis_cluster, cluster_keys, monkeypatch):
    lucia = cluster_record("LUCIA_CLUSTER_URL", redis_cluster.url(0), monkeypatch)
    specs = static_spread(cluster_keys, 60_000, seed=54)
    findings, per_namespace, foreign = expected_from_specs(specs)

    first = _start_worker(redis_server, redis_cluster.url(0))
    try:
        run = review.start_review(database=lucia, batch=50)
        review_database_task.delay(run.pk)

        def one_done_one_midway():
            nodes = list(ReviewNodeRun.objects.filter(run=run))
            done = [n for n in nodes if n.status == "succeeded"]
            midway = [n for n in nodes if n.status == "running" and n.batches >= 20]
            return (done[0], midway[0]) if done and midway else None

        done, midway = wait_for(one_done_one_midway, 90, "one part done and another midway", every=0.01)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        _stop(first, signal.SIGKILL)
    done.refresh_from_db()
    midway.refresh_from_db()
    assert done.status == "succeeded" and midway.status == "running" and midway.cursor != "0"
    done_calls, done_finished = scans(port_of(done)), done.finished_at

    killed_at = time.monotonic()
    second = _start_worker(redis_server, redis_cluster.url(0))  # it boots while the lease lapses
    time.sleep(max(0.0, 2.5 - (time.monotonic() - killed_at)))  # past the 2 s lease
    try:
        with override_settings(REVIEW_LEASE_SECONDS=2):
            review_requests.request_review(database=lucia, triggered_by=ReviewRun.SCHEDULE)
        end = wait_for(finished(run.pk), 120, "the resumed review")
    finally:
        _stop(second)
    assert (end.status, end.error, end.missing_nodes) == ("succeeded", "", [])
    assert (end.keys_scanned, end.foreign_keys, end.findings) == (60_000, foreign, findings)
    assert {s.label: s.keys for s in end.namespace_stats.all()} == per_namespace
    assert not end.keyspace_changed()
    parts = {node.pk: node for node in end.node_runs.all()}
    assert all(node.status == "succeeded" for node in parts.values())
    # The dead worker's part resumed from its checkpoint; the part already done was not redone.
    assert parts[midway.pk].resumes == 1
    assert (parts[done.pk].resumes, parts[done.pk].finished_at) == (0, done_finished)
    assert scans(port_of(done)) == done_calls
    assert sum(node.keys_scanned for node in parts.values()) == 60_000
