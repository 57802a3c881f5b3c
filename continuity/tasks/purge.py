"""Purge tasks: thin and idempotent; the work is `continuity.operations.purge`."""

import logging

import redis
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready
from django.conf import settings

from continuity import keyspace
from continuity.keyspace.capabilities import is_transient
from continuity.operations import purge
from continuity.tasks.retries import backoff, retry_or_give_up
from dashboard import jobs, postgres
from dashboard.models import RedisDatabase

log = logging.getLogger(__name__)
PURGE_TASK = purge.PURGE_TASK
POLICY_TASK, RESUME_TASK = "continuity.policy_purge", "continuity.resume_purges"
CLEANUP_TASK = "continuity.clean_up_previews"


@shared_task(bind=True, name=PURGE_TASK, acks_late=True, max_retries=None, soft_time_limit=3300, time_limit=3600)
def purge_task(self, run_id):
    """Execute (or resume) purge `run_id`. A finished run, or one another worker holds, is
    left alone. Redis down: retry with backoff, then record the failure on the run.
    Postgres down: never a failure (it could not be recorded, and the run is resumable):
    a long outage leaves the run running for the resume job; before the run started, retry."""
    try:
        result = purge.execute_purge(run_id=run_id)
    except purge.PurgeStopped as exc:
        log.warning("%s", exc)
        return {"run": run_id, "status": "running", "stopped": exc.reason}
    except postgres.GONE as exc:  # before the claim: nothing ran
        log.warning("purge #%s: %s; retrying", run_id, postgres.describe_outage(exc))
        raise self.retry(countdown=backoff(self.request.retries), max_retries=None) from None
    except keyspace.NotConfigured as exc:
        purge.fail_purge(run_id=run_id, error=keyspace.describe_error(exc))
        return {"run": run_id, "status": "failed"}
    except SoftTimeLimitExceeded:
        # The checkpoint is safe: continue in a fresh task instead of failing the purge.
        raise self.retry(countdown=1, max_retries=None) from None
    except redis.RedisError as exc:
        def give_up(ran_out):
            purge.fail_purge(run_id=run_id, error=f"{keyspace.describe_error(exc)} (gave up after "
                                                  f"{self.request.retries + 1} attempts)" if ran_out
                             else keyspace.describe_error(exc))
            return {"run": run_id, "status": "failed"}

        return retry_or_give_up(self, exc, transient=is_transient(exc), limit=settings.PURGE_TASK_MAX_RETRIES,
                                give_up=give_up)
    except purge.PurgeRefused as exc:
        purge.fail_purge(run_id=run_id, error=str(exc))
        return {"run": run_id, "status": "failed"}
    except Exception as exc:
        purge.fail_purge(run_id=run_id, error=purge.describe_failure(exc))
        raise
    return {"run": run_id, "status": result.status, "matched": result.matched, "done": result.done,
            "skipped": result.skipped}


@shared_task(bind=True, name=purge.PREVIEW_TASK, acks_late=True, max_retries=None, soft_time_limit=3300,
             time_limit=3600)
def preview_purge_task(self, run_id):
    """Run the preview of `previewing` run `run_id` (a dry run; its progress lands on the
    run row). A run that is no longer previewing (done, cancelled) is left alone. Redis
    down: retry with backoff, then record the failure on the run."""
    try:
        preview = purge.run_preview(run_id=run_id)
    except SoftTimeLimitExceeded:
        purge.fail_preview(run_id=run_id, error="The preview stopped at its time limit (55 minutes).")
        return {"run": run_id, "status": "failed"}
    except redis.RedisError as exc:
        def give_up(_ran_out):
            purge.fail_preview(run_id=run_id, error=keyspace.describe_error(exc))
            return {"run": run_id, "status": "failed"}

        return retry_or_give_up(self, exc, transient=is_transient(exc), limit=settings.PURGE_TASK_MAX_RETRIES,
                                give_up=give_up)
    except (keyspace.NotConfigured, purge.PurgeRefused) as exc:
        purge.fail_preview(run_id=run_id, error=str(exc) if isinstance(exc, purge.PurgeRefused)
                           else keyspace.describe_error(exc))
        return {"run": run_id, "status": "failed"}
    except Exception as exc:
        purge.fail_preview(run_id=run_id, error=f"{exc.__class__.__name__}: {exc}")
        raise
    if preview is None:
        return {"run": run_id, "status": "skipped"}
    return {"run": run_id, "status": preview.run.status, "matched": preview.matched}


@shared_task(name=POLICY_TASK, acks_late=True, soft_time_limit=3300, time_limit=3600)
def policy_purge_task(database=None, namespace=None, prefix=None):
    """Scheduled policy purge (disabled until an admin enables its schedule). `namespace`
    (a name) and `prefix` (text, a literal prefix) limit it to their intersection, for one
    `database`; a scope that meets no namespace is recorded as refused."""
    databases = RedisDatabase.objects.all()
    if database:
        databases = databases.filter(name=database)
    out = {}
    for record in databases:
        try:
            outcome = purge.policy_purge(database=record, namespace=namespace,
                                         prefix=prefix.encode() if prefix else None)
        except purge.PurgeRefused as exc:
            out[record.name] = {"runs": [], "reported": {}, "skipped": "", "refused": {"scope": str(exc)}}
            continue
        out[record.name] = {"runs": [r.run.pk for r in outcome.runs], "reported": outcome.reported,
                            "skipped": outcome.skipped_reason, "refused": outcome.refused}
    return out


@shared_task(name=RESUME_TASK, acks_late=True, soft_time_limit=50, time_limit=60)
def resume_purges_task():
    """Re-enqueue purges whose worker died (no checkpoint within the lease)."""
    stalled = purge.stalled_purges()
    for run_id in stalled:
        jobs.enqueue_on_commit(PURGE_TASK, run_id)
    return stalled


@shared_task(name=CLEANUP_TASK, soft_time_limit=50, time_limit=60)
def clean_up_previews_task():
    """Hourly: delete unconfirmed purge previews (twin: `manage.py clean_up_previews`)."""
    return purge.clean_up_previews()


@worker_ready.connect
def _resume_after_restart(sender=None, **kwargs):
    """A restarted worker picks up purges its predecessor left running, once their lease
    has lapsed: the broker would only redeliver them after the visibility timeout."""
    try:
        jobs.enqueue_on_commit(RESUME_TASK, countdown=settings.PURGE_LEASE_SECONDS + 1)
    except Exception:  # noqa: BLE001 — never keep a worker from starting
        log.exception("could not schedule the purge resume check")
