"""Starting TTL reviews: queue one for a worker (web button, beat schedule), or run one now
and send its alert (the worker's task and the `ttl_review` command, alike).

No dead ends: when the broker refuses the task, the queued run is recorded failed with the
reason (`dashboard.jobs.EnqueueRefused` carries the message to the page), and a run that
no worker took within JOB_NEVER_STARTED_SECONDS shows "never started" with a retry
(`retry_review`).

The review itself lives in `review`; the alert rule in `alerting`.
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from continuity.models import ReviewRun
from continuity.operations import alerting, review
from dashboard import jobs, roles

REVIEW_TASK = "continuity.review_database"  # continuity.tasks.review.review_database_task


def request_review(*, database, actor=None, triggered_by=ReviewRun.WEB, sample=None):
    """Queue a review of `database` (of a random sample of `sample` keys, when given) and
    enqueue its task when the transaction commits.
    Returns (run, created). When a review is already active it is returned; if its worker
    looks dead (no heartbeat within the lease), or a Redis Cluster run has a part no worker
    is on (`review.stale_parts`), its task is enqueued again so it resumes."""
    try:
        run = review.start_review(database=database, actor=actor, triggered_by=triggered_by, sample=sample)
    except review.ReviewBusy as busy:
        run = busy.run
        if _stale(run) or review.stale_parts(run):
            jobs.enqueue_on_commit(REVIEW_TASK, run.pk, on_refused=_refused(run))
        return run, False
    jobs.enqueue_on_commit(REVIEW_TASK, run.pk, on_refused=_refused(run))
    return run, True


def _refused(run):
    """The broker refused `run`'s task: a queued run is recorded failed with the reason (no
    task will ever pick it up); a running one keeps its checkpoint for the next request.
    Returns the operator's message."""
    def refused(reason):
        failed = ReviewRun.objects.filter(pk=run.pk, status=ReviewRun.QUEUED).update(
            status=ReviewRun.FAILED, error=f"Never started: {reason}.", finished_at=timezone.now(), claim_token="")
        outcome = ("It is recorded failed, so nothing waits in the queue" if failed
                   else "It keeps its checkpoint and resumes at the next request")
        return (f"Review #{run.pk} of {run.database.name} did not start: {reason}. {outcome}. Start it again once "
                "the broker is back (/healthz shows it).")
    return refused


def retry_review(*, run, actor):
    """Send again the task of a review that no worker started (`ReviewRun.never_started`).
    Refused (ValueError) for a run that started or ended; EnqueueRefused when the broker
    refuses again (the run is then recorded failed)."""
    roles.require_role(actor, roles.OPERATOR)
    if not run.never_started():
        raise ValueError(f"Review #{run.pk} is {run.status} and not waiting for a worker: nothing to retry.")
    jobs.enqueue_on_commit(REVIEW_TASK, run.pk, on_refused=_refused(run))
    return run


def _stale(run):
    lease = timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    seen = run.heartbeat_at or run.created_at
    return timezone.now() - seen > lease


def review_and_alert(*, database, run=None, actor=None, batch=None, triggered_by=ReviewRun.CLI, on_batch=None,
                     sample=None):
    """Run (or continue) a review of `database` here with `review.review_database`, then,
    when it
    succeeded, alert through the channels if its findings crossed the threshold
    (`alerting.alert_on_review`). Returns the ReviewResult; raises what the review raises
    (ReviewBusy, ReviewInterrupted)."""
    result = review.review_database(database=database, run=run, actor=actor, batch=batch, triggered_by=triggered_by,
                                    on_batch=on_batch, sample=sample)
    if result.run is not None:
        alert(result.run)
    return result


def alert(run):
    """The alert of a finished review: findings crossing the threshold when it succeeded;
    always for a partial one (a Redis Cluster primary not read)."""
    run = ReviewRun.objects.select_related("database").get(pk=run.pk)
    if run.status == ReviewRun.SUCCEEDED:
        return alerting.alert_on_review(run)
    if run.status == ReviewRun.PARTIAL:
        return alerting.alert_on_partial_review(run)
    return None
