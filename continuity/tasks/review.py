"""Thin Celery tasks around `continuity.operations.review_requests`. The management command
`ttl_review` is the synchronous twin of the scheduled `review_all_databases_task`."""

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from continuity.keyspace.capabilities import is_transient
from continuity.models import ReviewRun
from continuity.operations import review
from continuity.operations.review_requests import REVIEW_TASK, request_review, review_and_alert
from dashboard.models import RedisDatabase

REVIEW_ALL_TASK = "continuity.review_all_databases"


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
        status = review_and_alert(database=run.database, run=run).status
    except review.ReviewBusy:
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


@shared_task(name=REVIEW_ALL_TASK, acks_late=True, soft_time_limit=240, time_limit=300)
def review_all_databases_task(sample=None):
    """The 'ttl review' beat schedules: queue a review of every database (of a random
    sample of `sample` keys each, for the frequent schedule)."""
    queued = []
    for database in RedisDatabase.objects.all():
        run, _ = request_review(database=database, triggered_by=ReviewRun.SCHEDULE, sample=sample)
        queued.append(run.pk)
    return queued
