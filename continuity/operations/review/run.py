"""A TTL review run: its parts (one per node of the keyspace), their merge, and its end.

`open_run` claims the run and `prepare`s one part per node (one for a standalone server,
one per primary serving slots of a Redis Cluster); `review_database` reviews them here one
after the other (`review_inline`), the review task hands them to workers (`fan_out`, a
Celery chord) or, for a run of one part, reads it itself.
`finish` merges the parts' Tallies into the run's figures in one transaction.

A node that could not be read ends the run `partial` (never `succeeded`), naming it. On a
cluster, slots that move during the run (a failover, a resharding) or are being migrated
(MIGRATING/IMPORTING) when it starts or ends fail it: keys of those slots may have been read
twice or not at all. A migration that began and ended inside the run changed an owner,
which the end's comparison sees.

Sampled reviews: `prepare` asks every node its DBSIZE and gives each a share of the sample in
proportion to it (`allocate`); each part draws its share at random from its own node, and
`finish` keeps one stratum per node on the run, which `models.reviews.stratified_estimate`
combines into one estimate with a 95% interval (one stratum on a standalone server: the
Wilson interval of a simple random sample). A node holding no more keys than its share is
read whole. Checked on Redis 7.0, whose cluster nodes keep one hash table per database.
Redis 7.4+ and Valkey 8 keep one per slot and encode the slot in the SCAN cursor: sampling
a cluster there is untested; check the keys drawn per primary on the review page.

Cost: each part counts the commands its node executed; the run's own (CLUSTER NODES, to
learn the primaries and to check the slots) are billed beside them; the run's
`billed_commands` is the sum.
"""

import dataclasses
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from continuity import keyspace
from continuity.billing import Cost, estimated_cost_usd
from continuity.keyspace import cluster as keyspace_cluster
from continuity.keyspace import nodes as keyspace_nodes
from continuity.models import Namespace, ReviewNamespaceStat, ReviewNodeRun, ReviewRun, ReviewSample
from continuity.models.reviews import estimates_of
from continuity.operations.review.parts import NodeInterrupted, plan, review_node, scan_node
from continuity.operations.review.tally import NO_NAMESPACE_LABEL, Classifier, Tally, merge
from continuity.policy import FINDINGS, Policies
from dashboard import jobs, postgres


class ReviewBusy(Exception):
    """Another review of this database is queued or running."""

    def __init__(self, run):
        super().__init__(f"Review #{run.pk} of {run.database.name} is already {run.status}.")
        self.run = run


class ReviewInterrupted(Exception):
    """Redis failed while the run was prepared, or Postgres stayed away past
    JOB_DB_OUTAGE_SECONDS (`postgres`). The run was handed back (or, Postgres being down, its
    lease lapses) and each part keeps its checkpoint, so a retry continues where they left
    off."""

    def __init__(self, run, reason, *, postgres=False):
        super().__init__(reason)
        self.run = run
        self.reason = reason
        self.postgres = postgres

    def resumable_message(self):
        """For an operator, after a Postgres outage: which run and how it resumes (built
        without asking Postgres, which may still be away)."""
        run = self.run
        return (f"Review #{run.pk} of {run.database.name} stopped: {self.reason}. Each primary keeps its own "
                f"checkpoint and is not marked failed: its task retries it, the next scheduled review of "
                f"{run.database.name} resumes it, or run `manage.py ttl_review --database {run.database.name}` "
                f"again.")


# --- result ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReviewResult:
    database: str
    status: str
    keys_scanned: int
    foreign_keys: int
    vanished_keys: int
    findings: dict
    namespaces: list  # [{"namespace", "prefix", "keys", "bytes", "ttl_histogram", "findings", "top_keys"}]
    commands: int
    duration_s: float
    run: ReviewRun | None = None
    billed_commands: int = 0
    strategy: str = ""
    sampled: bool = False
    population: int | None = None  # DBSIZE: what a sampled review's estimates scale to
    error: str = ""  # why a failed run failed (or why a partial one is partial)
    missing_nodes: list = field(default_factory=list)  # a partial review: the nodes not read
    strata: list = field(default_factory=list)  # a sampled review: one stratum per node

    @property
    def estimated_cost_usd(self):
        return estimated_cost_usd(self.billed_commands)

    def estimates(self):
        """{finding: Estimate} for the whole keyspace (the counts themselves when exact)."""
        return estimates_of(self.findings, keys=self.keys_scanned, population=self.population,
                            sampled=self.sampled, strata=self.strata)

    def as_json(self):
        return {"database": self.database, "run": self.run.pk if self.run else None, "status": self.status,
                "keys_scanned": self.keys_scanned, "foreign_keys": self.foreign_keys,
                "vanished_keys": self.vanished_keys, "findings": dict(self.findings),
                "namespaces": self.namespaces, "commands": self.commands,
                "billed_commands": self.billed_commands, "estimated_cost_usd": self.estimated_cost_usd,
                "strategy": self.strategy, "sampled": self.sampled, "duration_s": round(self.duration_s, 3),
                **({"population": self.population,
                    "estimates": {kind: {"value": e.value, "low_95": e.low, "high_95": e.high}
                                  for kind, e in self.estimates().items()}} if self.sampled else {}),
                **({"strata": list(self.strata)} if self.strata else {}),
                **({"error": self.error} if self.error else {}),
                **({"missing_nodes": list(self.missing_nodes)}
                   if self.missing_nodes or self.status == ReviewRun.PARTIAL else {})}


def namespace_rows(tally, namespaces):
    by_ident = {(str(ns.pk) if ns.pk else ns.prefix): ns for ns in namespaces}
    rows = []
    for ident, ns_tally in tally.namespaces.items():
        ns = by_ident.get(ident)
        rows.append({
            "namespace": ns.name if ns else None,
            "prefix": ns.prefix if ns else NO_NAMESPACE_LABEL,
            "namespace_obj": ns,
            "keys": ns_tally.keys,
            "breaking": ns_tally.breaking,
            "bytes": ns_tally.bytes,
            "ttl_histogram": ns_tally.histogram,
            "findings": dict(ns_tally.findings),
            "top_keys": [[token, memory] for memory, token in sorted(ns_tally.top, reverse=True)],
        })
    rows.sort(key=lambda row: (row["prefix"] == NO_NAMESPACE_LABEL, row["prefix"]))
    return rows


def _unsaved_result(database, tally, namespaces, strategy):
    rows = namespace_rows(tally, namespaces)
    for row in rows:
        row.pop("namespace_obj")
    return ReviewResult(database=database.name, status=ReviewRun.SUCCEEDED, keys_scanned=tally.keys_scanned,
                        foreign_keys=tally.foreign, vanished_keys=tally.vanished, findings=dict(tally.findings),
                        namespaces=rows, commands=tally.commands, duration_s=tally.elapsed_s,
                        billed_commands=tally.billed, strategy=strategy)


def result_from_run(run):
    """A ReviewResult from a run's rows (its figures so far while it is still running)."""
    rows = [{"namespace": s.namespace.name if s.namespace else None, "prefix": s.label, "keys": s.keys,
             "bytes": s.bytes, "ttl_histogram": s.ttl_histogram, "findings": s.findings, "top_keys": s.top_keys}
            for s in run.namespace_stats.select_related("namespace")]
    rows.sort(key=lambda row: (row["prefix"] == NO_NAMESPACE_LABEL, row["prefix"]))
    return ReviewResult(database=run.database.name, status=run.status, keys_scanned=run.keys_scanned,
                        foreign_keys=run.foreign_keys, vanished_keys=run.vanished_keys,
                        findings=dict(run.findings or {}), namespaces=rows, commands=run.commands,
                        duration_s=run.duration_s or 0.0, run=run, billed_commands=run.billed_commands,
                        strategy=run.strategy, sampled=run.sampled, population=run.dbsize_before,
                        error=run.error if run.status in (ReviewRun.FAILED, ReviewRun.PARTIAL) else "",
                        missing_nodes=list(run.missing_nodes or []), strata=list(run.strata or []))


# --- starting ---------------------------------------------------------------------------------
def start_review(*, database, actor=None, triggered_by=ReviewRun.CLI, batch=None, sample=None, strategy=""):
    """A new queued run (of a random sample of `sample` keys, when given), or ReviewBusy
    when one is already queued or running."""
    try:
        with transaction.atomic():
            return ReviewRun.objects.create(database=database, actor=actor, triggered_by=triggered_by,
                                            batch_size=batch or settings.REVIEW_SCAN_COUNT, sample_size=sample,
                                            strategy=strategy)
    except IntegrityError:
        existing = ReviewRun.objects.active().for_database(database).select_related("database").first()
        if existing is None:
            raise
        raise ReviewBusy(existing) from None


MIN_SHARE = 30  # keys drawn at least from a sampled node: its proportion needs a few draws


def allocate(sample, sizes):
    """Each node's share of a sample of `sample` keys, in proportion to its DBSIZE in `sizes`
    (proportional stratified allocation): a count, at least MIN_SHARE, or None where the node
    holds no more keys than its share (it is read whole). All None (an exact review) when the
    keyspace is no larger than the sample, or when a DBSIZE is unknown (refused by an ACL):
    the sample could not be spread honestly."""
    if None in sizes or sum(sizes) <= sample:
        return [None] * len(sizes)
    total = sum(sizes)
    shares = []
    for size in sizes:
        share = max(MIN_SHARE, round(sample * size / total))
        shares.append(None if size <= share else share)
    return shares


DBSIZE = ("DBSIZE",)  # sent ahead with the keyspace's opening probe: each part's DBSIZE before


def prepare(run, token, nodes):
    """The run's parts, one ReviewNodeRun per node, created on the first call (later calls
    return the rows as they are). A cluster whose slots are not all served,
    or are being migrated, is refused (SlotsMoved) before any key is read. For a sampled run
    each part gets its node's DBSIZE (one billed command, in its tally) and its share of the
    sample (`allocate`); a node that does not answer is failed at once (the run ends
    partial). The run's own commands (CLUSTER NODES) are billed to it."""
    existing = list(run.node_runs.all())
    if existing:
        return existing
    # DBSIZE sent ahead with the keyspace's opening probe (`open_run`), where it was.
    ahead = {node.address: nodes.take(node, DBSIZE) for node in nodes.nodes}
    try:
        layout = nodes.check(silent=[])  # a silent primary's part fails when it is read: partial
    finally:
        spent = sum((cost for cost in nodes.drain().values()), Cost())
        ReviewRun.objects.filter(pk=run.pk).update(commands=F("commands") + spent.sent,
                                                   billed_commands=F("billed_commands") + spent.billed)
    owners = layout.owners if layout else {}
    rows = [ReviewNodeRun(run=run, address=node.address, node_id=layout.node_ids.get(node.address, "") if layout
                          else "", slots=owners.get(node.address, [])) for node in nodes.nodes]
    asked = Tally(commands=1, billed=1).to_json()
    sampled = False
    if run.sample_size:
        sizes, errors = [], []
        for node in nodes.nodes:
            try:
                size = ahead[node.address]
                if isinstance(size, Exception):
                    raise size
                sizes.append(int(size) if size is not None else keyspace.dbsize(node.client))
                errors.append(None)
            except (redis.RedisError, OSError) as exc:
                sizes.append(None)
                errors.append(f"{node.address}: {keyspace.describe_error(exc)}")
        answered = [size for size, error in zip(sizes, errors) if error is None]
        shares = iter(allocate(run.sample_size, answered))
        for row, size, error in zip(rows, sizes, errors):
            if error is not None:
                row.status, row.error, row.finished_at = ReviewNodeRun.FAILED, error, timezone.now()
                continue
            row.sample_size = next(shares)
            sampled = sampled or row.sample_size is not None
            if size is not None:
                row.dbsize_before, row.aggregates, row.commands, row.billed_commands = size, asked, 1, 1
    else:  # an exact part starts from the DBSIZE sent ahead, where it was (else it asks itself)
        for row, node in zip(rows, nodes.nodes):
            size = ahead[node.address]
            if size is None:
                continue
            billed = 0 if isinstance(size, redis.ResponseError) and keyspace.capabilities.refused(size) else 1
            row.aggregates, row.commands, row.billed_commands = Tally(commands=1, billed=billed).to_json(), 1, billed
            if not isinstance(size, Exception):
                row.dbsize_before = int(size)
    strategy, _needs = plan(run.database, Policies.of(Namespace.objects.for_database(run.database)),
                            run.strategy or None)
    with transaction.atomic():
        ReviewNodeRun.objects.bulk_create(rows, ignore_conflicts=True)
        run.checkpoint(token, strategy=strategy, sampled=sampled)
    run.strategy, run.sampled = strategy, sampled
    return list(run.node_runs.all())


# --- the operation --------------------------------------------------------------------------
REVIEW_NODE_TASK = "continuity.review_node"  # continuity.tasks.review.review_node_task: one part
FINISH_TASK = "continuity.finish_cluster_review"  # its chord's callback: `finish`


def open_run(run):
    """Claim `run` and return its parts not yet read (preparing them the first time), for
    this process or its workers to read: ReviewBusy when another worker holds it, None when
    it ended (before, or now: a record that contradicts the server, or a cluster whose
    slots are not all served or are being migrated, fails it before any key is read).
    Redis failures raise ReviewInterrupted after handing the run back; so does Postgres
    staying away past JOB_DB_OUTAGE_SECONDS (`postgres=True`): it is never failed for it."""
    token, _resumed = run.claim(settings.REVIEW_LEASE_SECONDS)
    if token is None:
        if run.is_active:
            raise ReviewBusy(run)
        return None
    database = run.database
    parts = list(run.node_runs.all())  # a resumed run: its parts as they were planned
    try:
        if not parts:
            with keyspace_nodes.primaries(database, ahead=[DBSIZE]) as nodes:
                parts = prepare(run, token, nodes)
    except (postgres.PostgresAway, *postgres.GONE) as exc:
        reason = postgres.describe_outage(exc)
        postgres.let_go(lambda: run.release(token, reason))
        raise ReviewInterrupted(run, reason, postgres=True) from exc
    except (keyspace.ClusterRefusal, keyspace_nodes.SlotsMoved) as exc:  # final: a retry is refused alike
        run.fail(_refusal(database, exc))
        run.refresh_from_db()
        return None
    except (redis.RedisError, keyspace.KeyspaceError, OSError) as exc:
        reason = keyspace.describe_error(exc)
        run.release(token, reason)
        run.refresh_from_db()
        raise ReviewInterrupted(run, reason) from exc
    return [part for part in parts if part.status != part.SUCCEEDED]


def fan_out(run, parts):
    """Hand `parts` of `run` to workers, one task each, as a chord whose callback ends the
    run (`finish`), once the transaction commits."""
    jobs.fan_out_on_commit(REVIEW_NODE_TASK, [(part.pk,) for part in parts], FINISH_TASK, run.pk)


def review_database(*, database, run=None, actor=None, batch=None, triggered_by=ReviewRun.CLI, persist=True,
                    namespaces=None, checkpoint_every=None, on_batch=None, sample=None, strategy=None, fault=None):
    """Review the whole keyspace of `database`, node by node, here, and return a ReviewResult.

    With `persist` (the default) the review is a ReviewRun row: `run` (a queued or
    stale-running run) is claimed and continued from its parts' checkpoints (`open_run`), or
    a new run is started (ReviewBusy when another is active). A finished run is returned
    as it is. A node that cannot be read ends the run `partial`, never `succeeded` (failed
    when no node could be read). `persist=False` reviews without Postgres writes
    (benchmarks), with `namespaces` given or read once. `on_batch(tally)` is called after
    each batch (progress, tests).

    With `sample` (or a run created with one) only a random sample of about that many keys
    is read: the cost does not grow with the keyspace, and the findings are sample counts
    that pages show as estimates with a 95% interval. A keyspace no larger than the sample is
    reviewed exactly instead. `strategy`: the read strategy instead of `parts.plan`'s choice
    (tests, benchmarks); `fault`: a test hook (`parts.scan_node`)."""
    if namespaces is None:
        namespaces = list(Namespace.objects.for_database(database)) if database.pk else []
    if not persist:
        return _review_unsaved(database, namespaces, batch=batch, checkpoint_every=checkpoint_every,
                               on_batch=on_batch, strategy=strategy)
    if run is None:
        run = start_review(database=database, actor=actor, triggered_by=triggered_by, batch=batch, sample=sample,
                           strategy=strategy or "")
    parts = open_run(run)
    if parts is None:
        return result_from_run(run)
    return result_from_run(review_inline(run, parts, namespaces=namespaces, checkpoint_every=checkpoint_every,
                                         on_batch=on_batch, fault=fault))


def _refusal(database, exc):
    if isinstance(exc, keyspace_nodes.SlotsMoved):
        return f"{exc}: a review would miss keys or read some twice. Nothing was reviewed."
    return str(exc)


def review_inline(run, parts, *, namespaces=None, checkpoint_every=None, on_batch=None, fault=None):
    """Review every part of `run` in this process, one after the other, then `finish`. A
    node that fails is marked failed at once (no retry here): the run ends partial, or
    failed when no node could be read.
    Postgres staying away past JOB_DB_OUTAGE_SECONDS raises ReviewInterrupted (the part
    keeps its checkpoint, the run stays running)."""
    for part in parts:
        if part.status == ReviewNodeRun.SUCCEEDED:
            continue
        try:
            review_node(part, namespaces=namespaces, checkpoint_every=checkpoint_every, on_batch=on_batch,
                        fault=fault)
        except NodeInterrupted as exc:
            if exc.postgres:  # the run stops resumable: not a missing node
                raise ReviewInterrupted(run, postgres.describe_outage(exc.cause), postgres=True) from exc.cause
            part.fail(exc.reason)
    return finish(run)


def _review_unsaved(database, namespaces, *, batch, checkpoint_every, on_batch, strategy):
    """`review_database(persist=False)`: every node in turn, merged; a node that fails
    raises (there is no run to mark partial)."""
    classifier = Classifier(database, namespaces)
    strategy, needs = plan(database, Policies.of(namespaces), strategy)
    parts = []
    with keyspace_nodes.primaries(database) as nodes:
        for node in nodes.nodes:
            tally = Tally()
            scan_node(node, classifier, tally, cursor=0, batch=batch or settings.REVIEW_SCAN_COUNT,
                      on_checkpoint=lambda *a: True,
                      checkpoint_every=checkpoint_every or settings.REVIEW_CHECKPOINT_BATCHES,
                      on_batch=on_batch, clock=time.perf_counter, strategy=strategy, needs=needs)
            parts.append(tally)
        spent = sum((cost for cost in nodes.drain().values()), Cost())
    total = merge(parts)
    total.commands += spent.sent
    total.billed += spent.billed
    return _unsaved_result(database, total, namespaces, strategy)


def stale_parts(run):
    """The parts of `run` that no worker is on: handed back after an interruption, or whose
    worker died (`JobQuerySet.stalled`). A part queued untouched is left to the task already
    sent for it. Sending a part's task again is harmless all the same: a part another worker
    holds or that ended is left alone."""
    return list(run.node_runs.stalled(settings.REVIEW_LEASE_SECONDS))


# --- the end -----------------------------------------------------------------------------------
def _slots_now(database, parts, spent):
    """On a cluster: the SlotMap now, with every migration its primaries list, asked of the
    URL's node or, when it is gone, of any node of the run; None when no node answers, or
    when the record now reaches Upstash's REST API (one logical primary, no cluster behind it).
    `spent` counts the CLUSTER NODES executed (a node that cannot be reached executes none)."""
    base = keyspace.client_for(database)
    if keyspace.is_rest(base):  # one logical primary: the cluster's nodes are not reached (the parts say so)
        return None
    candidates = [base] + [keyspace_nodes.direct_client(base, part.address) for part in parts]
    layout = answered = None
    for client in candidates:
        try:
            layout = keyspace_cluster.slot_map(client)
        except redis.ResponseError:
            spent.add(sent=1, billed=1)  # executed, refused: billed all the same
            continue
        except (redis.RedisError, OSError):
            continue
        spent.add(sent=1, billed=1)
        answered = keyspace_nodes.address_of(client)
        break
    if layout is None:
        return None
    moving = set(layout.moving)  # the answering node's own migrations; every other primary lists its own
    for address in layout.addresses:
        if address == answered:
            continue
        try:
            moving.update(keyspace_cluster.slot_map(keyspace_nodes.direct_client(base, address)).moving)
        except (redis.RedisError, OSError):
            continue  # a silent primary: its own part failed, or the comparison below sees its slots
        spent.add(sent=1, billed=1)
    return dataclasses.replace(layout, moving=tuple(sorted(moving)))


def finish(run):
    """Merge the parts of `run` into its figures and end it, in one transaction: succeeded
    when every node was read (a sampled run: with one stratum per node in `strata`),
    partial (the missing nodes named) when some could not be, failed on a cluster whose
    slots moved during the run or are being migrated at its end, or when no node answers the
    final slot check (a move could not be ruled out). Does nothing while a part is still
    queued or running, or when the run is no longer running (cancelled, or ended by another
    call). Returns the run, with `ended_here` True when this call ended it.

    The run's row is locked first, so two parts ending at once cannot both check the slots:
    the second waits, then finds the run ended and sends nothing, and every command Redis
    executed for the run is counted on it."""
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
    parts = list(run.node_runs.all())
    if run.status != ReviewRun.RUNNING or not parts or any(
            part.status in (ReviewNodeRun.QUEUED, ReviewNodeRun.RUNNING) for part in parts):
        return run
    database = run.database
    namespaces = list(Namespace.objects.for_database(database))
    done = [part for part in parts if part.status == ReviewNodeRun.SUCCEEDED]
    missing = [part for part in parts if part.status != ReviewNodeRun.SUCCEEDED]
    tallies = [Tally.from_json(part.aggregates) for part in done]
    tally = merge(tallies)
    started = run.started_at or run.created_at
    tally.elapsed_s = (timezone.now() - started).total_seconds()
    spent = Cost()
    cluster = any(part.slots for part in parts)
    now_slots = _slots_now(database, parts, spent) if cluster else None
    # The run's own commands (CLUSTER NODES of `prepare` and of this check) beside its parts',
    # and what the parts not read to the end sent before they stopped: Redis executed it.
    tally.commands += run.commands + spent.sent + sum(part.commands for part in missing)
    tally.billed += run.billed_commands + spent.billed + sum(part.billed_commands for part in missing)
    status, error = ReviewRun.SUCCEEDED, ""
    if cluster:
        status, error = _slot_verdict(parts, done, missing, now_slots)
    if status == ReviewRun.SUCCEEDED and missing and not done:  # nothing was read: nothing is partial
        status, error = ReviewRun.FAILED, "; ".join(part.error or f"{part.address} was not read" for part in missing)
    elif status == ReviewRun.SUCCEEDED and missing:
        status = ReviewRun.PARTIAL
        error = (f"Partial review: {len(missing)} of {len(parts)} primaries could not be read "
                 f"({'; '.join(part.error or part.address for part in missing)}). "
                 f"The figures cover {len(done)} primar{'y' if len(done) == 1 else 'ies'} only.")
    rows = namespace_rows(tally, namespaces)
    labels = {str(ns.pk): ns.prefix for ns in namespaces if ns.pk}
    # A sampled run's estimates cover the nodes read: their DBSIZEs are its population.
    sizes_before = [part.dbsize_before for part in (done if run.sampled else parts)]
    sizes_after = [part.dbsize_after for part in (done if run.sampled else parts)]
    strata = [{"address": part.address, "population": part.dbsize_before, "keys": part_tally.keys_scanned,
               "findings": {kind: part_tally.findings.get(kind, 0) for kind in FINDINGS},
               "sampled": part.sample_size is not None}
              for part, part_tally in zip(done, tallies)] if run.sampled else []
    if status != ReviewRun.FAILED:
        ReviewNamespaceStat.objects.bulk_create([
            ReviewNamespaceStat(run=run, namespace=row["namespace_obj"], label=row["prefix"], keys=row["keys"],
                                breaking_keys=row["breaking"], bytes=row["bytes"], ttl_histogram=row["ttl_histogram"], findings=row["findings"],
                                top_keys=row["top_keys"])
            for row in rows])
        ReviewSample.objects.bulk_create([
            ReviewSample(run=run, finding=kind, namespace_label=labels.get(ident, NO_NAMESPACE_LABEL),
                         key=keyspace.decode_key(token), type=kind_type or "", ttl_ms=ttl_ms, memory=memory)
            for kind, samples in tally.samples.items()
            for token, ident, kind_type, ttl_ms, memory in samples])
    ReviewRun.objects.filter(pk=run.pk).update(
        status=status, error=error, missing_nodes=[part.address for part in missing],
        finished_at=timezone.now(), batches=tally.batches, keys_scanned=tally.keys_scanned,
        foreign_keys=tally.foreign, vanished_keys=tally.vanished, commands=tally.commands,
        billed_commands=tally.billed, duration_s=tally.elapsed_s,
        findings={kind: tally.findings.get(kind, 0) for kind in FINDINGS},
        dbsize_before=None if None in sizes_before else sum(sizes_before),
        dbsize_after=None if None in sizes_after else sum(sizes_after),
        strata=strata, claim_token="", heartbeat_at=timezone.now())
    ReviewNodeRun.objects.filter(run=run).update(aggregates={})
    run = ReviewRun.objects.select_related("database").get(pk=run.pk)
    run.ended_here = True
    return run


def _slot_verdict(parts, done, missing, now_slots):
    """(status, error) of a cluster run from its slots at the end: FAILED when no node
    answered, when a slot is being migrated, or when a slot of a node read moved."""
    if now_slots is None:
        if missing:
            return ReviewRun.SUCCEEDED, ""  # partial: the missing nodes say why
        return ReviewRun.FAILED, ("Every primary was read, but no node of the cluster answered CLUSTER NODES at the "
                                  "end, so whether slots moved during the review (a failover or resharding) cannot "
                                  "be checked: the figures are not reported as exact. Run the review again once the "
                                  "cluster answers.")
    if now_slots.moving:
        slot, source, target = now_slots.moving[0]
        more = f" (and {len(now_slots.moving) - 1} more)" if len(now_slots.moving) > 1 else ""
        return ReviewRun.FAILED, (f"Slot {slot} is being migrated from {source} to {target}{more} at the end of the "
                                  f"review (MIGRATING/IMPORTING), so keys of it may have been read twice or not at "
                                  f"all. Run the review again once the migration is over.")
    then = keyspace_cluster.SlotMap.from_owners({part.address: part.slots for part in parts})
    changed = {owner for _slot, *owners in keyspace_cluster.moved_slots(then, now_slots) for owner in owners}
    moved = [part.address for part in done if part.address in changed]
    if moved:
        return ReviewRun.FAILED, (f"The cluster's topology changed during the review: the slots of {', '.join(moved)} "
                                  f"moved (a failover or resharding), so keys may have been read twice or not at all. "
                                  f"Run the review again.")
    return ReviewRun.SUCCEEDED, ""
