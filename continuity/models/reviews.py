"""TTL reviews: one row per run, its per-namespace figures, and capped samples of
offending keys. The run row also carries the checkpoint (SCAN cursor + partial
aggregates) that lets a killed worker resume without counting a key twice."""

import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from continuity.billing import estimated_cost_usd
from continuity.models.jobs import Job, JobQuerySet
from continuity.keynames import display_key, encode_key
from continuity.policy import FINDINGS  # noqa: F401  (re-exported: pages and commands list findings in this order)
from dashboard.models import RedisDatabase

FINDING_LABELS = {
    "no_ttl": "No TTL",
    "ttl_above_max": "TTL above the maximum",
    "oversized": "Oversized",
    "wrong_type": "Wrong type",
    "unknown_namespace": "In no namespace",
}


@dataclass(frozen=True)
class Estimate:
    """A finding's count for the whole keyspace: `value`, with its 95% interval
    [`low`, `high`] (equal to the value for an exact review)."""

    value: int
    low: int
    high: int
    sampled: bool


@dataclass(frozen=True)
class Share:
    """A percentage with its 95% interval (equal to it when exact)."""

    value: float
    low: float
    high: float
    sampled: bool


def _wilson(p, n, z):
    """The Wilson score interval (low, high) of a proportion `p` observed in `n` draws."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def estimate(count, n, population, z=1.96):
    """Estimate of `count` findings among `n` sampled keys out of `population` (None: the
    review was exact), with the Wilson score interval of the proportion (well behaved for
    rare findings, never below 0)."""
    if population is None or not n:
        return Estimate(count, count, count, False)
    p = count / n
    low, high = _wilson(p, n, z)
    return Estimate(round(p * population), max(0, math.floor(low * population)),
                    math.ceil(high * population), True)


def stratified_estimate(strata, kind, z=1.96):
    """Estimate of the `kind` findings of a Redis Cluster from a sample stratified by primary.

    `strata` holds one dict per primary read: `population` N_h (its DBSIZE), `keys` n_h
    (the keys drawn there), `findings` ({kind: c_h} among them) and `sampled` (False when
    the primary held no more keys than its share and was read whole: its count is exact).

    Maths. The sample is allocated in proportion to DBSIZE, so each primary is a stratum
    of weight W_h = N_h / N (N = ΣN_h over the sampled strata) sampled at random on its own.
    The stratified estimator of the proportion and its variance are
        p̂ = Σ W_h p̂_h,   p̂_h = c_h / n_h,     Var(p̂) = Σ W_h² p̂_h (1 − p̂_h) / n_h
    (strata are independent; each p̂_h is binomial). A Wald interval p̂ ± z√Var is wrong for
    rare findings (zero width when no stratum saw one), and the Wilson interval cannot be
    applied to the pooled count as if it were one simple random sample. The survey
    statistics remedy is Kish's effective sample size: the sample size n* that a simple
    random sample would need for the same variance, n* = p̂ (1 − p̂) / Var(p̂), put into the
    interval for a simple random sample (Korn and Graubard, 1998, do so for exact intervals
    and cap n* at n; the Wilson form is the one the standalone review already uses). n* is
    capped at n = Σn_h (and is n when Var is 0, e.g. no finding anywhere), so the interval is
    never narrower than a simple random sample of the same size would give: under
    proportional allocation stratification can only shrink the variance (up to 1/N terms),
    and the cap keeps that gain out of the interval rather than trust a variance estimated
    from few findings. `test_cluster_review_sampled` checks the coverage by simulation.
    The count is N p̂ within [N·low, N·high], plus the exact counts of whole strata,
    which carry no sampling error. With no sampled stratum the estimate is exact."""
    exact = sum(s["findings"].get(kind, 0) for s in strata if not s["sampled"])
    sampled = [s for s in strata if s["sampled"] and s["keys"]]
    if not sampled:
        return Estimate(exact, exact, exact, False)
    population = sum(s["population"] for s in sampled)
    n = sum(s["keys"] for s in sampled)
    p = variance = 0.0
    for s in sampled:
        weight, p_h = s["population"] / population, s["findings"].get(kind, 0) / s["keys"]
        p += weight * p_h
        variance += weight * weight * p_h * (1 - p_h) / s["keys"]
    n_eff = n if variance <= 0 else min(n, p * (1 - p) / variance)
    low, high = _wilson(p, n_eff, z)
    return Estimate(exact + round(p * population), exact + max(0, math.floor(low * population)),
                    exact + math.ceil(high * population), True)


def estimates_of(findings, *, keys, population, sampled, strata):
    """{finding: Estimate} of a review: exact counts; a standalone sample scaled to DBSIZE;
    a cluster's stratified sample (`strata`) combined by `stratified_estimate`."""
    if sampled and strata:
        return {kind: stratified_estimate(strata, kind) for kind in (findings or {})}
    return {kind: estimate(count, keys, population if sampled else None) for kind, count in (findings or {}).items()}


class ReviewRunQuerySet(JobQuerySet):
    def active(self):
        return self.filter(status__in=ReviewRun.ACTIVE)

    def for_database(self, database):
        return self.filter(database=database)

    def succeeded(self):
        return self.filter(status=ReviewRun.SUCCEEDED)

    def latest_first(self):
        return self.order_by("-created_at", "-id")


class ReviewRun(Job):
    """One TTL review of one database, read in parts (`ReviewNodeRun`, one per node). At
    most one is queued or running per database (a partial unique index); a worker claims it
    (`Job.claim`) to prepare its parts."""

    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
    PARTIAL = "partial"  # a Redis Cluster review that could not read every primary: never "succeeded"
    STATUSES = [(s, s) for s in (QUEUED, RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELLED)]
    ACTIVE = (QUEUED, RUNNING)
    SCHEDULE, WEB, CLI = "schedule", "web", "cli"
    TRIGGERS = [(SCHEDULE, "schedule"), (WEB, "web"), (CLI, "command line")]

    database = models.ForeignKey(RedisDatabase, on_delete=models.CASCADE, related_name="review_runs")
    status = models.CharField(max_length=16, choices=STATUSES, default=QUEUED, db_index=True)
    triggered_by = models.CharField(max_length=16, choices=TRIGGERS, default=CLI)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    task_id = models.CharField(max_length=255, blank=True)
    batch_size = models.PositiveIntegerField(default=1000)
    batches = models.PositiveIntegerField(default=0)
    keys_scanned = models.BigIntegerField(default=0)
    foreign_keys = models.BigIntegerField(default=0)
    vanished_keys = models.BigIntegerField(default=0, help_text="Returned by SCAN, gone before inspection.")
    commands = models.BigIntegerField(default=0, help_text="Requests this review sent to Redis.")
    billed_commands = models.BigIntegerField(
        default=0, help_text="Commands Redis executed for this review, script-internal calls included, free ones not.")
    strategy = models.CharField(max_length=16, blank=True, help_text="How the keyspace was read (keyspace.stream).")
    # A sampled review reads a random sample of `sample_size` keys: its findings are
    # sample counts, shown as estimates for the whole keyspace (`estimates()`).
    sample_size = models.PositiveIntegerField(null=True, blank=True)
    sampled = models.BooleanField(default=False, help_text="True when the figures are estimates from a sample.")
    duration_s = models.FloatField(default=0)
    findings = models.JSONField(default=dict, blank=True)
    dbsize_before = models.BigIntegerField(null=True, blank=True)
    dbsize_after = models.BigIntegerField(null=True, blank=True)
    # A Redis Cluster review: the primaries ("host:port") it could not read (status partial).
    missing_nodes = models.JSONField(default=list, blank=True)
    # A sampled Redis Cluster review: one stratum per primary read ({address, population,
    # keys, findings, sampled}), what `stratified_estimate` combines.
    strata = models.JSONField(default=list, blank=True)

    objects = ReviewRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["database"], condition=Q(status__in=("queued", "running")),
                                    name="one_active_review_per_database"),
        ]

    def __str__(self):
        return f"review #{self.pk} of {self.database.name}"

    @property
    def is_active(self):
        return self.status in self.ACTIVE

    def never_started(self, now=None):
        """True when the run is still queued JOB_NEVER_STARTED_SECONDS after it was created:
        no worker took its task (the broker or the workers are down, or the task was lost).
        Its page then offers a retry."""
        cutoff = (now or timezone.now()) - timedelta(seconds=settings.JOB_NEVER_STARTED_SECONDS)
        return self.status == self.QUEUED and self.created_at is not None and self.created_at < cutoff

    @property
    def estimated_cost_usd(self):
        return estimated_cost_usd(self.billed_commands)

    @property
    def total_findings(self):
        return sum((self.findings or {}).values())

    @property
    def kind_label(self):
        return "sampled" if self.sampled else "exact"

    def scale(self):
        """Keys in the keyspace per key reviewed: 1 for an exact review."""
        if not self.sampled or not self.keys_scanned or not self.dbsize_before:
            return 1.0
        return self.dbsize_before / self.keys_scanned

    def estimates(self):
        """{finding: Estimate} for the whole keyspace: the counts themselves for an exact
        review; for a sampled one, the sample proportion times DBSIZE with a 95% interval
        (a cluster's: combined over its primaries, `stratified_estimate`)."""
        return estimates_of(self.findings, keys=self.keys_scanned, population=self.dbsize_before,
                            sampled=self.sampled, strata=self.strata)

    @property
    def estimated_total_findings(self):
        """The findings of the whole keyspace (estimated for a sampled review)."""
        return sum(e.value for e in self.estimates().values())

    def keyspace_changed(self):
        """True when DBSIZE moved during the review: counts are then a best effort
        (SCAN only guarantees every key present throughout is seen at least once)."""
        return None not in (self.dbsize_before, self.dbsize_after) and self.dbsize_before != self.dbsize_after

    def sizes_unknown(self):
        """True when a finished review counted keys but no bytes: MEMORY USAGE was refused
        (every existing key takes some memory), so sizes and `oversized` were not checked."""
        if self.status != self.SUCCEEDED:
            return False
        totals = self.namespace_stats.aggregate(keys=Sum("keys"), bytes=Sum("bytes"))
        return bool(totals["keys"]) and not totals["bytes"]

    def cancel(self):
        """Stop a queued or running run; a running worker notices at its next checkpoint.
        A Redis Cluster run's parts not yet ended are cancelled with it (their tasks stop at
        their next checkpoint, and a part not started is never claimed)."""
        now = timezone.now()
        with transaction.atomic():
            cancelled = bool(ReviewRun.objects.filter(pk=self.pk, status__in=self.ACTIVE)
                             .update(status=self.CANCELLED, finished_at=now, claim_token=""))
            if cancelled:
                ReviewNodeRun.objects.filter(run_id=self.pk, status__in=ReviewNodeRun.ACTIVE).update(
                    status=ReviewNodeRun.CANCELLED, finished_at=now, claim_token="")
        return cancelled

    def topology_billed(self, nodes):
        """Of a finished Redis Cluster run's billed commands, those the run sent itself (CLUSTER
        NODES, to learn the primaries and to check the slots did not move) rather than its
        parts (`nodes`, each counting what its primary ran)."""
        return self.billed_commands - sum(node.billed_commands for node in nodes)

    def has_checkpoint(self):
        """True when a resumed run would continue rather than start over: batches saved on
        one of its parts."""
        return self.node_runs.filter(batches__gt=0).exists()

    def progress(self):
        """(keys scanned, an estimated share done 0..1 or None) for the progress bar."""
        if self.status == self.SUCCEEDED:
            return self.keys_scanned, 1.0
        scanned = self.keys_scanned
        if self.is_active:  # its parts' checkpoints
            scanned = self.node_runs.aggregate(keys=Coalesce(Sum("keys_scanned"), 0))["keys"]
        if not self.dbsize_before:
            return scanned, None
        return scanned, min(0.99, scanned / self.dbsize_before)


class ReviewNodeRun(Job):
    """The part of a review that reads one node (the only one of a standalone server, or one
    primary of a Redis Cluster): its own SCAN cursor, checkpoint (aggregates) and claim, so
    a part whose worker died resumes alone. The run's totals are the merge of its parts'
    aggregates (`operations.review.finish`).
    A sampled run's part draws `sample_size` keys of its primary (None: read whole).
    `billed_commands` is what this primary executed for the part. Cancelling the run
    cancels its parts that have not ended."""

    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
    STATUSES = [(s, s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    ACTIVE = (QUEUED, RUNNING)

    run = models.ForeignKey(ReviewRun, on_delete=models.CASCADE, related_name="node_runs")
    address = models.CharField(max_length=255, help_text="host:port of the primary, as the cluster announces it.")
    node_id = models.CharField(max_length=64, blank=True)
    slots = models.JSONField(default=list, help_text="[[first, last], …] the primary served when the run began.")
    status = models.CharField(max_length=16, choices=STATUSES, default=QUEUED)
    cursor = models.CharField(max_length=24, default="0")
    batches = models.PositiveIntegerField(default=0)
    keys_scanned = models.BigIntegerField(default=0)
    commands = models.BigIntegerField(default=0)
    billed_commands = models.BigIntegerField(
        default=0, help_text="Commands this primary executed for the part, script-internal calls included.")
    dbsize_before = models.BigIntegerField(null=True, blank=True)
    dbsize_after = models.BigIntegerField(null=True, blank=True)
    # A sampled review: this primary's share of the sample (in proportion to its DBSIZE);
    # None when the primary is read whole.
    sample_size = models.PositiveIntegerField(null=True, blank=True)
    aggregates = models.JSONField(default=dict, blank=True, help_text="Tally.to_json(): kept until the merge.")

    class Meta:
        ordering = ["address"]
        constraints = [models.UniqueConstraint(fields=["run", "address"], name="one_node_run_per_address")]

    def __str__(self):
        return f"{self.address} of {self.run}"

    def checkpoint(self, token, **fields):
        """`Job.checkpoint`, only while the run is still running (a cancelled run stops its
        parts); the run's heartbeat is renewed too."""
        if not ReviewRun.objects.filter(pk=self.run_id, status=ReviewRun.RUNNING).update(
                heartbeat_at=timezone.now()):
            return "lost"
        return super().checkpoint(token, **fields)


class ReviewNamespaceStatQuerySet(models.QuerySet):
    def trend(self, database, *, runs=30):
        """Stats of the last `runs` succeeded reviews of `database`, oldest first."""
        last = (ReviewRun.objects.for_database(database).succeeded().order_by("-finished_at")
                .values_list("pk", flat=True)[:runs])
        return (self.filter(run__in=list(last)).select_related("run")
                .order_by("run__finished_at", "label"))


class ReviewNamespaceStat(models.Model):
    """What one review found under one namespace (or under no namespace)."""

    run = models.ForeignKey(ReviewRun, on_delete=models.CASCADE, related_name="namespace_stats")
    namespace = models.ForeignKey("continuity.Namespace", null=True, blank=True, on_delete=models.SET_NULL)
    label = models.CharField(max_length=255, help_text="The prefix at review time, or '(no namespace)'.")
    keys = models.BigIntegerField(default=0)
    # Keys with at least one finding; None for a review from before it was counted.
    breaking_keys = models.BigIntegerField(null=True, blank=True)
    bytes = models.BigIntegerField(default=0, help_text="Sum of MEMORY USAGE.")
    ttl_histogram = models.JSONField(default=dict, help_text="TTL bucket → number of keys.")
    findings = models.JSONField(default=dict)
    top_keys = models.JSONField(default=list, help_text="[[base64url key, bytes], …] biggest first.")

    objects = ReviewNamespaceStatQuerySet.as_manager()

    class Meta:
        ordering = ["label"]

    def __str__(self):
        return f"{self.label} in {self.run}"

    def inside_policy(self):
        """The share of this namespace's keys that break no rule, a Share in percent: exact
        for an exact review; for a sampled one, the sample's proportion with its 95% Wilson
        interval. None without keys. A review from
        before keys with several findings were told apart counts each finding as a key (it
        never overstates the share)."""
        if not self.keys:
            return None
        breaking = self.breaking_keys if self.breaking_keys is not None else min(
            self.keys, sum((self.findings or {}).values()))
        share = (self.keys - breaking) / self.keys
        if not self.run.sampled:
            return Share(share * 100, share * 100, share * 100, False)
        low, high = _wilson(share, self.keys, 1.96)
        return Share(share * 100, max(0.0, low * 100), min(100.0, high * 100), True)


class ReviewSample(models.Model):
    """One offending key kept as an example of a finding (at most 100 per finding)."""

    run = models.ForeignKey(ReviewRun, on_delete=models.CASCADE, related_name="samples")
    finding = models.CharField(max_length=32)
    namespace_label = models.CharField(max_length=255)
    key = models.BinaryField()
    type = models.CharField(max_length=32, blank=True)
    ttl_ms = models.BigIntegerField(null=True, blank=True)
    memory = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["finding", "id"]

    def __str__(self):
        return f"{self.finding}: {self.display}"

    @property
    def token(self):
        return encode_key(bytes(self.key))

    @property
    def display(self):
        return display_key(bytes(self.key))
