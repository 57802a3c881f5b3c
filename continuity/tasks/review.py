"""Thin Celery tasks around `continuity.operations.review_requests`. The management command
`ttl_review` is the synchronous twin of the scheduled `review_all_databases_task`."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from continuity.keyspace.capabilities import is_transient
from continuity.models import ReviewNodeRun, ReviewRun
from continuity.operations import review
from continuity.operations.review_requests import REVIEW_TASK, alert, request_review
from continuity.tasks.retries import retry_or_give_up
from dashboard import jobs, postgres
from dashboard.models import RedisDatabase

REVIEW_ALL_TASK = "continuity.review_all_databases"
REVIEW_NODE_TASK = review.REVIEW_NODE_TASK
FINISH_CLUSTER_REVIEW_TASK = review.FINISH_TASK

log = logging.getLogger(__name__)


@shared_task(bind=True, name=REVIEW_TASK, acks_late=True, max_retries=settings.REVIEW_TASK_MAX_RETRIES,
             soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT, time_limit=settings.CELERY_TASK_TIME_LIMIT)
def review_database_task(self, run_id):
    """Run (or continue) review `run_id`: a run of one part (a standalone server) is read
    here; the parts of a cluster's run go to workers (`review.fan_out`). Idempotent: a
    finished run is left alone, a run another worker holds is left to it, a run whose worker
    died resumes from its parts' checkpoints."""
    run = ReviewRun.objects.select_related("database").filter(pk=run_id).first()
    if run is None or not run.is_active:
        return run.status if run else "missing"
    ReviewRun.objects.filter(pk=run.pk).update(task_id=self.request.id or "")
    try:
        parts = review.open_run(run)
    except review.ReviewBusy:
        # A run kept alive by some parts' checkpoints, with a part whose worker died (or that
        # was handed back): send that part's task again.
        stale = review.stale_parts(run)
        if stale:
            review.fan_out(run, stale)
            return "resumed"
        return "busy"
    except review.ReviewInterrupted as exc:
        transient = exc.postgres or is_transient(exc.__cause__)

        def give_up(ran_out):
            if exc.postgres:
                return "interrupted"  # never failed for it: the next scheduled review re-queues it
            exc.run.fail(f"{exc.reason} Gave up after {self.request.retries + 1} attempts." if ran_out
                         else exc.reason)
            return ReviewRun.FAILED

        return retry_or_give_up(self, exc, transient=transient, limit=settings.REVIEW_TASK_MAX_RETRIES,
                                give_up=give_up)
    if parts is None:  # it ended: before (a task delivered twice), or refused now
        run.refresh_from_db()
        return run.status
    if len(parts) == 1 and run.node_runs.count() == 1:  # nothing to spread: read it in this task
        review_part(self, parts[0].pk)
    else:
        review.fan_out(run, parts)
    run.refresh_from_db()
    return run.status


def review_part(task, part_id):
    """Review one part (a ReviewNodeRun) in `task`, then end the run if it was the last.
    Never raises but to retry (`retries.retry_or_give_up`), so a chord's callback always
    runs: a node that stays unreachable is marked failed and the run ends partial (or
    failed, when no node could be read). Postgres away past JOB_DB_OUTAGE_SECONDS is retried
    and never fails the part: after the last retry the part keeps its checkpoint, the run
    stays running, and the next review request of the database resumes it."""
    part = None
    try:
        part = ReviewNodeRun.objects.filter(pk=part_id).first()
        if part is None:
            return "missing"
        status = review.review_node(part)
        if status in (ReviewNodeRun.SUCCEEDED, ReviewNodeRun.FAILED):
            _finish(part.run_id)  # the last part to end ends the run, chord or not
        return status
    except (postgres.PostgresAway, *postgres.GONE, review.NodeInterrupted) as exc:
        away = not isinstance(exc, review.NodeInterrupted) or exc.postgres
        reason = exc.reason if isinstance(exc, review.NodeInterrupted) else postgres.describe_outage(exc)

        def give_up(ran_out):
            if away:
                if part is None:  # before it was claimed
                    log.warning("Review part %s stopped: %s. It resumes at the next review request.", part_id, reason)
                else:
                    log.warning("Review part %s (%s) stopped resumable: %s", part_id, part.address, reason)
                return "interrupted"
            part.fail(f"{reason} Gave up after {task.request.retries + 1} attempts." if ran_out else reason)
            _finish(part.run_id)
            return ReviewNodeRun.FAILED

        return retry_or_give_up(task, exc, transient=away or exc.transient, limit=settings.REVIEW_TASK_MAX_RETRIES,
                                give_up=give_up)
    except SoftTimeLimitExceeded:
        part.fail(f"{part.address}: stopped at the time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s).")
        _finish(part.run_id)
        return ReviewNodeRun.FAILED


@shared_task(bind=True, name=REVIEW_NODE_TASK, acks_late=True, max_retries=settings.REVIEW_TASK_MAX_RETRIES,
             soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT, time_limit=settings.CELERY_TASK_TIME_LIMIT)
def review_node_task(self, node_id):
    """Review one part of a run fanned out over several nodes (`review_part`)."""
    return review_part(self, node_id)


def _finish(run_id):
    """`review.finish` (a no-op while a part is queued or running, or once the run
    ended), and the alert when this call ended the run. Called by the chord's callback and by
    each part's task as it ends: a part resumed outside the first chord (its worker died, its
    task was sent again) still ends the run. The run (its status) or "interrupted"."""
    try:
        run = postgres.ride_through(lambda: ReviewRun.objects.filter(pk=run_id).first())
        if run is None or run.status != ReviewRun.RUNNING:  # ended already (a callback delivered twice, cancelled)
            return run.status if run else "missing"
        run = postgres.ride_through(lambda: review.finish(run))
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
    sample of `sample` keys each, for the frequent schedule). Returns the ids queued; a
    review the broker refused is recorded failed with the reason (and logged), never left
    queued, and the other databases are still queued."""
    queued = []
    for database in RedisDatabase.objects.all():
        try:
            run, _ = request_review(database=database, triggered_by=ReviewRun.SCHEDULE, sample=sample)
        except jobs.EnqueueRefused as exc:
            log.warning("%s", exc)
            continue
        queued.append(run.pk)
    return queued
