"""Handing purges to the worker, and what happens when the broker refuses or no worker
takes them: never a dead end.

`enqueue_preview` and `enqueue_purge` queue the task when the transaction commits. When
the broker refuses it, a run that never started is recorded failed with the reason (a
preview: failed, unaudited like every dry run; a confirmed purge: failed and audited,
nothing touched), and `dashboard.jobs.EnqueueRefused` carries the operator's message to
the page or command. A stalled running purge handed back keeps its checkpoint. A run that
no worker took within JOB_NEVER_STARTED_SECONDS (`PurgeRun.never_started`) can be sent
again (`retry_purge`).
"""

from django.db import transaction

from continuity.models import PurgeRun
from continuity.operations.purge.common import PurgeRefused, audit_run
from continuity.operations.purge.execute import abandon_purge
from continuity.operations.purge.lifecycle import PURGE_TASK
from continuity.operations.purge.preview import PREVIEW_TASK, preview_refused
from dashboard import jobs, roles


def enqueue_preview(run):
    """Queue `run`'s preview for the worker when the transaction commits (EnqueueRefused
    when the broker refuses: the preview is then recorded failed)."""
    jobs.enqueue_on_commit(PREVIEW_TASK, run.pk, on_refused=preview_refused(run))


def enqueue_purge(run, *, resumed=False, source="web"):
    """Queue `run`'s execution when the transaction commits. When the broker refuses, a
    confirmed run that never started is recorded failed (audited; nothing was touched),
    while a `resumed` one (a stalled running purge) stays running with its checkpoint."""
    def refused(reason):
        if resumed:
            return (f"Purge #{run.pk} was not handed to a worker: {reason}. It stays running with its checkpoint; "
                    "resume it again once the broker is back (its counts stay exact).")
        abandon_purge(run_id=run.pk, error=f"Never started: {reason}.", source=source)
        return (f"Purge #{run.pk} was confirmed but did not start: {reason}. It is recorded failed (audited) and no "
                "key was touched; preview and confirm it again once the broker is back (/healthz shows it).")
    jobs.enqueue_on_commit(PURGE_TASK, run.pk, on_refused=refused)


def retry_purge(*, run, request=None, actor=None, source=None):
    """Send again the task of a run no worker started (`PurgeRun.never_started`): a
    preview's (not audited: a dry run) or a confirmed purge's (audited as purge.retry).
    PurgeRefused for any other run; EnqueueRefused when the broker refuses again."""
    user = request.user if request is not None else actor
    roles.require_role(user, roles.OPERATOR)
    run.refresh_from_db()
    if not run.never_started():
        raise PurgeRefused(f"Purge #{run.pk} is {run.status} and not waiting for a worker: nothing to retry.")
    with transaction.atomic():
        if run.status == PurgeRun.PREVIEWING:
            enqueue_preview(run)
        else:
            audit_run(run, "purge.retry", request=request, actor=None if request else user, source=source,
                      note="Sent to a worker again: none had started it.")
            enqueue_purge(run, source=source or "web")
    return run
