"""Thin Celery tasks around `continuity.operations.review_requests`. The management command
`ttl_review` is the synchronous twin of the scheduled `review_all_databases_task`."""

import logging

from celery import chord, group, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from continuity.keyspace.capabilities import is_transient
from continuity.models import ReviewRun
from continuity.models import ReviewNodeRun
from continuity.operations import review, review_cluster
from continuity.operations.review_requests import REVIEW_TASK, alert, request_review, review_and_alert
from dashboard import postgres
from dashboard.models import RedisDatabase

REVIEW_ALL_TASK = "continuity.review_all_databases"
REVIEW_NODE_TASK = "continuity.review_node"
FINISH_CLUSTER_REVIEW_TASK = "continuity.finish_cluster_review"

log = logging.getLogger(__name__)


def backoff(retries):
    """Seconds before retry number `retries + 1`: 15 s, 30 s, 60 s… capped at 10 minutes."""
    return min(600, 15 * 2 ** retries)


@shared_task(bind=True, name=REVIEW_TASK, acks_late=True, max_retries=settings.REVIEW_TASK_MAX_RETRIES,
             soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT, time_limit=settings.CELERY_TASK_TIME_LIMIT)
def review_database_task(self, run_id):
    """Run (or continue) review `run_id`. Idempotent: a finished run is left alone, a run
    another worker holds is left to it, a run whose worker died resumes from its checkpoint."""
    run = ReviewRun.objects.select_related("database").filter(pk=run_id).first()
    if run is None or not run.is_active:
        return run.status if run else "missing"
    ReviewRun.objects.filter(pk=run.pk).update(task_id=self.request.id or "")
    try:
        status = review_and_alert(database=run.database, run=run, fan_out=fan_out).status
    except review.ReviewBusy:
        # A Redis Cluster run kept alive by some parts' checkpoints, with a part whose worker
        # died (or that was handed back): send that part's task again.
        stale = review_cluster.stale_parts(run)
        if stale:
            fan_out(run, stale)
            return "resumed"
        return "busy"
    except review.ReviewInterrupted as exc:
        if exc.postgres:  # never failed for it: the checkpoint stands and the run resumes
            if self.request.retries >= self.max_retries:
                return "interrupted"  # the next scheduled review re-queues it
            raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
        if not is_transient(exc.__cause__):  # a refusal (NOPERM, unknown command): retrying bills it again
            exc.run.mark_failed(exc.reason)
            return ReviewRun.FAILED
        if self.request.retries >= self.max_retries:
            exc.run.mark_failed(f"{exc.reason} Gave up after {self.request.retries + 1} attempts.")
            return ReviewRun.FAILED
        raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
    except SoftTimeLimitExceeded:
        run.mark_failed(f"Stopped at the time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s).")
        return ReviewRun.FAILED
    return status


def fan_out(run, nodes):
    """A Redis Cluster review: one `review_node_task` per primary not yet read, as a group,
    with `finish_cluster_review_task` as the chord's callback (it merges and ends the run).
    The result backend (django-celery-results) counts the chord's parts."""
    parts = [review_node_task.si(node.pk) for node in nodes]
    if not parts:
        finish_cluster_review_task.delay([], run.pk)
        return
    chord(group(parts), finish_cluster_review_task.s(run.pk)).apply_async()


@shared_task(bind=True, name=REVIEW_NODE_TASK, acks_late=True, max_retries=settings.REVIEW_TASK_MAX_RETRIES,
             soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT, time_limit=settings.CELERY_TASK_TIME_LIMIT)
def review_node_task(self, node_id):
    """Review one primary of a cluster review (a ReviewNodeRun). Idempotent: a part that
    ended is left alone, a part whose worker died resumes from its own checkpoint. Never
    raises (but to retry), so the chord's callback always runs: a primary that stays
    unreachable is marked failed and the run ends partial. Postgres away past
    JOB_DB_OUTAGE_SECONDS is retried with backoff and never fails the part: after the last
    retry it returns "interrupted", the part keeps its checkpoint, the callback leaves the
    run running, and the next review request of the database resumes it."""
    try:
        node = ReviewNodeRun.objects.filter(pk=node_id).first()
        if node is None:
            return "missing"
        status = review_cluster.review_node(node)
        if status in (ReviewNodeRun.SUCCEEDED, ReviewNodeRun.FAILED):
            _finish(node.run_id)  # the last part to end ends the run, chord or not
        return status
    except (postgres.PostgresAway, *postgres.GONE) as exc:  # before the part was claimed
        if self.request.retries >= settings.REVIEW_TASK_MAX_RETRIES:
            log.warning("Review part %s stopped: %s. It resumes at the next review request.", node_id,
                        postgres.describe(exc))
            return "interrupted"
        raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
    except review_cluster.NodeInterrupted as exc:
        if exc.postgres:
            if self.request.retries >= settings.REVIEW_TASK_MAX_RETRIES:
                log.warning("Review part %s (%s) stopped resumable: %s", node_id, exc.node.address, exc.reason)
                return "interrupted"
            raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
        if not exc.transient or self.request.retries >= settings.REVIEW_TASK_MAX_RETRIES:
            node.mark_failed(exc.reason if not exc.transient
                             else f"{exc.reason} Gave up after {self.request.retries + 1} attempts.")
            _finish(node.run_id)
            return ReviewNodeRun.FAILED
        raise self.retry(countdown=backoff(self.request.retries), exc=exc) from None
    except SoftTimeLimitExceeded:
        node.mark_failed(f"{node.address}: stopped at the time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s).")
        _finish(node.run_id)
        return ReviewNodeRun.FAILED


def _finish(run_id):
    """`review_cluster.finish` (a no-op while a part is queued or running, or once the run
    ended), and the alert when this call ended the run. Called by the chord's callback and by
    each part's task as it ends: a part resumed outside the first chord (its worker died, its
    task was sent again) still ends the run. The run (its status) or "interrupted"."""
    try:
        run = postgres.ride_through(lambda: ReviewRun.objects.filter(pk=run_id).first())
        if run is None or run.status != ReviewRun.RUNNING:  # ended already (a callback delivered twice, cancelled)
            return run.status if run else "missing"
        run = postgres.ride_through(lambda: review_cluster.finish(run))
    except postgres.PostgresAway:
        return "interrupted"
    if run.ended_here:  # once, whichever call ended it
        alert(run)
    return run.status


@shared_task(name=FINISH_CLUSTER_REVIEW_TASK, acks_late=True, soft_time_limit=240, time_limit=300)
def finish_cluster_review_task(node_statuses, run_id):
    """The chord's callback: merge the parts into the run, end it, and alert. While a part
    is still queued or running (stopped by a Postgres outage, or held by another worker) the
    run is left running: that part's task ends it, or the next request resumes it. Rides
    through a short Postgres outage; past it the run stays running and resumable."""
    return _finish(run_id)


@shared_task(name=REVIEW_ALL_TASK, acks_late=True, soft_time_limit=240, time_limit=300)
def review_all_databases_task(sample=None):
    """The 'ttl review' beat schedules: queue a review of every database (of a random
    sample of `sample` keys each, for the frequent schedule)."""
    queued = []
    for database in RedisDatabase.objects.all():
        run, _ = request_review(database=database, triggered_by=ReviewRun.SCHEDULE, sample=sample)
        queued.append(run.pk)
    return queued
