"""No dead ends when the task queue is down: the REAL broker — a redis-server of its own,
stopped and started again — through the pages, the beat task and a real Celery worker.
Starting a review or a purge while the broker is down answers a clear message (never a
500) and leaves nothing queued that no task will pick up; a run queued past
JOB_NEVER_STARTED_SECONDS shows "never started — retry", and the retry runs it."""

import os
import re
import shutil
import tempfile
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.urls import reverse
from django.utils import timezone

from continuity.models import PurgeRun, ReviewRun
from continuity.operations import purge
from continuity.tasks.review import review_all_databases_task
from continuity.tests.waiting import wait_for
from dashboard.celery import app
from dashboard.devtools import localservers
from dashboard.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


def _point(url):
    """Send the app's tasks to `url` from now on: its connection and producer pools were
    made for the previous broker (kombu keeps one pool per broker URL, reused later)."""
    app._pool = None
    app.amqp._producer_pool = None
    app.conf.broker_url = url


@pytest.fixture
def broker(settings):
    """A redis-server that is the Celery broker for this test alone, so that stopping it
    stops only the task queue (the monitored keyspace and the cache stay up)."""
    localservers.ensure("redis-server")
    datadir = tempfile.mkdtemp(prefix="dashboard-test-broker-")
    os.chmod(datadir, 0o755)
    server = localservers.LocalRedis(datadir, localservers.free_port()).start()
    before = app.conf.broker_url
    settings.CELERY_BROKER_URL = server.url(0)
    _point(server.url(0))
    yield server
    _point(before)
    server.stop()
    shutil.rmtree(datadir, ignore_errors=True)


def _worker():
    """A real Celery worker (in a thread) consuming from the test's broker."""
    return start_worker(app, perform_ping_check=False, shutdown_timeout=30)


def _queued(**filters):
    return list(ReviewRun.objects.filter(status__in=ReviewRun.ACTIVE, **filters)) + \
        list(PurgeRun.objects.filter(status__in=(*PurgeRun.ACTIVE, PurgeRun.PREVIEWING), **filters))


# --- the broker stopped -------------------------------------------------------------------------
def test_run_review_now_answers_a_clear_message_and_queues_nothing(operator_client, lucia, monitored, broker):
    broker.stop()
    response = operator_client.post(reverse("continuity:review_start", args=["lucia"]))
    body = response.content.decode()
    run = ReviewRun.objects.get()
    assert response.status_code == 503 and 'data-testid="job-refused"' in body
    assert f"Review #{run.pk} of lucia did not start: the task queue (Celery broker, CELERY_BROKER_URL) refused it" \
        in body
    assert "nothing waits in the queue" in body and str(broker.port) not in body
    assert run.status == "failed" and run.error.startswith("Never started: the task queue (Celery broker")
    # htmx (the jobs page's button): a client redirect to the jobs page, which shows the message.
    response = operator_client.post(reverse("continuity:review_start", args=["lucia"]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("continuity:job_list")
    jobs_page = operator_client.get(reverse("continuity:job_list")).content.decode()
    assert "did not start" in jobs_page and jobs_page.count('data-testid="review-status">failed') == 2
    assert not _queued()

    # The broker is back: the next "run review now" starts a new review, and a worker runs it.
    broker.start()  # the same address: the app reconnects by itself
    with _worker():
        response = operator_client.post(reverse("continuity:review_start", args=["lucia"]))
        fresh = ReviewRun.objects.latest("id")
        assert response.status_code == 302 and response["Location"] == reverse("continuity:review_detail",
                                                                                args=[fresh.pk])
        wait_for(lambda: ReviewRun.objects.get(pk=fresh.pk).status == "succeeded", 30, "the review")


def test_a_purge_preview_and_confirmation_fail_clearly_and_touch_nothing(operator_client, lucia, monitored,
                                                                         operator, broker):
    for i in range(5):
        monitored.set(f"lucia:session:{i}".encode(), b"v")
    broker.stop()
    response = operator_client.post(reverse("continuity:purge_new"), {
        "database": "lucia", "target_kind": "prefix", "target": "lucia:session:", "action": "delete"})
    body = response.content.decode()
    preview = PurgeRun.objects.get()
    assert response.status_code == 503 and f"The preview of purge #{preview.pk} did not start" in body
    assert preview.status == "failed" and preview.error.startswith("Never started:")

    previewed = purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:session:", action="delete",
                                    actor=operator).run  # counted here, as the command line does
    response = operator_client.post(reverse("continuity:purge_confirm", args=[previewed.pk]),
                                    {"confirmation": "lucia:session:", "reason": "tidy up"})
    body = response.content.decode()
    previewed.refresh_from_db()
    assert response.status_code == 503 and f"Purge #{previewed.pk} was confirmed but did not start" in body
    assert previewed.status == "failed" and previewed.error.startswith("Never started:")
    assert [entry.action for entry in AuditEntry.objects.filter(target_type="continuity.purgerun",
                                                               target_id=str(previewed.pk)).order_by("id")] == [
        "purge.queue", "purge.fail"]
    assert monitored.dbsize() == 5 and not _queued()


def test_the_beat_task_records_the_refusal_per_database(lucia, monitored, broker):
    broker.stop()
    assert review_all_databases_task.apply().get() == []  # nothing queued
    run = ReviewRun.objects.get()
    assert run.status == "failed" and run.triggered_by == "schedule" and not _queued()
    assert run.error.startswith("Never started: the task queue (Celery broker")


# --- queued, and no worker ever took it -------------------------------------------------------------
def test_a_review_queued_past_the_bound_shows_never_started_and_retry_runs_it(operator_client, lucia, monitored,
                                                                             broker, settings):
    response = operator_client.post(reverse("continuity:review_start", args=["lucia"]))
    run = ReviewRun.objects.get()
    assert response.status_code == 302 and run.status == "queued"  # the broker took it; no worker is running
    page = operator_client.get(reverse("continuity:review_detail", args=[run.pk])).content.decode()
    assert 'data-testid="never-started"' not in page  # not yet past the bound
    ReviewRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.JOB_NEVER_STARTED_SECONDS + 1))
    page = operator_client.get(reverse("continuity:review_detail", args=[run.pk])).content.decode()
    assert re.search(r'data-testid="never-started"[^>]*>never started — retry<', page)
    assert 'data-testid="retry-button"' in page
    assert "never started — retry" in operator_client.get(reverse("continuity:job_list")).content.decode()
    # "Run review now" again shows the same run, still marked, rather than a silent redirect.
    again = operator_client.post(reverse("continuity:review_start", args=["lucia"]), follow=True)
    assert 'data-testid="never-started-note"' in again.content.decode() and ReviewRun.objects.count() == 1

    broker.stop()  # a retry while the broker is down: failed with the reason, not queued
    response = operator_client.post(reverse("continuity:review_retry", args=[run.pk]))
    assert response.status_code == 503 and "did not start" in response.content.decode()
    run.refresh_from_db()
    assert run.status == "failed" and not _queued()


def test_retry_hands_a_never_started_purge_to_a_worker(operator_client, lucia, monitored, operator, broker, settings):
    for i in range(7):
        monitored.set(f"lucia:session:{i}".encode(), b"v")
    monitored.set(b"lucia:focus:1", b"v")
    previewed = purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:session:", action="delete",
                                    actor=operator).run
    operator_client.post(reverse("continuity:purge_confirm", args=[previewed.pk]),
                         {"confirmation": "lucia:session:", "reason": "tidy up"})
    previewed.refresh_from_db()
    assert previewed.status == "queued"
    broker.restart()  # without persistence: its queued task is lost, as in a broker restart
    PurgeRun.objects.filter(pk=previewed.pk).update(
        queued_at=timezone.now() - timedelta(seconds=settings.JOB_NEVER_STARTED_SECONDS + 1))
    page = operator_client.get(previewed.get_absolute_url()).content.decode()
    assert 'data-testid="never-started"' in page and "Nothing was touched" in page
    with _worker():
        response = operator_client.post(reverse("continuity:purge_retry", args=[previewed.pk]))
        assert response.status_code == 302
        wait_for(lambda: PurgeRun.objects.get(pk=previewed.pk).status == "succeeded", 30, "the purge")
    assert set(monitored.scan_iter()) == {b"lucia:focus:1"}
    assert AuditEntry.objects.filter(action="purge.retry", target_id=str(previewed.pk)).count() == 1
    # A run that started is not "never started": nothing to retry.
    response = operator_client.post(reverse("continuity:purge_retry", args=[previewed.pk]))
    assert response.status_code == 409 and "nothing to retry" in response.content.decode()
