"""Confirming and cancelling a purge: the operator's two decisions, each audited in the
transaction of the status change."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from continuity import keyspace
from continuity.models import PurgeRun
from continuity.operations.purge.common import PurgeRefused, audit_run
from continuity.operations.purge.targets import resolve_target
from dashboard import roles


def confirm_purge(*, run, confirmation, reason, request=None, actor=None, source=None) -> PurgeRun:
    """Queue a previewed run once the operator retyped its target and gave a reason.
    Refuses (PurgeRefused) on a mismatch, a missing reason, a non-operator, or when another
    purge of the same database is queued or running. Audited in the status change's
    transaction; the caller enqueues `purge_task` with `delay_on_commit`."""
    user = request.user if request is not None else actor
    roles.require_role(user, roles.OPERATOR)
    if run.status != PurgeRun.PREVIEWED:
        raise PurgeRefused(f"Purge #{run.pk} is {run.status}; only a previewed purge can be confirmed.")
    if (confirmation or "") != run.target_value:
        raise PurgeRefused("The confirmation does not match the target exactly; nothing was queued.")
    if not (reason or "").strip():
        raise PurgeRefused("Give a reason: it goes into the audit log with the purge.")
    if run.target_kind != PurgeRun.FINDING:  # namespaces may have changed since the preview
        resolve_target(run.database, run.target_kind, keyspace.decode_key(run.target_token))
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
        raise PurgeRefused(f"Another purge of {run.database.name} is already queued or running; "
                           "wait for it to finish or cancel it.") from None
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
                status=PurgeRun.CANCELLED, cancel_requested=True, finished_at=now, claim=None, heartbeat_at=None):
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
