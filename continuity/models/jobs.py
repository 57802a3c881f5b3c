"""What every job row shares: one worker at a time, a lease, checkpoints, a hand-back and a
final failure. Review runs, their parts (one per node) and purge runs are all `Job`s.

A worker `claim`s a job with a conditional UPDATE: a queued job, or a running one whose
worker stopped checkpointing for the lease (its heartbeat is older, or it was handed back
with `release`). Every `checkpoint` renews the heartbeat and saves progress only while the
claim still holds, so a worker that lost its job (cancelled, or taken over after its lease
lapsed) finds out at its next checkpoint and stops. `release` hands a running job back (its
checkpoint kept) for the next claim to continue at once; `fail` ends it for good.
"""

import uuid
from datetime import timedelta

from django.db import connection, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone


class JobQuerySet(models.QuerySet):
    def stalled(self, lease_seconds):
        """Running jobs whose worker stopped checkpointing (killed, lost, or handed back):
        what the next claim may take over."""
        cutoff = timezone.now() - timedelta(seconds=lease_seconds)
        return self.filter(status=self.model.RUNNING).filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))


class Job(models.Model):
    """A job row's lifecycle (see the module docstring). Subclasses define `status` with at
    least QUEUED, RUNNING and FAILED, and `ACTIVE` (the statuses a job can still move from);
    `CANCEL_FLAG` names a field an operator sets to ask a running job to stop at its next
    checkpoint (None: cancelling ends the job at once, so its checkpoint finds it gone)."""

    QUEUED, RUNNING, FAILED = "queued", "running", "failed"
    ACTIVE = (QUEUED, RUNNING)
    CANCEL_FLAG = None

    claim_token = models.CharField(max_length=36, blank=True, editable=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Renewed by every checkpoint: the lease.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    resumes = models.PositiveIntegerField(default=0, help_text="Claims that took over a job already running.")
    error = models.TextField(blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True

    def claim(self, lease_seconds):
        """Take this job for the calling worker: a queued job, or a running one stalled for
        `lease_seconds` (`JobQuerySet.stalled`). Returns (token, resumed): token None when
        another worker holds it or it ended; resumed True when it took over a running job."""
        token, now = uuid.uuid4().hex, timezone.now()
        rows = type(self).objects.filter(pk=self.pk)
        taken = {"claim_token": token, "heartbeat_at": now, "started_at": Coalesce(F("started_at"), now)}
        resumed = False
        if not rows.filter(status=self.QUEUED).update(status=self.RUNNING, **taken):
            resumed = bool(rows.stalled(lease_seconds).update(resumes=F("resumes") + 1, **taken))
            if not resumed:
                self.refresh_from_db()
                return None, False
        self.refresh_from_db()
        return token, resumed

    def checkpoint(self, token, **fields):
        """Save `fields` and renew the heartbeat while `token` still holds the job. Returns
        "ok", "cancel" (saved, and an operator asked to stop: `CANCEL_FLAG`) or "lost"
        (cancelled, ended, or another worker holds it: stop).

        Committed without waiting for the WAL flush (synchronous_commit off, this
        transaction only): a worker killed after this call still leaves the checkpoint in
        Postgres, and only a crash of Postgres itself could lose the last fraction of a
        second of progress (a job then repeats it; a purge takes it from its markers)."""
        fields["heartbeat_at"] = timezone.now()
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
            mine = type(self).objects.filter(pk=self.pk, status=self.RUNNING, claim_token=token)
            if self.CANCEL_FLAG is None:
                return "ok" if mine.update(**fields) else "lost"
            if mine.filter(**{self.CANCEL_FLAG: False}).update(**fields):
                return "ok"
            return "cancel" if mine.update(**fields) else "lost"

    def release(self, token, error=""):
        """Hand the job back, still running with its checkpoint, for the next claim to take
        over at once (a retry, the resume job); `error` says why it stopped."""
        return bool(type(self).objects.filter(pk=self.pk, status=self.RUNNING, claim_token=token).update(
            claim_token="", heartbeat_at=None, error=error))

    def fail(self, error):
        """The final word on a job that will not be retried again."""
        return bool(type(self).objects.filter(pk=self.pk, status__in=self.ACTIVE).update(
            status=self.FAILED, error=error, finished_at=timezone.now(), claim_token=""))
