"""Executing a confirmed purge: one loop over the keyspace's nodes (one for a standalone
server, each primary of a Redis Cluster), pages re-checked and acted on in Redis, progress
recorded in Redis with each act and checkpointed in Postgres, the rate cap held, cancel
honoured, a crashed worker's run resumed exactly.

Counting: `matched` = keys the SCAN (or the finding's stored list) yielded, `done` =
deleted or expired, `skipped` = matched keys that no longer qualified when their page ran,
or that lie outside every namespace; done + skipped == matched, but for keys a moved slot
left untouched (then the run fails, saying how many). Each figure is kept per node
(`PurgeRun.node_stats`) and summed on the run.

Every round trip to a node writes that node's progress marker (`keyspace.purge`): the
acting script records the node's totals — position, matched, done, skipped and the
commands billed, this request's included — in the same call as the act, and the next
page's SCAN travels in the same round trip ahead of it. So at every point a worker can
die (after a SCAN, after an act, before or after a checkpoint), the marker holds exactly
what Redis did for that node, and a resumed run (`recover`) takes it where it is ahead of
the Postgres checkpoint: nothing is counted twice, nothing done is lost, and `billed` is
what Redis executed. When the run ends, every node is checkpointed, its marker deleted
(counted), and the final row written. A page is counted in memory only once Redis answered
it, so the figures in memory are always a marker's: a Redis failure (unreachable, a 429)
checkpoints them before the run is handed back, and where the markers cannot be read again
(a 429 that lasts past the task's retries) the failed run's counts are still what Redis did.
A run resumed over the other transport adopts its one recorded node (`adopt`).

Test hook: `fault(point, node)` is called at the named points "scanned" (a page read, not
yet acted on), "acted" (acted on, not yet checkpointed) and "checkpointed", and "cleared"
(markers deleted, final row not yet written); a test raises there to kill the job at that
exact point.
"""

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from continuity import keyspace
from continuity.billing import Cost
from continuity.keyspace import nodes as keyspace_nodes
from continuity.keyspace import purge as redis_purge
from continuity.models import PurgeRun
from continuity.models.purges import PurgeTargetKey, stored_target_keys
from continuity.operations import alerting
from continuity.operations.purge.common import (CONDITION_FINDINGS, Pacer, PurgeRefused, PurgeResult, PurgeStopped,
                                                audit_run, namespace_policies, split)
from continuity.operations.purge.preview import page_of, scan_command
from continuity.operations.purge.targets import check_keyspace, run_heads, stored_reach
from dashboard import postgres

_FINISH_VERBS = {PurgeRun.SUCCEEDED: "purge.finish", PurgeRun.FAILED: "purge.fail",
                 PurgeRun.CANCELLED: "purge.cancel"}
END = "end"
DONE, LOST = "done", "lost"  # a node's loop ended: every page done, or the claim lost


class TopologyChanged(PurgeRefused):
    """A cluster's slots moved (or are moving) during the run: keys of those slots may have
    been missed. Final: the run ends failed, naming the slot and its nodes, with its exact
    counts."""


def _no_fault(point, node):
    return None


def _so_far(run):
    # Keys of a slot that moved are matched but neither done nor skipped: untouched, and said so.
    untouched = run.matched - run.skipped - run.done
    left = (f"; {untouched:,} of the matched keys were not acted on (their slot had moved) and are untouched"
            if untouched > 0 else "")
    return (f"So far it matched {run.matched:,} keys, {run.done_label} {run.done:,} and skipped {run.skipped:,} "
            f"(exact){left}. Once the resharding or failover is over, preview and run the purge again.")


def _as_checkpointed(run):
    # The cluster's nodes hold the markers of what was done after the last checkpoint, and
    # the record no longer reaches them: the run's counts are its checkpoint's, and said so.
    return (f"It stopped as failed with the counts of its last checkpoint: matched {run.matched:,}, "
            f"{run.done_label} {run.done:,}, skipped {run.skipped:,}; pages acted on after that checkpoint are "
            f"recorded only in its progress markers on the cluster's primaries (they expire within a day). Set "
            f"{run.database.url_env} to a node of the cluster again, then preview and run the purge again for "
            "what is left.")


def _moved(run, what, slots=1):
    keys = "Keys of that slot may be missed" if slots <= 1 else "Keys of the moved slots may have been missed"
    return TopologyChanged(f"The cluster's topology changed during purge #{run.pk} of {run.database.name}: {what}. "
                           f"{keys}, so the purge stopped as failed. {_so_far(run)}")


# --- the markers ---------------------------------------------------------------------------------
def _bill(run, nodes):
    """Add what the keyspace itself sent (CLUSTER NODES) to its nodes' figures."""
    for address, cost in nodes.drain().items():
        run.add(address, commands=cost.sent, billed=cost.billed)


def adopt(run, nodes, claim=None):
    """A run resumed (or a preview executed) on a standalone server at another address than
    it recorded — over REST after TCP, or the reverse; a new host name —: its one recorded
    node is this one, so its cursor, figures and stored key list are renamed, never started
    again (`keyspace.nodes.adopted`), and with `claim` checkpointed in the transaction that
    renames the stored keys, so nothing is left half-renamed. ResumeRefused (final) where the
    run was recorded on a Redis Cluster's primaries and the record now reaches one server
    (always so over REST). True when something was renamed."""
    moves = keyspace_nodes.adopted(nodes, run.recorded_nodes(), what=f"Purge #{run.pk} of {run.database.name}")
    if not moves:
        return False

    def rename():  # idempotent, so that riding through a Postgres restart may run it again
        with transaction.atomic():
            for old, new in moves.items():
                run.adopt_node(old, new)
            if claim is not None and run.checkpoint(claim) == "lost":
                transaction.set_rollback(True)  # another worker holds the run: its records stay as they are

    postgres.ride_through(rename)
    return True


def recover(run, nodes):
    """Take each node's marker where it is ahead of the last checkpoint: the pages a dead
    worker acted on (and the commands it sent) after checkpointing. One GET per node."""
    for node in nodes.nodes:
        figures = run.node_figures(node.address)
        cost = Cost()
        marker = redis_purge.read_marker(node, run.pk, cost=cost)
        if marker is not None and marker.billed > figures["billed"]:
            run.add(node.address, pages=marker.page - figures["pages"], matched=marker.matched - figures["matched"],
                    done=marker.done - figures["done"], skipped=marker.skipped - figures["skipped"],
                    billed=marker.billed - figures["billed"])
            run.set_node_cursor(node.address, marker.cursor)
        run.add(node.address, commands=cost.sent, billed=cost.billed)


def _clear(run, nodes):
    """Delete each node's marker (counted, writes once more per read region)."""
    for node in nodes.nodes:
        cost = Cost()
        redis_purge.clear_marker(node, run.pk, cost=cost)
        run.add(node.address, commands=cost.sent, billed=run.billed(cost.billed, cost.writes))


def _finish(run, status, *, error="", source="task", nodes=None):
    """End `run` with `status`: with `nodes` (the run's keyspace, its figures those of the
    markers), every marker deleted and counted first, then the final row and its audit
    entry written (riding through a short Postgres outage), so the dashboard leaves nothing
    of its own in the monitored database. Without `nodes` (a failure recorded from the row
    while Redis is away) the row's counts are recorded and the markers expire by themselves."""
    if nodes is not None:
        try:
            _clear(run, nodes)
        except (redis.RedisError, OSError):
            pass  # they expire within a day

    def write():
        with transaction.atomic():
            PurgeRun.objects.filter(pk=run.pk).update(
                status=status, finished_at=timezone.now(), error=error, claim_token="", heartbeat_at=None,
                node_cursors=run.node_cursors, node_stats=run.node_stats, node_layout=run.node_layout,
                batches=run.batches, matched=run.matched, done=run.done, skipped=run.skipped,
                commands=run.commands, billed_commands=run.billed_commands)
            PurgeTargetKey.objects.filter(run=run).delete()  # a finding's key list is spent
            run.refresh_from_db()
            audit_run(run, _FINISH_VERBS[status], actor=run.requested_by,
                      actor_label=run.requested_label or "system", source=source, note=error or run.reason)
            # Delivered when the transaction commits, like the audit entry it accompanies.
            alerting.alert_on_purge(run)

    postgres.ride_through(write)
    return run


def fail_purge(*, run_id, error, source="task"):
    """Record a run as failed with `error` (after the last retry), its counts reconciled
    with the markers (when Redis answers) and the markers deleted. Idempotent."""
    run = PurgeRun.objects.select_related("database").get(pk=run_id)
    if run.is_finished:
        return run
    try:
        with keyspace_nodes.primaries(run.database, write=True) as nodes:
            adopt(run, nodes)
            recover(run, nodes)
            _bill(run, nodes)
            return _finish(run, PurgeRun.FAILED, error=error, source=source, nodes=nodes)
    except (redis.RedisError, OSError, keyspace.KeyspaceError):
        return _finish(run, PurgeRun.FAILED, error=error, source=source)


def abandon_purge(*, run_id, error, source="web"):
    """Record a confirmed purge whose task never reached a worker (the broker refused it, or
    nobody took it) as failed with `error`, audited; nothing was touched. False when a
    worker started it (or it ended) meanwhile. No alert: it would need the broker that just
    refused this run."""
    with transaction.atomic():
        if not PurgeRun.objects.filter(pk=run_id, status=PurgeRun.QUEUED, started_at__isnull=True).update(
                status=PurgeRun.FAILED, error=error, finished_at=timezone.now(), claim_token=""):
            return False
        run = PurgeRun.objects.select_related("database").get(pk=run_id)
        audit_run(run, "purge.fail", actor=run.requested_by, actor_label=run.requested_label or "system",
                  source=source, note=error)
    return True


def stalled_purges(*, lease_seconds=None):
    """Ids of running purges whose worker stopped checkpointing (killed, lost)."""
    lease = settings.PURGE_LEASE_SECONDS if lease_seconds is None else lease_seconds
    return list(PurgeRun.objects.stalled(lease).values_list("pk", flat=True))


# --- the run --------------------------------------------------------------------------------------
def execute_purge(*, run_id, keys=None, lease_seconds=None, progress=None, source="task", fault=None) -> PurgeResult:
    """Run (or resume) a queued purge to its end, a cancel, or an error.

    Each page: one round trip acting on it (and carrying the next page's SCAN), then (when
    due) one checkpoint UPDATE guarded by this worker's claim; the cancel flag is read with
    the checkpoint and the rate cap is held by sleeping. A Redis error releases the claim
    and propagates (the task retries); the run stays `running`. A checkpoint rides through
    a short Postgres outage; a longer one raises PurgeStopped, the run still `running` and
    resumable. Idempotent: a finished run, or one another worker holds, is returned as it
    is. `keys`: a finding's key list given by the caller instead of the stored one (tests);
    `fault`: the test hook of the module docstring."""
    lease = settings.PURGE_LEASE_SECONDS if lease_seconds is None else lease_seconds
    fault = fault or _no_fault
    run = PurgeRun.objects.select_related("database").get(pk=run_id)
    claim, resumed = run.claim(lease)
    run.refresh_from_db()
    if claim is None:
        return PurgeResult.of(run)
    if run.error:  # why an earlier attempt stopped: no longer the news once it runs again
        PurgeRun.objects.filter(pk=run.pk, claim_token=claim).update(error="")
        run.error = ""
    try:
        try:  # the keyspace guardrail, decided again before any command (records change)
            check_keyspace(run.database, run_heads(run))
        except PurgeRefused as refused:  # final, audited, with what a resumed run already did
            fail_purge(run_id=run.pk, error=str(refused), source=source)
            raise
        try:
            with keyspace_nodes.primaries(run.database, write=True) as nodes:
                status = _run(run, nodes, claim, keys, progress, resumed, fault)
                if status is None:  # lost the claim to another worker
                    run.refresh_from_db()
                    return PurgeResult.of(run, resumed)
                return PurgeResult.of(_end(run, nodes, claim, status, source, fault), resumed)
        except keyspace.ClusterRefusal as exc:  # the record contradicts the server: nothing was touched
            error = str(exc)
            if isinstance(exc, keyspace_nodes.ResumeRefused):
                error = f"{error} {_as_checkpointed(run)}"
            _finish(run, PurgeRun.FAILED, error=error, source=source)
            raise PurgeRefused(error) from None
    except (postgres.PostgresAway, *postgres.GONE) as exc:
        # Postgres left for longer than JOB_DB_OUTAGE_SECONDS: stop, resumable. What Redis
        # did is in the markers; the claim lapses (or is released) and the resume job continues.
        postgres.let_go(lambda: run.release(claim))
        raise PurgeStopped(run, postgres.describe_outage(exc)) from exc
    except (redis.RedisError, OSError) as exc:
        # Redis failed (unreachable, a 429, a timeout…): the figures so far are checkpointed —
        # they are what the markers hold after the last page Redis answered, so where the
        # markers cannot be read again (a 429 that lasts) the run's counts are still exact —
        # and the run handed back, still running, saying why it stopped.
        reason = keyspace.describe_error(exc)

        def hand_back():
            run.checkpoint(claim)  # "lost": another worker holds it, and the release below does nothing
            return run.release(claim, reason)

        postgres.let_go(hand_back)
        raise
    except BaseException:
        postgres.let_go(lambda: run.release(claim))
        raise


def _end(run, nodes, claim, status, source, fault):
    """Checkpoint every node, delete the markers and checkpoint what that cost, then write
    the final row. A worker that dies before the markers go resumes from them; one that dies
    after finds them gone and its checkpoint equal to them, and only ends the run."""
    postgres.ride_through(lambda: run.checkpoint(claim))
    try:
        _clear(run, nodes)
    except (redis.RedisError, OSError):
        pass  # they expire within a day
    else:
        postgres.ride_through(lambda: run.checkpoint(claim))
    fault("cleared", None)
    return _finish(run, status, source=source)


def _run(run, nodes, claim, keys, progress, resumed, fault):
    """Every node in turn: SUCCEEDED, CANCELLED, or None (the claim was lost). Raises
    TopologyChanged (after ending the run failed) when a slot moved."""
    adopt(run, nodes, claim)  # a preview, or an earlier attempt, over the other transport
    if resumed:
        recover(run, nodes)
    if nodes.is_cluster:  # a record naming another node of this cluster reaches the same keys
        try:
            check_keyspace(run.database, run_heads(run), [node.address for node in nodes.nodes])
        except PurgeRefused as refused:
            _finish(run, PurgeRun.FAILED, error=str(refused), nodes=nodes)
            raise
    if run.cancel_requested:
        _bill(run, nodes)
        return PurgeRun.CANCELLED
    pacer = Pacer(lambda: postgres.ride_through(lambda: run.checkpoint(claim)), rate_cap=run.rate_cap,
                  progress=(lambda: progress(run)) if progress else None)
    policies = namespace_policies(run.database)
    reach = stored_reach(run, policies)
    if run.target_kind == PurgeRun.FINDING:
        reach = None  # the stored keys were found in the reached namespaces; each is re-checked there
    want = CONDITION_FINDINGS[run.condition]
    given = None
    if keys is not None:  # a caller's list: each key on the node serving it
        given = {}
        for key in keys:
            owner = nodes.owner(bytes(key))
            given.setdefault(owner.address if owner else "", []).append(bytes(key))
    for node in nodes.nodes:  # every node's position, from the start (shown per node on the page)
        if node.address not in (run.node_cursors or {}):
            run.set_node_cursor(node.address, "0")
    try:
        for node in nodes.nodes:
            _check(run, nodes)  # the layout when the run starts (recorded), then before each node
            if run.node_cursor(node.address) == END:
                continue
            try:
                if run.target_kind == PurgeRun.FINDING:
                    status = _act_on(run, node, _listed(run, node, given), pacer, policies, None, want, fault)
                else:
                    status = _act_on(run, node, ScanPages(run.match_bytes(), run.batch_size,
                                                          int(run.node_cursor(node.address))),
                                     pacer, policies, reach, want, fault)
            except keyspace.NODE_ERRORS as exc:
                raise keyspace_nodes.unreachable(run.database, node.address, exc) from exc
            if status == LOST:
                return None
            if status == PurgeRun.CANCELLED:
                return status
        _check(run, nodes)  # a slot that moved to a node already done would hide keys
    except TopologyChanged as exc:
        _finish(run, PurgeRun.FAILED, error=str(exc), nodes=nodes)
        raise
    except redis_purge.ScriptingRequired as exc:  # final: a retry is refused alike
        _finish(run, PurgeRun.FAILED, error=str(exc), nodes=nodes)
        raise PurgeRefused(str(exc)) from None
    return PurgeRun.SUCCEEDED


def _check(run, nodes):
    """`nodes.check` against the owners the run started with (recorded the first time),
    its CLUSTER NODES billed to each node; TopologyChanged (the run's message) when a slot
    moved or is moving."""
    try:
        layout = nodes.check(since=run.node_layout or None)
    except keyspace_nodes.SlotsMoved as exc:
        _bill(run, nodes)
        raise _moved(run, str(exc), len(exc.slots)) from None
    _bill(run, nodes)
    if layout is not None and not run.node_layout:
        run.node_layout = layout.owners


class ScanPages:
    """A node's SCAN, one page ahead: `first()` is the first page's SCAN; `next(reply)` turns
    a SCAN reply into (position after it or END, keys, the next page's SCAN or None)."""

    def __init__(self, match, count, start):
        self.match, self.count, self.start = match, count, start

    def first(self):
        return scan_command(self.match, self.start, self.count)

    def after(self, reply):
        cursor, keys = page_of(reply)
        return (END if cursor == 0 else str(cursor)), keys, (scan_command(self.match, cursor, self.count)
                                                               if cursor else None)


def _listed(run, node, given):
    """A node's stored (or given) key list in pages from its checkpointed position."""
    start = int(run.node_cursor(node.address))
    size = run.batch_size
    if given is not None:
        source = ((i, k) for i, k in enumerate(given.get(node.address, []), 1) if i > start)
    else:
        source = stored_target_keys(run, node.address, after=start, size=size)

    def pages():
        page = []
        for position, key in source:
            page.append(key)
            if len(page) >= size:
                yield str(position), page
                page = []
        yield END, page

    return ListPages(pages())


class ListPages:
    """A node's stored list in pages: nothing to SCAN, the pages come from Postgres."""

    def __init__(self, pages):
        self.pages = pages

    def first(self):
        return None

    def after(self, _reply):
        return next(self.pages) + (None,)


def _act_on(run, node, source, pacer, policies, reach, want, fault):
    """Purge one node's pages from its checkpoint (`source`: ScanPages or ListPages): DONE,
    CANCELLED, or LOST (another worker holds the run). TopologyChanged when its keys moved."""
    address = node.address
    key = redis_purge.marker_key(node, run.pk)
    regions = len(run.database.read_regions or ())
    figures = run.node_figures(address)

    def progress_after(page_no, cursor, matched=0, outside=0):  # the node's totals with the page's own
        return redis_purge.Progress(key, redis_purge.marker_head(page_no, cursor, figures["matched"] + matched),
                                    figures["done"], figures["skipped"] + outside, figures["billed"], regions)

    def act(keys, policies, progress, before, want=()):
        # What was sent is counted whatever happened: a NOSCRIPT answered (SCAN and EVALSHA
        # executed, billed) and then the reload refused (a 429) did not reach the marker.
        spent = Cost()
        try:
            return redis_purge.act(node, keys, action=run.action, policies=policies, want=want, progress=progress,
                                   before=before, cost=spent)
        finally:
            run.add(address, commands=spent.sent, billed=spent.billed)

    reply = None
    first = source.first()
    if first is not None:  # a SCAN target: its first SCAN travels with a marker recording it
        reply = act([], [], progress_after(figures["pages"], run.node_cursor(address)), [first]).ahead[0]
    while True:
        cursor, page, following = source.after(reply)
        page_keys, page_policies, outside = split(page, policies, reach)
        fault("scanned", node)
        result = act(page_keys, page_policies, progress_after(figures["pages"] + 1, cursor, len(page), outside),
                     [following] if following else [], want)
        # Counted once Redis answered, with what it did: the run's figures in memory are always
        # those of the node's marker after a page, so a Redis failure checkpoints them as they are.
        run.add(address, pages=1, matched=len(page), done=result.done, skipped=outside + result.skipped)
        run.set_node_cursor(address, cursor)
        fault("acted", node)
        if result.moved:
            cost = Cost()
            error = keyspace_nodes.moved_away(run.database, node, (run.node_layout or {}).get(address, []), cost=cost)
            run.add(address, commands=cost.sent, billed=cost.billed)
            raise _moved(run, f"{error} ({result.moved:,} keys of the page were left untouched)")
        # The marker could not be written (a node out of memory refuses the SET, not UNLINK):
        # Postgres records the page at once instead.
        state = pacer.after_page(len(page), final=cursor == END or not result.recorded)
        fault("checkpointed", node)
        if state == "cancel":
            return PurgeRun.CANCELLED
        if state == "lost":
            return LOST
        if cursor == END:
            return DONE
        reply = result.ahead[0] if following else None
