"""Confirming and cancelling a purge: the operator's two decisions, each audited in the
transaction of the status change."""

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from continuity.models import PurgeRun
from continuity.operations.purge.common import PurgeRefused, audit_run
from continuity.operations.purge.targets import check_keyspace, run_heads
from dashboard import roles

PURGE_TASK = "continuity.purge"  # continuity.tasks.purge.purge_task: the caller enqueues a confirmed run


def confirm_purge(*, run, confirmation, reason, request=None, actor=None, source=None) -> PurgeRun:
    """Queue a previewed run once the operator retyped its target and gave a reason.
    Refuses (PurgeRefused) on a mismatch, a missing reason, a non-operator, or when another
    purge of the same database is queued or running. Audited in the status change's
    transaction; the caller enqueues PURGE_TASK (`dashboard.jobs.enqueue_on_commit`) or runs
    `execute_purge` itself (the command line)."""
    user = request.user if request is not None else actor
    roles.require_role(user, roles.OPERATOR)
    if run.status != PurgeRun.PREVIEWED:
        raise PurgeRefused(f"Purge #{run.pk} is {run.status}; only a previewed purge can be confirmed.")
    if (confirmation or "") != run.target_value:
        raise PurgeRefused("The confirmation does not match the target exactly; nothing was queued.")
    if not (reason or "").strip():
        raise PurgeRefused("Give a reason: it goes into the audit log with the purge.")
    check_keyspace(run.database, run_heads(run))  # the records may have changed since the preview
    try:
        with transaction.atomic():
            updated = PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.PREVIEWED).update(
                status=PurgeRun.QUEUED, reason=reason.strip(), queued_at=timezone.now(),
                requested_by=user, requested_label=user.get_username())
            if not updated:
                raise PurgeRefused(f"Purge #{run.pk} was confirmed or cancelled meanwhile.")
            run.refresh_from_db()
            audit_run(run, "purge.queue", request=request, actor=None if request else user, source=source)
    except IntegrityError:
        blocking = blocking_run(run.database)
        detail = describe_blocking(blocking) if blocking else "wait for it to finish or cancel it."
        raise PurgeRefused(f"Another purge of {run.database.name} is already queued or running. {detail}") from None
    return run


def cancel_purge(*, run, request=None, actor=None, source=None) -> PurgeRun:
    """Ask a queued or running purge to stop between batches (audited). A queued run that
    no worker has started is cancelled at once. A preview is cancelled at once too (its
    worker stops at its next progress save); a dry run touched nothing, so it is not
    audited."""
    user = request.user if request is not None else actor
    roles.require_role(user, roles.OPERATOR)
    with transaction.atomic():
        now = timezone.now()
        if PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.PREVIEWING).update(
                status=PurgeRun.CANCELLED, cancel_requested=True, finished_at=now, claim_token="", heartbeat_at=None):
            run.refresh_from_db()
            return run
        if PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.QUEUED).update(
                status=PurgeRun.CANCELLED, cancel_requested=True, finished_at=now):
            run.refresh_from_db()
            audit_run(run, "purge.cancel", request=request, actor=None if request else user, source=source)
            return run
        if not PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.RUNNING).update(cancel_requested=True):
            raise PurgeRefused(f"Purge #{run.pk} is {run.status}; there is nothing to cancel.")
        run.refresh_from_db()
        audit_run(run, "purge.cancel_request", request=request, actor=None if request else user, source=source)
    return run


def blocking_run(database):
    """The queued or running purge of `database` that a new one would wait for, or None."""
    return PurgeRun.objects.for_database(database).active().select_related("database").first()


def is_stalled(run, lease_seconds=None):
    """True when a running purge's worker stopped checkpointing (killed, lost): resumable."""
    lease = settings.PURGE_LEASE_SECONDS if lease_seconds is None else lease_seconds
    return PurgeRun.objects.stalled(lease).filter(pk=run.pk).exists()


def describe_blocking(run):
    """What an operator needs to know about the purge in the way, and what to do next."""
    where = (f"Purge #{run.pk} of {run.database.name} ({run.action} {run.target_value}) is {run.status}: "
             f"matched {run.matched:,}, {run.done_label} {run.done:,}, skipped {run.skipped:,}")
    if run.status == PurgeRun.RUNNING and is_stalled(run):
        seen = (f"its last checkpoint was {int((timezone.now() - run.heartbeat_at).total_seconds())} s ago"
                if run.heartbeat_at else "its worker let go of it")
        return (f"{where}; {seen}, so its worker looks dead. Resume it where it stopped: "
                f"`manage.py purge --database {run.database.name} --resume {run.pk}` or the Resume button on "
                f"{run.get_absolute_url()} (the resume job also takes it within {settings.PURGE_LEASE_SECONDS} s). "
                "Its counts stay exact.")
    return f"{where}. Wait for it to finish, or cancel it on {run.get_absolute_url()}; nothing was scanned."


def resume_purge(*, run, request=None, actor=None, source=None) -> PurgeRun:
    """Hand a stalled running purge to a worker again (audited as purge.resume); the worker
    continues from the progress marker, so nothing is counted twice. Refused for a run that
    is not running or whose worker still checkpoints."""
    user = request.user if request is not None else actor
    roles.require_role(user, roles.OPERATOR)
    run.refresh_from_db()
    if run.status != PurgeRun.RUNNING:
        raise PurgeRefused(f"Purge #{run.pk} is {run.status}; only a stalled running purge can be resumed.")
    if not is_stalled(run):
        raise PurgeRefused(f"Purge #{run.pk} is still checkpointing: its worker is alive. Wait, or cancel it.")
    with transaction.atomic():
        audit_run(run, "purge.resume", request=request, actor=None if request else user, source=source,
                  note=f"Resumed at matched {run.matched}, {run.done_label} {run.done}")
    return run
