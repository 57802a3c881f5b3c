"""Executing a confirmed purge: batches re-checked and acted on in Redis, progress
checkpointed in Postgres, the rate cap held, cancel honoured, a crashed worker's run
resumed without counting a key twice.

Counting: `matched` = keys the SCAN (or the finding's stored list) yielded, `done` =
deleted or expired, `skipped` = matched keys that no longer qualified when their batch
ran, or that lie outside every namespace; done + skipped == matched.
"""

import time

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from continuity import keyspace
from continuity.keyspace import purge as redis_purge
from continuity.models import PurgeRun
from continuity.models.purges import PurgeTargetKey, stored_target_keys
from continuity.operations import alerting
from continuity.operations.purge.common import (CONDITION_FINDINGS, PurgeRefused, PurgeResult, PurgeStopped,
                                                audit_run, namespace_policies, split)
from continuity.operations.purge import cluster as purge_cluster
from continuity.operations.purge.preview import scan_pages
from continuity.operations.purge.targets import check_keyspace, resolve_target, run_heads
from dashboard import postgres

_FINISH_VERBS = {PurgeRun.SUCCEEDED: "purge.finish", PurgeRun.FAILED: "purge.fail",
                 PurgeRun.CANCELLED: "purge.cancel"}


def _finish(run, status, *, error="", source="task", client=None, live=False):
    """End `run` with `status`: its counts reconciled with the progress marker, the final
    row and its audit entry written (riding through a short Postgres outage), then the
    marker deleted, so the dashboard leaves nothing of its own in the monitored database.

    `live`: `run` is the object whose batches wrote the marker, so its counts already are
    the marker's. Otherwise (a failure recorded from the row) the marker's totals win when
    it is ahead of the last checkpoint: the audit's counts are what Redis did. With Redis
    unreachable the row's counts are recorded and the marker expires by itself."""
    cleared = False
    if client is not None:
        try:
            if not live:
                marker = redis_purge.read_marker(client, run.pk)
                run.commands += 1
                run.billed_commands += 1
                _adopt(run, marker)
            run.commands += 1
            run.billed_commands += run.billed(1, 1)  # the DEL of the marker, below
            cleared = True
        except redis.RedisError:
            pass

    def write():
        with transaction.atomic():
            PurgeRun.objects.filter(pk=run.pk).update(
                status=status, finished_at=timezone.now(), error=error, claim=None, heartbeat_at=None,
                cursor=run.cursor, node_cursors=run.node_cursors, node_stats=run.node_stats,
                node_layout=run.node_layout, batches=run.batches, matched=run.matched, done=run.done, skipped=run.skipped,
                commands=run.commands, billed_commands=run.billed_commands)
            PurgeTargetKey.objects.filter(run=run).delete()  # a finding's key list is spent
            run.refresh_from_db()
            audit_run(run, _FINISH_VERBS[status], actor=run.requested_by,
                      actor_label=run.requested_label or "system", source=source, note=error or run.reason)
            # Delivered when the transaction commits, like the audit entry it accompanies.
            alerting.alert_on_purge(run)

    postgres.ride_through(write)
    if cleared:  # only now: until the final row is written, a resume needs the marker
        try:
            redis_purge.clear_marker(client, run.pk)
        except redis.RedisError:
            pass  # it expires within a day
    return run


def _adopt(run, marker):
    """Take the marker's totals and cursor when it is ahead of `run` (batches acted on in
    Redis after the last checkpoint)."""
    if marker and marker.batch > run.batches:
        run.batches, run.cursor = marker.batch, marker.cursor
        run.matched, run.done, run.skipped = max(run.matched, marker.matched), marker.done, marker.skipped


def _client(run):
    """A client on `run`'s database, or None when its record has none."""
    try:
        return keyspace.client_for(run.database, write=True)
    except keyspace.KeyspaceError:
        return None


def fail_purge(*, run_id, error, source="task"):
    """Record a run as failed with `error` (after the last retry), its counts reconciled
    with the progress marker and the marker deleted. Idempotent."""
    run = PurgeRun.objects.select_related("database").get(pk=run_id)
    if run.is_finished:
        return run
    return _finish(run, PurgeRun.FAILED, error=error, source=source, client=_client(run))


def stalled_purges(*, lease_seconds=None):
    """Ids of running purges whose worker stopped checkpointing (killed, lost)."""
    lease = settings.PURGE_LEASE_SECONDS if lease_seconds is None else lease_seconds
    return list(PurgeRun.objects.stalled(lease).values_list("pk", flat=True))


def execute_purge(*, run_id, keys=None, lease_seconds=None, progress=None, source="task") -> PurgeResult:
    """Run (or resume) a queued purge to its end, a cancel, or an error.

    Each batch: one SCAN page, one acting command that re-checks and acts and writes the
    progress marker, then (when due) one checkpoint UPDATE guarded by this worker's claim;
    the cancel flag is read with the checkpoint and the rate cap is held by sleeping. A
    Redis error releases the claim and propagates (the task retries); the run stays
    `running`. A checkpoint rides through a short Postgres outage; a longer one raises
    PurgeStopped, the run still `running` and resumable. Idempotent: a finished run, or
    one another worker holds, is returned as it is.
    """
    lease = settings.PURGE_LEASE_SECONDS if lease_seconds is None else lease_seconds
    run = PurgeRun.objects.select_related("database").get(pk=run_id)
    claim, resumed = run.acquire(lease)
    run.refresh_from_db()
    if claim is None:
        return PurgeResult.of(run)
    try:
        try:  # the keyspace guardrail, decided again before any command (records change)
            check_keyspace(run.database, run_heads(run))
        except PurgeRefused as refused:  # final, audited, with what a resumed run already did
            _finish(run, PurgeRun.FAILED, error=str(refused), source=source,
                    client=_client(run) if resumed else None)
            raise
        client = keyspace.client_for(run.database, write=True)
        try:
            on_cluster = purge_cluster.is_cluster(run.database, client)
        except PurgeRefused as refused:  # final, audited; nothing was scanned or changed
            _finish(run, PurgeRun.FAILED, error=str(refused), source=source)
            raise
        marker_client = None if on_cluster else client  # a cluster run keeps no Redis marker
        if resumed and not on_cluster:
            _recover_batch(run, client, claim)
        if run.cancel_requested:
            return PurgeResult.of(_finish(run, PurgeRun.CANCELLED, source=source, client=marker_client, live=True),
                                  resumed)
        policies, reach = namespace_policies(run.database), None
        if run.target_kind == PurgeRun.POLICY:  # that namespace's own keys, not its nested ones'
            reach = [policy for policy in policies if policy.prefix == run.target_bytes()]
        elif run.target_kind != PurgeRun.FINDING:  # the namespaces may have changed since the preview
            reach = resolve_target(run.database, PurgeRun.PATTERN, run.match_bytes(), policies)[1]
        if on_cluster:
            try:
                status = _on_cluster(run, client, claim, policies, reach, keys, progress)
            except PurgeRefused as refused:  # a slot moved: final, audited, with the exact counts so far
                _finish(run, PurgeRun.FAILED, error=str(refused), source=source, live=True)
                raise
        else:
            status = _loop(run, client, claim, policies, reach, keys, progress)
        if status is None:  # lost the claim to another worker
            run.refresh_from_db()
            return PurgeResult.of(run, resumed)
        return PurgeResult.of(_finish(run, status, source=source, client=marker_client, live=True), resumed)
    except (postgres.PostgresAway, *postgres.GONE) as exc:
        # Postgres left for longer than JOB_DB_OUTAGE_SECONDS: stop, resumable. What Redis
        # did is in the marker; the claim lapses (or is released) and the resume job continues.
        postgres.let_go(lambda: run.release(claim))
        raise PurgeStopped(run, postgres.describe(exc)) from exc
    except BaseException:
        postgres.let_go(lambda: run.release(claim))
        raise


def _on_cluster(run, client, claim, policies, reach, keys, progress):
    """`_loop` for a Redis Cluster: each primary from its own cursor, or a finding's stored
    list slot group by slot group (`purge.cluster`)."""
    pacer = Pacer(run, claim, progress)
    if run.target_kind != PurgeRun.FINDING:
        return purge_cluster.run_nodes(run, client, pacer, policies, reach)
    if run.cursor == "end":
        return PurgeRun.SUCCEEDED
    return purge_cluster.run_findings(run, client, pacer, policies, _pages(run, client, keys, int(run.cursor)))


def _recover_batch(run, client, claim):
    """A worker died after acting on batches it had not checkpointed yet: the marker,
    written atomically with each batch, holds the run's totals and cursor after the last."""
    marker = redis_purge.read_marker(client, run.pk)
    run.commands += 1
    run.billed_commands += 1
    _adopt(run, marker)
    postgres.ride_through(lambda: run.checkpoint(claim))


def _pages(run, client, keys, start):
    """(position after the page or None at the end, [keys], commands spent reading it):
    SCAN pages from cursor `start`, or pages of a finding's stored (or given) key list
    after position `start`. SCAN pages are read one ahead in a helper thread, so the next
    SCAN travels while this one is acted on."""
    size = run.batch_size
    if run.target_kind != PurgeRun.FINDING:
        pages = scan_pages(client, match=run.match_bytes(), cursor=start, count=size)
        return ((cursor, page, 1) for cursor, page in redis_purge.prefetched(pages))
    source = (((i, bytes(k)) for i, k in enumerate(keys, 1) if i > start) if keys is not None
              else stored_target_keys(run, after=start, size=size))

    def stored():
        batch = []
        for position, key in source:
            batch.append(key)
            if len(batch) >= size:
                yield position, batch, 0
                batch = []
        yield None, batch, 0

    return stored()


class Pacer:
    """When to checkpoint (every PURGE_CHECKPOINT_SECONDS, and at the end) and how long to
    sleep to hold the run's rate cap."""

    def __init__(self, run, claim, progress, *, clock=time.monotonic, sleep=time.sleep):
        self.run, self.claim, self.progress = run, claim, progress
        self.every = settings.PURGE_CHECKPOINT_SECONDS
        self.clock, self.sleep = clock, sleep
        self.started, self.last, self.touched = clock(), None, 0

    def after_batch(self, keys, final):
        """'ok', 'cancel' or 'lost', checkpointing when due; sleeps for the rate cap."""
        state = "ok"
        now = self.clock()
        if final or self.last is None or now - self.last >= self.every:
            self.last = now
            # A Postgres restart mid-run is ridden through (JOB_DB_OUTAGE_SECONDS).
            state = postgres.ride_through(lambda: self.run.checkpoint(self.claim))
            if state != "lost" and self.progress:
                self.progress(self.run)
        self.touched += keys
        if self.run.rate_cap and self.touched and state == "ok":
            ahead = self.delay()
            if ahead > 0:
                self.sleep(ahead)
        return state

    def after_page(self, keys, final):
        """`after_batch` as a loop's ending: (False, None) to go on; (True, status) to stop,
        status being PurgeRun.CANCELLED, or None when the claim was lost."""
        state = self.after_batch(keys, final)
        return state != "ok", PurgeRun.CANCELLED if state == "cancel" else None

    def delay(self):
        """Seconds to wait so that the keys touched so far took at least touched / cap."""
        return self.touched / self.run.rate_cap - (self.clock() - self.started)


def _loop(run, client, claim, policies, reach, keys, progress):
    """Batches until the target is exhausted (SUCCEEDED), cancelled (CANCELLED) or the claim
    is lost (None)."""
    if run.cursor == "end":
        return PurgeRun.SUCCEEDED
    pacer = Pacer(run, claim, progress)
    want = CONDITION_FINDINGS[run.condition]
    marker = redis_purge.marker_key(run.pk)
    for position, page, cost in _pages(run, client, keys, int(run.cursor)):
        run.commands += cost
        run.billed_commands += cost
        next_cursor = "end" if position is None else str(position)
        page_keys, page_policies, outside = split(page, policies, reach)
        run.skipped += outside
        run.matched += len(page)
        if page_keys:
            head = redis_purge.marker_head(run.batches + 1, next_cursor, run.matched)
            result = redis_purge.act_on_batch(client, page_keys, action=run.action, policies=page_policies,
                                              want=want, marker=marker, head=head, totals=(run.done, run.skipped))
            run.batches += 1
            run.done += result.done
            run.skipped += result.skipped
            run.commands += result.commands
            run.billed_commands += run.billed(result.billed, result.writes)
        run.cursor = next_cursor
        # Checkpoints may lag the Redis side by a fraction of a second: the marker holds
        # the exact totals, so a resumed run loses and repeats nothing.
        stop, status = pacer.after_page(len(page), final=position is None)
        if stop:
            return status
    return PurgeRun.SUCCEEDED
