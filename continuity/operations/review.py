"""The TTL review: stream a database's whole keyspace with SCAN, classify every key by the
longest registered namespace prefix, and count what breaks the namespace's policy.

Cost: what Redis executes is counted (`billed_commands`, each call inside a script
included): per batch one SCAN and one script call, per key PTTL, plus TYPE where a
namespace expects a type and MEMORY USAGE where one has a size limit (always on
self-hosted Redis). With the seeded policies on Upstash that is ~1.96 billed commands per
key; see `plan` and docs/benchmarks.md. A sampled review reads ~2,000 keys whatever the
keyspace.

Speed: Redis's time inside the script (~5.7 µs per key, measured) is the floor. The
stream sends the next batch's request before this process counts the current one, so
the counting (~1 µs per key: the flat reply used as it is, two dict lookups to classify,
no object per key) runs while Redis works. See docs/benchmarks.md.

Memory: the aggregates are fixed-size (a counter set per namespace, a TTL histogram with
fixed buckets, the top N keys per namespace, at most 100 samples per finding) and one
SCAN batch is held at a time, so memory does not grow with the keyspace.

Exactness and duplicates: SCAN guarantees that every key present for the whole scan is
returned at least once, and it returns a key twice only when the hash table *shrinks*
between two calls (growth and an incremental rehash in progress are covered by the
reverse-binary cursor: every bucket a returned key could move to has already been
visited). A table only shrinks after keys are deleted or expire, that is, when the
keyspace changes. So on a static keyspace each key comes back exactly once and the counts
are exact, without keeping a set of seen keys (which would grow with the keyspace). When
the keyspace does change, the run records DBSIZE before and after and the pages flag the
counts as a best effort. `test_review.py` checks both the static case and growth mid-scan.

Resume: after every `checkpoint_every` batches the cursor and the aggregates are written
to the run row in one UPDATE, guarded by the claim token. A worker that dies loses at most
the batches since that checkpoint; the next worker reloads the aggregates and continues
from the saved cursor, so no key is counted twice.
"""

import bisect
import contextlib
import dataclasses
import heapq
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from continuity import keyspace
from continuity.keyspace import cluster as keyspace_cluster
from continuity.keyspace import stream
from continuity.billing import estimated_cost_usd
from continuity.models import Namespace, ReviewNamespaceStat, ReviewRun, ReviewSample
from continuity.models.reviews import estimates_of
from continuity.policy import BUCKET_BOUNDS_MS, BUCKET_NAMES, FINDINGS, UNKNOWN_NAMESPACE, Policies
from dashboard import postgres

SAMPLE_CAP = 100
TOP_N = 10
UNKNOWN = ""  # aggregate key of keys under the key prefix but in no namespace
UNKNOWN_LABEL = "(no namespace)"


class ReviewBusy(Exception):
    """Another review of this database is queued or running."""

    def __init__(self, run):
        super().__init__(f"Review #{run.pk} of {run.database.name} is already {run.status}.")
        self.run = run


class ReviewInterrupted(Exception):
    """Redis failed mid-review, or Postgres stayed away past JOB_DB_OUTAGE_SECONDS
    (`postgres`). The run was handed back with its checkpoint (or, Postgres being down, its
    lease lapses), so a retry continues where the last checkpoint left off."""

    def __init__(self, run, reason, *, postgres=False, parts=False):
        super().__init__(reason)
        self.run = run
        self.reason = reason
        self.postgres = postgres
        self.parts = parts  # a Redis Cluster run: each primary keeps its own checkpoint

    def resumable_message(self):
        """For an operator, after a Postgres outage: which run, how far, how it resumes
        (built without asking Postgres, which may still be away)."""
        run = self.run
        kept = ("each primary keeps its own checkpoint" if self.parts
                else f"It keeps its checkpoint ({run.keys_scanned:,} keys reviewed)")
        return (f"Review #{run.pk} of {run.database.name} stopped: {self.reason}. {kept[0].upper()}{kept[1:]} "
                f"and is not marked failed: its task retries it, the next "
                f"scheduled review of {run.database.name} resumes it, or run `manage.py ttl_review --database "
                f"{run.database.name}` again.")


# --- aggregates -----------------------------------------------------------------------
_BUCKET_COUNT = len(BUCKET_NAMES)


@dataclass(slots=True)  # slots: the hot loop updates these attributes for every key
class NamespaceTally:
    keys: int = 0
    bytes: int = 0
    # Keys per TTL bucket, in BUCKET_NAMES order (a list: the hot loop indexes it).
    buckets: list = field(default_factory=lambda: [0] * _BUCKET_COUNT)
    findings: dict = field(default_factory=lambda: dict.fromkeys(FINDINGS, 0))
    top: list = field(default_factory=list)  # min-heap of (memory, token)
    # The memory a key needs to enter `top`: -1 until the heap holds TOP_N keys.
    top_floor: int = -1

    @property
    def histogram(self):
        return dict(zip(BUCKET_NAMES, self.buckets))

    def add_top(self, memory, key):
        if len(self.top) < TOP_N:
            heapq.heappush(self.top, (memory, keyspace.encode_key(key)))
        else:
            heapq.heapreplace(self.top, (memory, keyspace.encode_key(key)))
        if len(self.top) == TOP_N:
            self.top_floor = self.top[0][0]

    def to_json(self):
        return {"keys": self.keys, "bytes": self.bytes, "histogram": self.histogram,
                "findings": self.findings, "top": [list(item) for item in self.top]}

    @classmethod
    def from_json(cls, data):
        tally = cls(keys=data["keys"], bytes=data["bytes"],
                    buckets=[data["histogram"].get(name, 0) for name in BUCKET_NAMES],
                    findings=dict(data["findings"]), top=[tuple(item) for item in data["top"]])
        heapq.heapify(tally.top)
        if len(tally.top) == TOP_N:
            tally.top_floor = tally.top[0][0]
        return tally


@dataclass
class Tally:
    """Everything a review has counted so far; JSON round-trips for checkpoints."""

    keys_scanned: int = 0
    foreign: int = 0
    vanished: int = 0
    commands: int = 0
    billed: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    findings: dict = field(default_factory=lambda: dict.fromkeys(FINDINGS, 0))
    namespaces: dict = field(default_factory=dict)  # str(namespace id) or UNKNOWN → NamespaceTally
    samples: dict = field(default_factory=lambda: {kind: [] for kind in FINDINGS})

    def namespace(self, ident):
        tally = self.namespaces.get(ident)
        if tally is None:
            tally = self.namespaces[ident] = NamespaceTally()
        return tally

    def sample(self, kind, ident, key, kind_type, ttl_ms, memory):
        if len(self.samples[kind]) < SAMPLE_CAP:
            self.samples[kind].append([keyspace.encode_key(key), ident, kind_type, ttl_ms, memory])

    def to_json(self):
        return {"keys_scanned": self.keys_scanned, "foreign": self.foreign, "vanished": self.vanished,
                "commands": self.commands, "billed": self.billed, "batches": self.batches,
                "elapsed_s": self.elapsed_s,
                "findings": self.findings, "samples": self.samples,
                "namespaces": {ident: ns.to_json() for ident, ns in self.namespaces.items()}}

    @classmethod
    def from_json(cls, data):
        if not data:
            return cls()
        return cls(keys_scanned=data["keys_scanned"], foreign=data["foreign"], vanished=data["vanished"],
                   commands=data["commands"], billed=data.get("billed", 0), batches=data["batches"],
                   elapsed_s=data["elapsed_s"],
                   findings=dict(data["findings"]), samples={k: list(v) for k, v in data["samples"].items()},
                   namespaces={i: NamespaceTally.from_json(ns) for i, ns in data["namespaces"].items()})


# --- classification --------------------------------------------------------------------
class Slot:
    """A namespace's Policy (None for 'no namespace') in the hot loop, with the
    NamespaceTally it counts into (bound per review by `Classifier.bind`)."""

    __slots__ = ("findings", "ident", "policy", "tally", "unknown")

    def __init__(self, ident, policy=None):
        self.ident = ident
        self.policy = policy
        self.unknown = policy is None
        self.findings = policy.findings if policy is not None else None
        self.tally = None


HEAD_MEMO_CAP = 4096  # per group of nested prefixes: bounded, whatever the keyspace


class Classifier:
    """Longest registered namespace prefix of a key, in two slices and two dict lookups.

    Prefixes are grouped by their first `shortest` bytes (the length of the shortest
    registered prefix): a key can only be in a namespace of the group `key[:shortest]`.
    Each group is `(length, table, default)`: `length` is its longest prefix's length,
    and the namespace of a key depends only on `key[:length]`. A group of one prefix
    (all the Lucia ones: "lucia:sessi" → "lucia:session:") has `table = {prefix: policy}`
    and `default = unknown`: one lookup decides. A group of nested prefixes
    ("lucia:session:" and "lucia:session:vip:") memoizes `key[:length]` → policy as keys
    come (at most HEAD_MEMO_CAP heads, then `policy()` answers the rest) and has
    `default = None`, which sends a head not yet seen to `policy()`.
    A loop over all prefix lengths (a slice and a lookup per length and per key) or a
    `startswith` per candidate measured 1.5–2× slower in the review's profile."""

    def __init__(self, database, namespaces):
        self.key_prefix = database.key_prefix.encode()
        self.unknown = Slot(UNKNOWN)
        self.policies = {}
        for policy in Policies.of(namespaces):
            self.policies[policy.prefix] = Slot(policy.ident, policy)
        self.shortest = min((len(p) for p in self.policies), default=0)
        members = {}
        for prefix in self.policies:
            members.setdefault(prefix[:self.shortest], []).append(prefix)
        self.groups = {}
        for head, prefixes in members.items():
            length = max(len(p) for p in prefixes)
            if len(prefixes) == 1:
                self.groups[head] = (length, {prefixes[0]: self.policies[prefixes[0]]}, self.unknown)
            else:
                self.groups[head] = (length, {}, None)
        self.bound_to = None

    def policy(self, key):
        """The Slot of `key`'s namespace (`self.unknown` for none): the slow path,
        which also fills the memo of a group of nested prefixes."""
        group = self.groups.get(key[:self.shortest])
        if group is None:
            return self.unknown
        found, longest = self.unknown, -1
        for prefix, policy in self.policies.items():
            if len(prefix) > longest and key.startswith(prefix):
                found, longest = policy, len(prefix)
        length, table, _ = group
        if len(table) < HEAD_MEMO_CAP:
            table[key[:length]] = found
        return found

    def bind(self, tally):
        """Point each Slot at its NamespaceTally in `tally` (None until its first key)."""
        if self.bound_to is not tally:
            for policy in (*self.policies.values(), self.unknown):
                policy.tally = tally.namespaces.get(policy.ident)
            self.bound_to = tally




def count_batch(tally, classifier, rows):
    """Fold one batch of flat rows `[key, pttl, type, memory, …]` (see `stream`) into
    `tally`. The hot loop of a review, run for every key under the key prefix: names are
    bound locally, no object is built per key, and the findings come from the namespace's
    `Policy.findings` (the one statement of the rules), whose empty answer is the common case."""
    classifier.bind(tally)
    groups_get, shortest, unknown, slow = classifier.groups.get, classifier.shortest, classifier.unknown, classifier.policy
    bisect_right, bounds = bisect.bisect_right, BUCKET_BOUNDS_MS
    no_group = (0, {}, unknown)  # key[:0] is b"", never in the empty table: unknown
    vanished = 0
    items = iter(rows)
    for key, pttl, kind, memory in zip(items, items, items, items):
        if pttl == -2:  # gone between SCAN and the lookup
            vanished += 1
            continue
        length, table, default = groups_get(key[:shortest], no_group)
        policy = table.get(key[:length], default) or slow(key)
        ns = policy.tally
        if ns is None:
            ns = policy.tally = tally.namespace(policy.ident)
        ns.keys += 1
        if memory > 0:
            ns.bytes += memory
            if memory > ns.top_floor:
                ns.add_top(memory, key)
        ns.buckets[bisect_right(bounds, pttl)] += 1
        if policy.unknown:
            _flag(tally, ns, UNKNOWN_NAMESPACE, policy, key, kind, pttl, memory)
            continue
        for finding in policy.findings(None if pttl == -1 else pttl, kind, None if memory < 0 else memory):
            _flag(tally, ns, finding, policy, key, kind, pttl, memory)
    tally.vanished += vanished


def _flag(tally, ns, finding, policy, key, kind, pttl, memory):
    ns.findings[finding] += 1
    tally.findings[finding] += 1
    tally.sample(finding, policy.ident, key, kind.decode(), None if pttl == -1 else pttl,
                 None if memory < 0 else memory)


# --- result ------------------------------------------------------------------------------
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
    missing_nodes: list = field(default_factory=list)  # a partial cluster review: the primaries not read
    strata: list = field(default_factory=list)  # a sampled cluster review: one stratum per primary

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
            "prefix": ns.prefix if ns else UNKNOWN_LABEL,
            "namespace_obj": ns,
            "keys": ns_tally.keys,
            "bytes": ns_tally.bytes,
            "ttl_histogram": ns_tally.histogram,
            "findings": dict(ns_tally.findings),
            "top_keys": [[token, memory] for memory, token in sorted(ns_tally.top, reverse=True)],
        })
    rows.sort(key=lambda row: (row["prefix"] == UNKNOWN_LABEL, row["prefix"]))
    return rows


def _result(database, status, tally, namespaces, run=None):
    rows = namespace_rows(tally, namespaces)
    for row in rows:
        row.pop("namespace_obj")
    return ReviewResult(database=database.name, status=status, keys_scanned=tally.keys_scanned,
                        foreign_keys=tally.foreign, vanished_keys=tally.vanished, findings=dict(tally.findings),
                        namespaces=rows, commands=tally.commands, duration_s=tally.elapsed_s, run=run,
                        billed_commands=tally.billed, strategy=run.strategy if run else "",
                        sampled=bool(run and run.sampled), population=run.dbsize_before if run else None,
                        strata=list(run.strata or []) if run else [])


def result_from_run(run):
    """A ReviewResult rebuilt from a finished run's rows (an idempotent task re-run)."""
    rows = [{"namespace": s.namespace.name if s.namespace else None, "prefix": s.label, "keys": s.keys,
             "bytes": s.bytes, "ttl_histogram": s.ttl_histogram, "findings": s.findings, "top_keys": s.top_keys}
            for s in run.namespace_stats.select_related("namespace")]
    rows.sort(key=lambda row: (row["prefix"] == UNKNOWN_LABEL, row["prefix"]))
    return ReviewResult(database=run.database.name, status=run.status, keys_scanned=run.keys_scanned,
                        foreign_keys=run.foreign_keys, vanished_keys=run.vanished_keys,
                        findings=dict(run.findings), namespaces=rows, commands=run.commands,
                        duration_s=run.duration_s, run=run, billed_commands=run.billed_commands,
                        strategy=run.strategy, sampled=run.sampled, population=run.dbsize_before,
                        error=run.error if run.status in (ReviewRun.FAILED, ReviewRun.PARTIAL) else "",
                        missing_nodes=list(run.missing_nodes or []), strata=list(run.strata or []))


# --- the operation ----------------------------------------------------------------------
def start_review(*, database, actor=None, triggered_by=ReviewRun.CLI, batch=None, sample=None):
    """A new queued run (of a random sample of `sample` keys, when given), or ReviewBusy
    when one is already queued or running."""
    try:
        with transaction.atomic():
            return ReviewRun.objects.create(database=database, actor=actor, triggered_by=triggered_by,
                                            batch_size=batch or settings.REVIEW_SCAN_COUNT, sample_size=sample)
    except IntegrityError:
        existing = ReviewRun.objects.active().for_database(database).select_related("database").first()
        if existing is None:
            raise
        raise ReviewBusy(existing) from None


def plan(database, policies):
    """(strategy, Needs) of a review of `database` with `policies`: see `keyspace.stream`.
    On Upstash every read is billed and a script on undeclared keys takes the global lock:
    read only what a policy needs, over declared keys. Elsewhere speed counts: SCAN inside
    the script, and MEMORY USAGE always (the per-namespace bytes and top keys)."""
    upstash = database.bills_per_command()
    strategy = settings.REVIEW_STRATEGY
    if strategy == "auto":
        strategy = stream.DECLARED_KEYS if upstash else stream.SCAN_SCRIPT
    needs_type = any(policy.expected_type for policy in policies)
    needs_memory = any(policy.max_payload_bytes for policy in policies) or not upstash
    return strategy, stream.Needs(type=needs_type, memory=needs_memory)


def node_strategy(strategy):
    """The strategy of `plan` on one Redis Cluster node: the scan script as it is (its SCAN
    and reads stay on the node it runs on); declared keys become per-key pipelined commands
    (`stream.PIPELINE`), since a script's KEYS must share one hash slot there (CROSSSLOT)."""
    return stream.PIPELINE if strategy == stream.DECLARED_KEYS else strategy


def _fold(tally, classifier, fetched):
    """Count one Fetched batch into `tally`."""
    tally.commands += fetched.commands
    tally.billed += fetched.billed
    tally.keys_scanned += fetched.scanned
    tally.foreign += fetched.foreign
    count_batch(tally, classifier, fetched.rows)
    tally.batches += 1


def sample_keyspace(client, classifier, tally, *, size, needs, on_batch, per_key=False, clock=time.perf_counter):
    """A review of a random sample of about `size` keys (see `stream.sample_keys`) of the
    server behind `client`, counted into `tally`. `per_key`: read the sample's metadata with
    per-key commands (a Redis Cluster node: its keys span many slots)."""
    started = clock()
    for fetched in stream.sample_batches(client, size=size, prefix=classifier.key_prefix, needs=needs,
                                         per_key=per_key):
        _fold(tally, classifier, fetched)
        tally.elapsed_s = clock() - started
        if on_batch is not None:
            on_batch(tally)


def scan_keyspace(client, classifier, tally, *, cursor, batch, on_checkpoint, checkpoint_every, on_batch, clock,
          strategy=stream.SCAN_SCRIPT, needs=stream.Needs()):
    """The SCAN loop. Returns True when the scan completed, False when `on_checkpoint`
    said stop (cancelled, or the claim was lost). Redis errors propagate."""
    last_mark = clock()
    sizer = stream.BatchSizer(client, budget_ms=settings.SCRIPT_BUDGET_MS, start=batch)
    feed = stream.batches(client, cursor=cursor, count=batch, prefix=classifier.key_prefix, needs=needs,
                          strategy=strategy, sizer=sizer)
    with contextlib.closing(feed):
        for fetched in feed:
            _fold(tally, classifier, fetched)
            now = clock()
            tally.elapsed_s += now - last_mark
            last_mark = now
            if on_batch is not None:
                on_batch(tally)
            if fetched.cursor == 0:
                return True
            if tally.batches % checkpoint_every == 0 and not on_checkpoint(fetched.cursor, tally):
                return False
    return True


def review_database(*, database, run=None, actor=None, batch=None, triggered_by=ReviewRun.CLI,
                    persist=True, namespaces=None, checkpoint_every=None, on_batch=None, sample=None,
                    cluster=None, fan_out=None):
    """Review the whole keyspace of `database` and return a ReviewResult.

    With `persist` (the default) the review is a ReviewRun row: `run` (a queued or
    stale-running run, e.g. the task's) is claimed and continued from its checkpoint, or
    a new run is started (ReviewBusy when another is active). A finished run is returned
    as it is, so a task delivered twice does no work twice. `persist=False` reviews
    without Postgres writes (benchmarks), with `namespaces` given or read once.
    Redis failures raise ReviewInterrupted after handing the run back for a retry; so does
    Postgres staying away past JOB_DB_OUTAGE_SECONDS (checkpoints ride through shorter
    outages), with `postgres=True`: the run is never marked failed for it. A Redis
    Cluster is reviewed one primary at a time by `cluster` (the `review_cluster` module,
    passed in by `review_requests`: it builds on this one): in this process, or, with
    `fan_out(run, node_runs)` (the Celery task's chord), on workers, and then the run is
    returned still running. A primary that cannot be read ends the run `partial`, never
    `succeeded`. A sampled review of a cluster samples every primary, its share of the sample
    in proportion to the primary's DBSIZE (`review_cluster.prepare`), and combines them
    (`stratified_estimate`). Without `cluster` a cluster is refused (the run ends `failed`)
    before any key is read: one node's keys are never reported as the keyspace.
    `on_batch(tally)` is called after each batch (progress output, tests).

    With `sample` (or a run created with one) only a random sample of about that many
    keys is read (`stream.sample_keys`): the cost does not grow with the keyspace, and the
    findings are sample counts that pages show as estimates with a 95% interval. A keyspace
    no larger than the sample is reviewed exactly instead.
    """
    checkpoint_every = checkpoint_every or settings.REVIEW_CHECKPOINT_BATCHES
    if namespaces is None:
        namespaces = list(Namespace.objects.for_database(database)) if database.pk else []
    classifier = Classifier(database, namespaces)
    strategy, needs = plan(database, Policies.of(namespaces))
    if not persist:
        client = keyspace.client_for(database)
        if keyspace_cluster.mode_of(database, client) == keyspace_cluster.CLUSTER:
            if cluster is None:
                keyspace.refuse_partial(database, client, action="review")
            tally = cluster.review_unsaved(database, client, classifier, batch=batch or settings.REVIEW_SCAN_COUNT,
                                                  strategy=node_strategy(strategy), needs=needs,
                                                  checkpoint_every=checkpoint_every, on_batch=on_batch)
            return dataclasses.replace(_result(database, ReviewRun.SUCCEEDED, tally, namespaces),
                                       strategy=node_strategy(strategy))
        tally = Tally()
        scan_keyspace(client, classifier, tally, cursor=0, batch=batch or settings.REVIEW_SCAN_COUNT,
              on_checkpoint=lambda *a: True, checkpoint_every=checkpoint_every, on_batch=on_batch,
              clock=time.perf_counter, strategy=strategy, needs=needs)
        result = _result(database, ReviewRun.SUCCEEDED, tally, namespaces)
        return dataclasses.replace(result, strategy=strategy)

    if run is None:
        run = start_review(database=database, actor=actor, triggered_by=triggered_by, batch=batch, sample=sample)
    token = run.claim(settings.REVIEW_LEASE_SECONDS)
    if token is None:
        if run.is_active:
            raise ReviewBusy(run)
        return result_from_run(run)
    tally = Tally.from_json(run.aggregates)
    parts = False  # a Redis Cluster run: its parts hold the checkpoints
    try:
        client = keyspace.client_for(database)
        # A cluster node's SCAN sees that node's keys only: one part per primary, merged.
        if keyspace_cluster.mode_of(database, client) == keyspace_cluster.CLUSTER:
            if cluster is None:  # fail the run: one node's keys are never reported as the keyspace
                keyspace.refuse_partial(database, client, action="review")
            parts = True
            return _review_cluster(cluster, run, token, client, namespaces, checkpoint_every=checkpoint_every,
                                   on_batch=on_batch, fan_out=fan_out, strategy=node_strategy(strategy))
        if run.batches == 0:
            size = stream.dbsize(client)
            tally.commands += 1
            tally.billed += 1
            sampled = bool(run.sample_size) and size is not None and size > run.sample_size
            postgres.ride_through(lambda: run.checkpoint(token, dbsize_before=size, strategy=strategy,
                                                         sampled=sampled))
            run.dbsize_before, run.strategy, run.sampled = size, strategy, sampled
        if run.sampled:  # small and cheap: no checkpoint, a crashed worker starts it over
            tally = Tally()
            tally.commands, tally.billed = 1, 1  # the DBSIZE above
            sample_keyspace(client, classifier, tally, size=run.sample_size, needs=needs, on_batch=on_batch)
            postgres.ride_through(lambda: _finish(run, token, tally, namespaces, run.dbsize_before))
            return _result(database, run.status, tally, namespaces, run=run)

        def on_checkpoint(cursor, tally):  # rides through a Postgres restart (JOB_DB_OUTAGE_SECONDS)
            return postgres.ride_through(lambda: run.checkpoint(
                token, cursor=str(cursor), batches=tally.batches, keys_scanned=tally.keys_scanned,
                commands=tally.commands, billed_commands=tally.billed, duration_s=tally.elapsed_s,
                aggregates=tally.to_json()))

        finished = scan_keyspace(client, classifier, tally, cursor=int(run.cursor), batch=run.batch_size,
                         on_checkpoint=on_checkpoint, checkpoint_every=checkpoint_every, on_batch=on_batch,
                         clock=time.perf_counter, strategy=strategy, needs=needs)
        size_after = stream.dbsize(client) if finished else None
        if finished:
            tally.commands += 1
            tally.billed += 1
            postgres.ride_through(lambda: _finish(run, token, tally, namespaces, size_after))
    except (postgres.PostgresAway, *postgres.GONE) as exc:
        # Postgres stayed away: stop resumable. The last checkpoint stands; released when
        # Postgres answers, else the lease lapses and the next request resumes the run.
        reason = postgres.describe(exc)
        postgres.let_go(lambda: run.release(token, reason))
        raise ReviewInterrupted(run, reason, postgres=True, parts=parts) from exc
    except keyspace.ClusterRefusal as exc:  # final: a retry would be refused the same way
        run.mark_failed(str(exc))
        run.refresh_from_db()
        return dataclasses.replace(_result(database, run.status, tally, namespaces, run=run), error=run.error)
    except (redis.RedisError, keyspace.KeyspaceError) as exc:
        reason = keyspace.describe(exc)
        run.release(token, reason)
        run.refresh_from_db()
        raise ReviewInterrupted(run, reason) from exc
    if not finished:
        run.refresh_from_db()
    return _result(database, run.status, tally, namespaces, run=run)


def _review_cluster(review_cluster, run, token, client, namespaces, *, checkpoint_every, on_batch, fan_out,
                    strategy):
    database = run.database
    nodes = review_cluster.prepare(run, client)
    sampled = any(node.sample_size for node in nodes)
    sizes = [node.dbsize_before for node in nodes if node.status != node.FAILED]
    postgres.ride_through(lambda: run.checkpoint(
        token, strategy=stream.PIPELINE if sampled else strategy, sampled=sampled,
        **({"dbsize_before": sum(sizes)} if sampled else {})))
    if fan_out is not None:
        fan_out(run, [node for node in nodes if node.status != node.SUCCEEDED])
        run.refresh_from_db()
        return _result(database, run.status, Tally(), namespaces, run=run)
    run = review_cluster.review_inline(run, client, namespaces=namespaces, checkpoint_every=checkpoint_every,
                                       on_batch=on_batch)
    return result_from_run(run)


def _finish(run, token, tally, namespaces, size_after):
    """Write the figures, namespace rows and samples, and mark the run succeeded, in one
    transaction guarded by the claim (a cancelled run stays cancelled)."""
    rows = namespace_rows(tally, namespaces)
    labels = {(str(ns.pk)): ns.prefix for ns in namespaces if ns.pk}
    with transaction.atomic():
        locked = ReviewRun.objects.select_for_update().filter(pk=run.pk, status=ReviewRun.RUNNING,
                                                               claim_token=token).first()
        if locked is None:
            run.refresh_from_db()
            return
        ReviewNamespaceStat.objects.bulk_create([
            ReviewNamespaceStat(run=run, namespace=row["namespace_obj"], label=row["prefix"], keys=row["keys"],
                                bytes=row["bytes"], ttl_histogram=row["ttl_histogram"], findings=row["findings"],
                                top_keys=row["top_keys"])
            for row in rows
        ])
        ReviewSample.objects.bulk_create([
            ReviewSample(run=run, finding=kind, namespace_label=labels.get(ident, UNKNOWN_LABEL),
                         key=keyspace.decode_key(token_), type=kind_type or "", ttl_ms=ttl_ms, memory=memory)
            for kind, samples in tally.samples.items()
            for token_, ident, kind_type, ttl_ms, memory in samples
        ])
        ReviewRun.objects.filter(pk=run.pk).update(
            status=ReviewRun.SUCCEEDED, finished_at=timezone.now(), cursor="0", batches=tally.batches,
            keys_scanned=tally.keys_scanned, foreign_keys=tally.foreign, vanished_keys=tally.vanished,
            commands=tally.commands, billed_commands=tally.billed, duration_s=tally.elapsed_s,
            findings=tally.findings, dbsize_after=size_after,
            aggregates={}, claim_token="", heartbeat_at=timezone.now(),
        )
    run.refresh_from_db()
