"""The TTL review of a Redis Cluster: one part per primary, merged into one run.

A node's SCAN returns that node's keys only, and every key it returns lives on that node,
so each primary is reviewed on its own with the same `stream.batches` loop as a standalone
server, through a direct client (`cluster.node_client`). Each part is a ReviewNodeRun row
with its own cursor, checkpoint and claim: a part whose worker died resumes alone.

`merge` sums the parts' Tallies (counts, namespace tallies, histograms, top-N heaps,
capped samples), and `finish` writes the merged figures into the ReviewRun in one
transaction. A primary that could not be read ends the run `partial` (never
`succeeded`) with the missing nodes named; a primary whose slots changed during the run
(a failover, a resharding) fails it: its keys may have been read twice or not at all.

Two drivers: `review_inline` (the `ttl_review` command, a web request run eagerly) reviews
the primaries one after the other in this process; the Celery task fans out one
`review_node_task` per primary in a `chord` whose callback is `finish`.

Sampled reviews (the 15-minute schedule): `prepare` asks every primary its DBSIZE and gives
each a share of the sample in proportion to it (`allocate`); each part draws its share at
random from its own node (random SCAN cursors, metadata by per-key pipelined commands, as
the keys span many slots) and `finish` keeps one stratum per primary on the run, which
`models.reviews.stratified_estimate` combines into one estimate with a 95% interval. A
primary holding no more keys than its share is read whole (its counts are exact). The cost
is about the sample's, whatever the keyspace: three DBSIZEs, a few SCANs per primary, and
the reads of about N keys. The intervals use the keys each primary actually gave (fewer than
its share when the random SCANs came back thin). Checked on Redis 7.0, whose cluster nodes
keep one hash table per database. Redis 7.4+ and Valkey 8 keep one per slot and encode the
slot in the SCAN cursor: sampling there is untested; check the keys drawn per primary on the
review page before relying on the interval.

Cost: each part counts the commands its primary executed (script-internal calls included),
shown per primary on the review page; the run's `billed_commands` is their sum.

Cancelling the run cancels its parts (`ReviewRun.cancel`); a part's task stops at its next
checkpoint, which fails once the run is no longer running.

Postgres outages: a part's checkpoints ride through a short outage (`postgres.ride_through`,
JOB_DB_OUTAGE_SECONDS); past the bound the part stops with its checkpoint and is handed back
(`NodeInterrupted.postgres`), its task retries it, and the run stays running (not failed)
until its parts end: the chord's callback `finish` waits for every part, and a later
request (the schedule, `ttl_review`) resumes the parts not ended and fans out a new chord.
"""

import contextlib
import heapq
import time
from datetime import timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from continuity import keyspace
from continuity.keyspace import cluster as keyspace_cluster
from continuity.keyspace import stream
from continuity.models import ReviewNamespaceStat, ReviewNodeRun, ReviewRun, ReviewSample
from continuity.operations import review
from continuity.policy import FINDINGS, Policies
from dashboard import postgres


# --- merging ------------------------------------------------------------------------------
def merge(tallies):
    """One Tally from the per-node Tallies: counts summed, namespaces merged key by key,
    each namespace's top keys the TOP_N biggest of all, samples capped at SAMPLE_CAP
    (taken in node order). `elapsed_s` is the longest part (they may run in parallel)."""
    total = review.Tally()
    for part in tallies:
        total.keys_scanned += part.keys_scanned
        total.foreign += part.foreign
        total.vanished += part.vanished
        total.commands += part.commands
        total.billed += part.billed
        total.batches += part.batches
        total.elapsed_s = max(total.elapsed_s, part.elapsed_s)
        for kind, count in part.findings.items():
            total.findings[kind] = total.findings.get(kind, 0) + count
        for kind, samples in part.samples.items():
            kept = total.samples.setdefault(kind, [])
            kept.extend(samples[:max(0, review.SAMPLE_CAP - len(kept))])
        for ident, ns in part.namespaces.items():
            into = total.namespace(ident)
            into.keys += ns.keys
            into.bytes += ns.bytes
            into.buckets = [a + b for a, b in zip(into.buckets, ns.buckets)]
            for kind, count in ns.findings.items():
                into.findings[kind] = into.findings.get(kind, 0) + count
            into.top = heapq.nlargest(review.TOP_N, [*into.top, *ns.top])
            heapq.heapify(into.top)
            into.top_floor = into.top[0][0] if len(into.top) == review.TOP_N else -1
    return total


# --- preparing the parts ------------------------------------------------------------------
MIN_SHARE = 30  # keys drawn at least from a sampled primary: its proportion needs a few draws


def allocate(sample, sizes):
    """Each primary's share of a sample of `sample` keys, in proportion to its DBSIZE in
    `sizes` (proportional stratified allocation): a count, at least MIN_SHARE, or None where
    the primary holds no more keys than its share (it is read whole). All None (an exact
    review) when the keyspace is no larger than the sample, or when a DBSIZE is unknown
    (refused by an ACL): the sample could not be spread honestly."""
    if None in sizes or sum(sizes) <= sample:
        return [None] * len(sizes)
    total = sum(sizes)
    shares = []
    for size in sizes:
        share = max(MIN_SHARE, round(sample * size / total))
        shares.append(None if size <= share else share)
    return shares


def _sizes(run, client, addresses):
    """DBSIZE of each primary (None where refused) for a sampled run, and the reason each
    unreachable one could not be asked (None where it answered)."""
    sizes, errors = [], []
    for address in addresses:
        direct = keyspace_cluster.node_client(client, address)
        try:
            sizes.append(stream.dbsize(direct))
            errors.append(None)
        except (redis.RedisError, OSError) as exc:
            sizes.append(None)
            errors.append(f"{address}: {keyspace.describe(exc)}")
        finally:
            direct.close()
            direct.connection_pool.disconnect()
    return sizes, errors


def prepare(run, client):
    """The run's ReviewNodeRun rows, one per primary, created on the first call (later
    calls, a resumed run, return the rows as they are). For a sampled run each row gets its
    primary's DBSIZE (one billed command, in its tally) and its share of the sample
    (`allocate`); a primary that does not answer is failed at once (the run ends partial)."""
    existing = list(run.node_runs.all())
    if existing:
        return existing
    slots = keyspace_cluster.slot_map(client)
    # One CLUSTER NODES, billed to the run itself (its parts count what their primary ran).
    ReviewRun.objects.filter(pk=run.pk).update(commands=F("commands") + 1, billed_commands=F("billed_commands") + 1)
    covered = slots.slots_covered
    if covered != keyspace_cluster.SLOTS:
        raise keyspace_cluster.ClusterRefusal(
            f"{run.database.name} is a Redis Cluster whose primaries serve {covered} of {keyspace_cluster.SLOTS} "
            f"slots; a review would miss keys. Nothing was reviewed.")
    rows = [ReviewNodeRun(run=run, address=address, node_id=slots.node_ids[address], slots=ranges)
            for address, ranges in slots.owners.items()]
    if run.sample_size:
        sizes, errors = _sizes(run, client, slots.addresses)
        answered = [size for size, error in zip(sizes, errors) if error is None]
        shares = iter(allocate(run.sample_size, answered))
        asked = review.Tally(commands=1, billed=1).to_json()
        for row, size, error in zip(rows, sizes, errors):
            if error is not None:
                row.status, row.error, row.finished_at = ReviewNodeRun.FAILED, error, timezone.now()
                continue
            row.sample_size = next(shares)
            if size is not None:
                row.dbsize_before, row.aggregates, row.commands, row.billed_commands = size, asked, 1, 1
    with transaction.atomic():
        ReviewNodeRun.objects.bulk_create(rows, ignore_conflicts=True)
    return list(run.node_runs.all())


# --- one primary --------------------------------------------------------------------------
class NodeInterrupted(Exception):
    """Reading a primary failed, or Postgres stayed away past JOB_DB_OUTAGE_SECONDS
    (`postgres`); its part was handed back (queued) with its checkpoint (with Postgres
    away, its lease lapses instead)."""

    def __init__(self, node, reason, cause, *, postgres=False):
        super().__init__(reason)
        self.node = node
        self.reason = reason
        self.cause = cause
        self.postgres = postgres
        self.transient = postgres or keyspace.capabilities.is_transient(cause)


def review_node(node, *, namespaces=None, checkpoint_every=None, on_batch=None):
    """Review the primary of `node` (a ReviewNodeRun) from its checkpoint (or, a sampled
    part, draw its share of the sample) and store its Tally on the row (status succeeded);
    merges nothing. Returns the row's status; a part another worker holds or that already
    ended (cancelled with its run) is left alone, and a part whose run was cancelled stops
    at its next checkpoint. Redis failures raise NodeInterrupted after releasing the part;
    so does Postgres staying away past JOB_DB_OUTAGE_SECONDS (`postgres`; checkpoints ride
    through shorter outages)."""
    token = postgres.ride_through(lambda: node.claim(settings.REVIEW_LEASE_SECONDS))
    if token is None:
        return node.status
    run = ReviewRun.objects.select_related("database").get(pk=node.run_id)
    database = run.database
    if namespaces is None:
        namespaces = list(review.Namespace.objects.for_database(database))
    classifier = review.Classifier(database, namespaces)
    strategy, needs = review.plan(database, Policies.of(namespaces))
    # The scan script's SCAN runs on the node it is sent to: every key it reads is local.
    # Declared KEYS of several slots would be refused (CROSSSLOT): per-key commands instead.
    strategy = review.node_strategy(strategy)
    tally = review.Tally.from_json(node.aggregates)
    base = keyspace.client_for(database)
    direct = keyspace_cluster.node_client(base, node.address)

    def save(**fields):  # rides through a Postgres restart; False when cancelled or taken over
        return postgres.ride_through(lambda: node.checkpoint(token, **fields))

    try:
        if node.sample_size:  # small and cheap: no checkpoint, a crashed worker draws it again
            review.sample_keyspace(direct, classifier, tally, size=node.sample_size, needs=needs,
                                   on_batch=on_batch, per_key=True)
            postgres.ride_through(lambda: _succeeded(node, token, tally, node.dbsize_before))
            node.refresh_from_db()
            return node.status
        if node.dbsize_before is None:
            size = stream.dbsize(direct)
            tally.commands += 1
            tally.billed += 1
            save(dbsize_before=size, aggregates=tally.to_json(), commands=tally.commands,
                 billed_commands=tally.billed)

        def on_checkpoint(cursor, tally):
            return save(cursor=str(cursor), batches=tally.batches, keys_scanned=tally.keys_scanned,
                        commands=tally.commands, billed_commands=tally.billed, aggregates=tally.to_json())

        finished = review.scan_keyspace(direct, classifier, tally, cursor=int(node.cursor), batch=run.batch_size,
                                on_checkpoint=on_checkpoint,
                                checkpoint_every=checkpoint_every or settings.REVIEW_CHECKPOINT_BATCHES,
                                on_batch=on_batch, clock=time.perf_counter, strategy=strategy, needs=needs)
        if finished:
            size_after = stream.dbsize(direct)
            tally.commands += 1
            tally.billed += 1
            postgres.ride_through(lambda: _succeeded(node, token, tally, size_after))
    except (postgres.PostgresAway, *postgres.GONE) as exc:
        reason = (f"{node.address}: {postgres.describe(exc)}. The part keeps its last checkpoint and is not "
                  f"failed: its task retries it, and the next review request resumes it.")
        postgres.let_go(lambda: node.release(token, reason))
        raise NodeInterrupted(node, reason, exc, postgres=True) from exc
    except (redis.RedisError, keyspace.KeyspaceError, OSError) as exc:
        reason = f"{node.address}: {keyspace.describe(exc)}"
        postgres.let_go(lambda: node.release(token, reason))
        raise NodeInterrupted(node, reason, exc) from exc
    finally:
        direct.close()
        direct.connection_pool.disconnect()
    postgres.ride_through(node.refresh_from_db)
    return node.status


def _succeeded(node, token, tally, size_after):
    """Store a part's Tally and end it, while it holds the claim (a cancelled part stays so)."""
    ReviewNodeRun.objects.filter(pk=node.pk, status=ReviewNodeRun.RUNNING, claim_token=token).update(
        status=ReviewNodeRun.SUCCEEDED, cursor="0", batches=tally.batches, keys_scanned=tally.keys_scanned,
        commands=tally.commands, billed_commands=tally.billed, dbsize_after=size_after,
        aggregates=tally.to_json(), claim_token="", finished_at=timezone.now(), heartbeat_at=timezone.now())


def stale_parts(run):
    """The parts of `run` that no worker is on: handed back after an interruption (queued
    with a checkpoint or an error), or running with a lapsed lease (their worker died). A
    part queued untouched is left to the task already sent for it. Sending a part's task
    again is harmless all the same: a part another worker holds or that ended is left alone."""
    lapsed = timezone.now() - timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    handed_back = Q(status=ReviewNodeRun.QUEUED) & (Q(batches__gt=0) | ~Q(error=""))
    return list(run.node_runs.filter(handed_back | Q(status=ReviewNodeRun.RUNNING, heartbeat_at__lt=lapsed)))


# --- the whole run ------------------------------------------------------------------------
def _current_slots(database, nodes, spent):
    """The SlotMap now, asked of the URL's node or, when it is gone, of any node of the
    run; None when no node answers. `spent[0]` counts the CLUSTER NODES executed (a node
    that cannot be reached executes none)."""
    base = keyspace.client_for(database)
    candidates = [base] + [keyspace_cluster.node_client(base, node.address) for node in nodes]
    for client in candidates:
        try:
            answer = keyspace_cluster.slot_map(client)
            spent[0] += 1
            return answer
        except redis.ResponseError:
            spent[0] += 1  # executed, refused: billed all the same
            continue
        except (redis.RedisError, OSError):
            continue
        finally:
            if client is not base:
                client.close()
                client.connection_pool.disconnect()
    return None


def finish(run):
    """Merge the parts of `run` into its figures and end it, in one transaction: succeeded
    when every primary was read (a sampled run: with one stratum per primary in `strata`),
    partial (the missing nodes named) when some could not be,
    failed when the slots moved during the run, or when no node answers the final slot
    check (a move could not be ruled out). Does nothing while a part is still queued or
    running, or when the run is no longer running (cancelled, or ended by another callback).
    Returns the run, with `ended_here` True when this call ended it.

    The run's row is locked first, so two parts ending at once cannot both read the slot
    map: the second waits, then finds the run ended and sends nothing, and every command
    Redis executed for the run is counted on it."""
    with transaction.atomic():
        locked = ReviewRun.objects.select_for_update().filter(pk=run.pk, status=ReviewRun.RUNNING).first()
        if locked is None:
            run = ReviewRun.objects.select_related("database").get(pk=run.pk)
            run.ended_here = False
            return run
        return _finish_locked(run)


def _finish_locked(run):
    run = ReviewRun.objects.select_related("database").get(pk=run.pk)
    run.ended_here = False
    nodes = list(run.node_runs.all())
    if run.status != ReviewRun.RUNNING or not nodes or any(
            node.status in (ReviewNodeRun.QUEUED, ReviewNodeRun.RUNNING) for node in nodes):
        return run
    database = run.database
    namespaces = list(review.Namespace.objects.for_database(database))
    done = [node for node in nodes if node.status == ReviewNodeRun.SUCCEEDED]
    missing = [node for node in nodes if node.status != ReviewNodeRun.SUCCEEDED]
    parts = [review.Tally.from_json(node.aggregates) for node in done]
    tally = merge(parts)
    started = run.started_at or run.created_at
    tally.elapsed_s = (timezone.now() - started).total_seconds()
    # The run's own commands (CLUSTER NODES of `prepare` and of this check) are billed
    # beside its parts': run.billed_commands = the parts' sum + these (`topology_billed`).
    spent = [0]
    now_slots = _current_slots(database, nodes, spent)
    tally.commands += run.commands + spent[0]
    tally.billed += run.billed_commands + spent[0]
    moved = []
    if now_slots is not None:
        then = keyspace_cluster.SlotMap.from_owners({node.address: node.slots for node in nodes})
        changed = {owner for _slot, *owners in keyspace_cluster.moved_slots(then, now_slots) for owner in owners}
        moved = [node.address for node in done if node.address in changed]
    if now_slots is None and not missing:
        # Every part read its primary, but nothing proves the slots stayed put meanwhile.
        status = ReviewRun.FAILED
        error = ("Every primary was read, but no node of the cluster answered CLUSTER NODES at the end, so "
                 "whether slots moved during the review (a failover or resharding) cannot be checked: the "
                 "figures are not reported as exact. Run the review again once the cluster answers.")
    elif moved:
        status = ReviewRun.FAILED
        error = (f"The cluster's topology changed during the review: the slots of {', '.join(moved)} moved "
                 f"(a failover or resharding), so keys may have been read twice or not at all. "
                 f"Run the review again.")
    elif missing:
        status = ReviewRun.PARTIAL
        error = (f"Partial review: {len(missing)} of {len(nodes)} primaries could not be read "
                 f"({'; '.join(node.error or node.address for node in missing)}). "
                 f"The figures cover {len(done)} primar{'y' if len(done) == 1 else 'ies'} only.")
    else:
        status, error = ReviewRun.SUCCEEDED, ""
    rows = review.namespace_rows(tally, namespaces)
    labels = {str(ns.pk): ns.prefix for ns in namespaces if ns.pk}
    # A sampled run's estimates cover the primaries read: their DBSIZEs are its population.
    sizes_before = [node.dbsize_before for node in (done if run.sampled else nodes)]
    sizes_after = [node.dbsize_after for node in (done if run.sampled else nodes)]
    strata = [{"address": node.address, "population": node.dbsize_before, "keys": part.keys_scanned,
               "findings": {kind: part.findings.get(kind, 0) for kind in FINDINGS},
               "sampled": node.sample_size is not None}
              for node, part in zip(done, parts)] if run.sampled else []
    with transaction.atomic():
        locked = ReviewRun.objects.select_for_update().filter(pk=run.pk, status=ReviewRun.RUNNING).first()
        if locked is None:
            run = ReviewRun.objects.select_related("database").get(pk=run.pk)
            run.ended_here = False
            return run
        if status != ReviewRun.FAILED:
            ReviewNamespaceStat.objects.bulk_create([
                ReviewNamespaceStat(run=run, namespace=row["namespace_obj"], label=row["prefix"], keys=row["keys"],
                                    bytes=row["bytes"], ttl_histogram=row["ttl_histogram"],
                                    findings=row["findings"], top_keys=row["top_keys"])
                for row in rows])
            ReviewSample.objects.bulk_create([
                ReviewSample(run=run, finding=kind, namespace_label=labels.get(ident, review.UNKNOWN_LABEL),
                             key=keyspace.decode_key(token), type=kind_type or "", ttl_ms=ttl_ms, memory=memory)
                for kind, samples in tally.samples.items()
                for token, ident, kind_type, ttl_ms, memory in samples])
        ReviewRun.objects.filter(pk=run.pk).update(
            status=status, error=error, missing_nodes=[node.address for node in missing],
            finished_at=timezone.now(), cursor="0", batches=tally.batches, keys_scanned=tally.keys_scanned,
            foreign_keys=tally.foreign, vanished_keys=tally.vanished, commands=tally.commands,
            billed_commands=tally.billed, duration_s=tally.elapsed_s,
            findings={kind: tally.findings.get(kind, 0) for kind in FINDINGS},
            dbsize_before=None if None in sizes_before else sum(sizes_before),
            dbsize_after=None if None in sizes_after else sum(sizes_after),
            strata=strata, aggregates={}, claim_token="", heartbeat_at=timezone.now())
        ReviewNodeRun.objects.filter(run=run).update(aggregates={})
    run = ReviewRun.objects.select_related("database").get(pk=run.pk)
    run.ended_here = True
    return run


def review_inline(run, client, *, namespaces=None, checkpoint_every=None, on_batch=None):
    """Review every primary of `run` in this process, one after the other, then `finish`.
    A primary that fails is marked failed at once (no retry here): the run ends partial.
    Postgres staying away past JOB_DB_OUTAGE_SECONDS raises its error (the part keeps its
    checkpoint): `review_database` stops the run resumable."""
    for node in prepare(run, client):
        if node.status == ReviewNodeRun.SUCCEEDED:
            continue
        try:
            review_node(node, namespaces=namespaces, checkpoint_every=checkpoint_every, on_batch=on_batch)
        except NodeInterrupted as exc:
            if exc.postgres:  # the run stops resumable (review_database): not a missing primary
                raise exc.cause from exc
            node.mark_failed(exc.reason)
    return finish(run)


def review_unsaved(database, client, classifier, *, batch, strategy, needs, checkpoint_every, on_batch):
    """`review_database(persist=False)` on a cluster: every primary in turn, merged; a
    primary that fails raises (there is no run to mark partial)."""
    parts = [review.Tally(commands=1, billed=1)]  # the CLUSTER NODES below
    for address in keyspace_cluster.slot_map(client).addresses:
        direct = keyspace_cluster.node_client(client, address)
        tally = review.Tally()
        with contextlib.closing(direct):
            review.scan_keyspace(direct, classifier, tally, cursor=0, batch=batch, on_checkpoint=lambda *a: True,
                         checkpoint_every=checkpoint_every, on_batch=on_batch, clock=time.perf_counter,
                         strategy=strategy, needs=needs)
        direct.connection_pool.disconnect()
        parts.append(tally)
    return merge(parts)
