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
"""

import contextlib
import heapq
import time

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from continuity import keyspace
from continuity.keyspace import cluster as keyspace_cluster
from continuity.keyspace import stream
from continuity.models import ReviewNamespaceStat, ReviewNodeRun, ReviewRun, ReviewSample
from continuity.operations import review
from continuity.policy import FINDINGS, Policies


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
def primaries(database, client):
    """The primaries that serve slots, as `CLUSTER NODES` of the node the URL names lists them."""
    return [node for node in keyspace_cluster.cluster_nodes(client) if node.role == "primary" and node.slots]


def prepare(run, client):
    """The run's ReviewNodeRun rows, one per primary, created on the first call (later
    calls, a resumed run, return the rows as they are)."""
    existing = list(run.node_runs.all())
    if existing:
        return existing
    nodes = primaries(run.database, client)
    covered = sum(node.slot_count for node in nodes)
    if covered != keyspace_cluster.SLOTS:
        raise keyspace_cluster.ClusterRefusal(
            f"{run.database.name} is a Redis Cluster whose primaries serve {covered} of {keyspace_cluster.SLOTS} "
            f"slots; a review would miss keys. Nothing was reviewed.")
    with transaction.atomic():
        ReviewNodeRun.objects.bulk_create([
            ReviewNodeRun(run=run, address=node.address, node_id=node.node_id,
                          slots=[list(pair) for pair in node.slots])
            for node in nodes
        ], ignore_conflicts=True)
    return list(run.node_runs.all())


# --- one primary --------------------------------------------------------------------------
class NodeInterrupted(Exception):
    """Reading a primary failed; its part was handed back (queued) with its checkpoint."""

    def __init__(self, node, reason, cause):
        super().__init__(reason)
        self.node = node
        self.reason = reason
        self.transient = keyspace.capabilities.is_transient(cause)


def review_node(node, *, namespaces=None, checkpoint_every=None, on_batch=None):
    """Review the primary of `node` (a ReviewNodeRun) from its checkpoint and store its
    Tally on the row (status succeeded); merges nothing. Returns the row's status; a part
    another worker holds or that already ended is left alone. Redis failures raise
    NodeInterrupted after releasing the part."""
    token = node.claim(settings.REVIEW_LEASE_SECONDS)
    if token is None:
        return node.status
    run = ReviewRun.objects.select_related("database").get(pk=node.run_id)
    database = run.database
    if namespaces is None:
        namespaces = list(review.Namespace.objects.for_database(database))
    classifier = review.Classifier(database, namespaces)
    _, needs = review.plan(database, Policies.of(namespaces))
    # The scan script's SCAN runs on the node it is sent to: every key it reads is local.
    # (Declared KEYS of several slots would be refused with CROSSSLOT.)
    strategy = stream.SCAN_SCRIPT
    tally = review.Tally.from_json(node.aggregates)
    base = keyspace.client_for(database)
    direct = keyspace_cluster.node_client(base, node.address)
    try:
        if node.dbsize_before is None:
            size = stream.dbsize(direct)
            tally.commands += 1
            tally.billed += 1
            node.checkpoint(token, dbsize_before=size, aggregates=tally.to_json(), commands=tally.commands,
                            billed_commands=tally.billed)

        def on_checkpoint(cursor, tally):
            return node.checkpoint(token, cursor=str(cursor), batches=tally.batches, keys_scanned=tally.keys_scanned,
                                   commands=tally.commands, billed_commands=tally.billed,
                                   aggregates=tally.to_json())

        finished = review.scan_keyspace(direct, classifier, tally, cursor=int(node.cursor), batch=run.batch_size,
                                on_checkpoint=on_checkpoint,
                                checkpoint_every=checkpoint_every or settings.REVIEW_CHECKPOINT_BATCHES,
                                on_batch=on_batch, clock=time.perf_counter, strategy=strategy, needs=needs)
        if finished:
            size_after = stream.dbsize(direct)
            tally.commands += 1
            tally.billed += 1
            ReviewNodeRun.objects.filter(pk=node.pk, status=ReviewNodeRun.RUNNING, claim_token=token).update(
                status=ReviewNodeRun.SUCCEEDED, cursor="0", batches=tally.batches, keys_scanned=tally.keys_scanned,
                commands=tally.commands, billed_commands=tally.billed, dbsize_after=size_after,
                aggregates=tally.to_json(), claim_token="", finished_at=timezone.now(), heartbeat_at=timezone.now())
    except (redis.RedisError, keyspace.KeyspaceError, OSError) as exc:
        reason = f"{node.address}: {keyspace.describe(exc)}"
        node.release(token, reason)
        raise NodeInterrupted(node, reason, exc) from exc
    finally:
        direct.close()
        direct.connection_pool.disconnect()
    node.refresh_from_db()
    return node.status


# --- the whole run ------------------------------------------------------------------------
def _current_slots(database, nodes):
    """{address: [[first, last], …]} of the primaries now, asked of the URL's node or, when it
    is gone, of any node of the run; None when no node answers."""
    base = keyspace.client_for(database)
    candidates = [base] + [keyspace_cluster.node_client(base, node.address) for node in nodes]
    for client in candidates:
        try:
            return {node.address: [list(pair) for pair in node.slots] for node in primaries(database, client)}
        except (redis.RedisError, OSError):
            continue
        finally:
            if client is not base:
                client.close()
                client.connection_pool.disconnect()
    return None


def finish(run):
    """Merge the parts of `run` into its figures and end it, in one transaction: succeeded
    when every primary was read, partial (the missing nodes named) when some could not be,
    failed when the slots moved during the run. Does nothing while a part is still queued or
    running, or when the run is no longer running (cancelled, or ended by another callback).
    Returns the run, with `ended_here` True when this call ended it."""
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
    tally = merge(review.Tally.from_json(node.aggregates) for node in done)
    started = run.started_at or run.created_at
    tally.elapsed_s = (timezone.now() - started).total_seconds()
    now_slots = _current_slots(database, nodes)
    moved = [node.address for node in done
             if now_slots is not None and now_slots.get(node.address) != node.slots]
    if moved:
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
    sizes_before = [node.dbsize_before for node in nodes]
    sizes_after = [node.dbsize_after for node in nodes]
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
            aggregates={}, claim_token="", heartbeat_at=timezone.now())
        ReviewNodeRun.objects.filter(run=run).update(aggregates={})
    run = ReviewRun.objects.select_related("database").get(pk=run.pk)
    run.ended_here = True
    return run


def review_inline(run, client, *, namespaces=None, checkpoint_every=None, on_batch=None):
    """Review every primary of `run` in this process, one after the other, then `finish`.
    A primary that fails is marked failed at once (no retry here): the run ends partial."""
    for node in prepare(run, client):
        if node.status == ReviewNodeRun.SUCCEEDED:
            continue
        try:
            review_node(node, namespaces=namespaces, checkpoint_every=checkpoint_every, on_batch=on_batch)
        except NodeInterrupted as exc:
            node.mark_failed(exc.reason)
    return finish(run)


def review_unsaved(database, client, classifier, *, batch, strategy, needs, checkpoint_every, on_batch):
    """`review_database(persist=False)` on a cluster: every primary in turn, merged; a
    primary that fails raises (there is no run to mark partial)."""
    parts = []
    for node in primaries(database, client):
        direct = keyspace_cluster.node_client(client, node.address)
        tally = review.Tally()
        with contextlib.closing(direct):
            review.scan_keyspace(direct, classifier, tally, cursor=0, batch=batch, on_checkpoint=lambda *a: True,
                         checkpoint_every=checkpoint_every, on_batch=on_batch, clock=time.perf_counter,
                         strategy=stream.SCAN_SCRIPT, needs=needs)
        direct.connection_pool.disconnect()
        parts.append(tally)
    return merge(parts)
