"""Purge runs: one previewed, confirmed, executed (and resumable) purge of a keyspace slice."""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from continuity.billing import estimated_cost_usd
from continuity.models.jobs import Job, JobQuerySet
from continuity.keynames import decode_key, match_pattern
from dashboard.models import RedisDatabase


class PurgeRunQuerySet(JobQuerySet):
    def active(self):
        return self.filter(status__in=PurgeRun.ACTIVE)

    def for_database(self, database):
        return self.filter(database=database)


class PurgeRun(Job):
    """A purge of one database: its target, the preview's figures, and execution progress.

    Lifecycle: previewing (the dry run on the worker, with an instant estimate) →
    previewed → queued (an operator confirmed it with a reason) → running →
    succeeded / failed / cancelled. At most one run per database is queued or running
    (a partial unique constraint), so two purges never race on the same keyspace.
    `cursor` + `batches` are the checkpoint a resumed worker continues from.
    """

    PREFIX, PATTERN, FINDING, POLICY = "prefix", "pattern", "finding", "policy"
    TARGET_KINDS = [(PREFIX, "Literal prefix"), (PATTERN, "Glob pattern (advanced)"),
                    (FINDING, "Review finding"), (POLICY, "Namespace policy")]
    DELETE, EXPIRE = "delete", "expire"
    ACTIONS = [(DELETE, "Delete (UNLINK)"), (EXPIRE, "Apply the policy TTL (the maximum, where a TTL rule is broken)")]
    # What a key must still satisfy at execution time to be acted on.
    ANY, NO_TTL, TTL_ABOVE, VIOLATES, OVERSIZED, WRONG_TYPE = (
        "any", "no_ttl", "ttl_above", "violates", "oversized", "wrong_type")
    CONDITIONS = [(ANY, "still exists"), (NO_TTL, "still without TTL"), (TTL_ABOVE, "TTL still above the maximum"),
                  (VIOLATES, "still breaking a TTL rule"), (OVERSIZED, "still above the size limit"),
                  (WRONG_TYPE, "still of the wrong type")]
    PREVIEWING, PREVIEWED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
        "previewing", "previewed", "queued", "running", "succeeded", "failed", "cancelled")
    STATUSES = [(s, s) for s in (PREVIEWING, PREVIEWED, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    # A preview touches no key: any number may run beside a purge of the same database.
    ACTIVE = (QUEUED, RUNNING)
    FINISHED = (SUCCEEDED, FAILED, CANCELLED)
    CANCEL_FLAG = "cancel_requested"  # a running purge stops between pages, audited

    database = models.ForeignKey(RedisDatabase, on_delete=models.PROTECT, related_name="purge_runs")
    target_kind = models.CharField(max_length=16, choices=TARGET_KINDS)
    # The prefix or pattern as typed, bytes-safe: display_key() text of the bytes target.
    target_value = models.TextField()
    # The bytes target in base64url (encode_key): what the engine actually uses.
    target_token = models.TextField(blank=True)
    review_id = models.BigIntegerField(null=True, blank=True, help_text="For finding targets: the TTL review.")
    finding = models.CharField(max_length=32, blank=True, help_text="The finding every acted-on key must still show: "
                               "a review finding's, or a prefix or pattern limited to one.")
    match_pattern = models.TextField(help_text="The MATCH pattern sent with SCAN, as escaped text.")
    action = models.CharField(max_length=16, choices=ACTIONS, default=DELETE)
    condition = models.CharField(max_length=16, choices=CONDITIONS, default=ANY)
    reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="purge_runs")
    requested_label = models.CharField(max_length=150, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES, default=PREVIEWED)
    cancel_requested = models.BooleanField(default=False)

    # The instant estimate, known before any SCAN (operations/purge/estimate.py).
    ESTIMATE_REVIEW, ESTIMATE_DBSIZE = "review", "dbsize"
    estimate_keys = models.BigIntegerField(null=True, blank=True, help_text="Keys the preview will go through.")
    estimate_at_most = models.BooleanField(default=False, help_text="The estimate is an upper bound only.")
    estimate_source = models.CharField(max_length=16, blank=True,
                                       choices=[(ESTIMATE_REVIEW, "TTL review"), (ESTIMATE_DBSIZE, "DBSIZE")])
    estimate_review_id = models.BigIntegerField(null=True, blank=True)
    estimated_at = models.DateTimeField(null=True, blank=True, help_text="When the estimate's source counted.")
    estimate_detail = models.JSONField(
        default=dict, blank=True, help_text="The rest of the instant estimate: {low, high} (a sampled review's 95% "
        "interval), sampled, acting [value, low, high] (keys showing the scope's finding), dbsize, preview_billed and "
        "execution_billed (predicted, before the preview runs).")
    skipped_preview = models.BooleanField(default=False, help_text="Executed without a preview scan "
                                          "(manage.py purge --yes): the counts come from execution.")

    # Preview figures (preview_scanned and preview_matched grow while the preview runs).
    preview_scanned = models.BigIntegerField(default=0, help_text="Keys the preview's SCAN returned.")
    preview_matched = models.BigIntegerField(default=0)
    preview_actionable = models.BigIntegerField(null=True, blank=True,
                                                help_text="Keys the action would change (expire: without TTL).")
    preview_namespaces = models.JSONField(default=dict, blank=True, help_text="{namespace prefix: matched}")
    preview_nodes = models.JSONField(default=dict, blank=True,
                                     help_text="Redis Cluster: {primary host:port: keys matched there}.")
    preview_sample = models.JSONField(default=list, blank=True, help_text="[base64url key tokens]")
    preview_commands = models.BigIntegerField(default=0, help_text="Redis commands the preview issued.")
    estimated_commands = models.BigIntegerField(default=0, help_text="Redis commands execution will cost.")
    preview_billed_commands = models.BigIntegerField(
        default=0, help_text="Commands Redis executed for the preview (script-internal calls included).")
    estimated_billed_commands = models.BigIntegerField(
        default=0, help_text="Commands execution will make Redis run, writes counted once more per read region.")
    previewed_at = models.DateTimeField(default=timezone.now)

    # The target as decided once, at the preview: the namespaces it may act on.
    reach = models.JSONField(null=True, blank=True, help_text="[base64url namespace prefixes] the target may act "
                                                              "on; null: any namespace of the database (a finding).")

    # Execution progress (the checkpoint), per node: one for a standalone server, one per
    # primary of a Redis Cluster; the run's totals below are their sums.
    rate_cap = models.PositiveIntegerField(default=0, help_text="Keys per second; 0 means no cap.")
    batch_size = models.PositiveIntegerField(default=1000)
    node_cursors = models.JSONField(default=dict, blank=True,
                                    help_text="{node host:port: SCAN cursor or stored-list position, or 'end'}.")
    node_stats = models.JSONField(
        default=dict, blank=True, help_text="{node host:port: {pages, matched, done, skipped, commands, billed}}; "
                                            "summed into the run's totals.")
    node_layout = models.JSONField(
        default=dict, blank=True, help_text="Redis Cluster: {primary host:port: [[first slot, last slot], …]} when "
                                            "the run started; a change fails the run.")
    batches = models.BigIntegerField(default=0, help_text="Pages acted on (every node).")
    matched = models.BigIntegerField(default=0)
    done = models.BigIntegerField(default=0, help_text="Keys deleted or expired.")
    skipped = models.BigIntegerField(default=0, help_text="Matched keys that no longer qualified at execution.")
    commands = models.BigIntegerField(default=0, help_text="Requests execution sent to Redis.")
    billed_commands = models.BigIntegerField(
        default=0, help_text="Commands Redis executed for execution, script-internal calls included, free ones not, "
                             "writes counted once more per read region of the database.")
    queued_at = models.DateTimeField(null=True, blank=True)

    objects = PurgeRunQuerySet.as_manager()

    class Meta:
        ordering = ["-previewed_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["database"], condition=Q(status__in=["queued", "running"]),
                                    name="purge_one_active_per_database"),
        ]

    def __str__(self):
        return f"purge #{self.pk} {self.action} {self.target_value} on {self.database.name}"

    def get_absolute_url(self):
        return reverse("continuity:purge_detail", args=[self.pk])

    @property
    def is_active(self):
        return self.status in self.ACTIVE

    @property
    def is_finished(self):
        return self.status in self.FINISHED

    @property
    def is_previewing(self):
        return self.status == self.PREVIEWING

    def never_started(self, now=None):
        """True when no worker took this run's task within JOB_NEVER_STARTED_SECONDS: a
        confirmed purge still queued, or a preview no worker ever claimed. Its page then
        offers a retry; nothing was touched."""
        cutoff = (now or timezone.now()) - timedelta(seconds=settings.JOB_NEVER_STARTED_SECONDS)
        if self.status == self.QUEUED:
            return self.started_at is None and self.queued_at is not None and self.queued_at < cutoff
        return (self.status == self.PREVIEWING and not self.claim_token and self.heartbeat_at is None
                and self.previewed_at < cutoff)

    @property
    def in_preview_stage(self):
        """Previewing, or a preview that was cancelled or failed before anyone confirmed it."""
        return self.is_previewing or (self.status in (self.CANCELLED, self.FAILED) and self.queued_at is None
                                      and self.started_at is None)

    def expected_keys(self):
        """What execution's progress is measured against: the preview's count, or the
        estimate where the preview was skipped."""
        return (self.estimate_keys or 0) if self.skipped_preview else self.preview_matched

    def preview_percent(self):
        """The preview's progress against the estimate (None: no estimate)."""
        if not self.estimate_keys:
            return None
        return min(int(100 * self.preview_scanned / self.estimate_keys), 99)

    @property
    def done_label(self):
        return "deleted" if self.action == self.DELETE else "expired"

    def duration_seconds(self):
        if not self.started_at:
            return None
        end = self.finished_at or timezone.now()
        return max((end - self.started_at).total_seconds(), 0.0)

    def rate(self):
        """Matched keys per second since the run started."""
        seconds = self.duration_seconds()
        return round(self.matched / seconds, 1) if seconds else None

    def progress_percent(self):
        if self.is_finished and self.status == self.SUCCEEDED:
            return 100
        if not self.expected_keys():
            return 0
        return min(int(100 * self.matched / self.expected_keys()), 99)

    def eta_seconds(self):
        """Remaining matched keys (by the preview's count) at the current rate."""
        rate = self.rate()
        if not rate or not self.is_active:
            return None
        return max(int((self.expected_keys() - self.matched) / rate), 0)

    def target_bytes(self):
        return decode_key(self.target_token)

    def match_bytes(self):
        """The MATCH pattern SCAN uses: an escaped literal prefix, or the raw glob."""
        if self.target_kind in (self.PREFIX, self.POLICY):
            return match_pattern(self.target_bytes())
        if self.target_kind == self.PATTERN:
            return self.target_bytes()
        return b""

    @property
    def estimated_cost_usd(self):
        return estimated_cost_usd(self.billed_commands)

    @property
    def estimated_execution_cost_usd(self):
        return estimated_cost_usd(self.estimated_billed_commands)

    @property
    def estimate(self):
        """The instant estimate's details (`estimate_detail`) with their prices, for pages."""
        detail = dict(self.estimate_detail or {})
        detail["preview_usd"] = estimated_cost_usd(detail.get("preview_billed"))
        detail["execution_usd"] = estimated_cost_usd(detail.get("execution_billed"))
        return detail

    def billed(self, billed, writes):
        """`billed` commands of which `writes` wrote, with the writes counted once more
        per read region of the database (Upstash Global)."""
        return billed + writes * len(self.database.read_regions or ())

    # --- per-node progress ------------------------------------------------------------------
    NODE_FIGURES = ("pages", "matched", "done", "skipped", "commands", "billed")
    _TOTALS = {"pages": "batches", "matched": "matched", "done": "done", "skipped": "skipped",
               "commands": "commands", "billed": "billed_commands"}

    def node_figures(self, address):
        """The figures of node `address` (a dict of NODE_FIGURES, zeros when new)."""
        if not isinstance(self.node_stats, dict):
            self.node_stats = {}
        row = self.node_stats.setdefault(address, {})
        for name in self.NODE_FIGURES:
            row.setdefault(name, 0)
        return row

    def add(self, address, **figures):
        """Add `figures` to node `address` and to the run's totals (their sums)."""
        row = self.node_figures(address)
        for name, value in figures.items():
            row[name] += value
            total = self._TOTALS[name]
            setattr(self, total, getattr(self, total) + value)

    def node_cursor(self, address, start="0"):
        return (self.node_cursors or {}).get(address, start)

    def set_node_cursor(self, address, cursor):
        cursors = self.node_cursors if isinstance(self.node_cursors, dict) else {}
        cursors[address] = cursor
        self.node_cursors = cursors

    def recorded_nodes(self):
        """The addresses the run's progress is kept under: its cursors, figures and stored
        key list (a finding purge's, by the node serving each key)."""
        stats = self.node_stats if isinstance(self.node_stats, dict) else {}
        stored = PurgeTargetKey.objects.filter(run=self).values_list("node", flat=True).distinct()
        return set(self.node_cursors or {}) | set(stats) | set(stored)

    def adopt_node(self, old, new):
        """Keep what was recorded for node `old` under `new` (the same standalone server
        reached at another address: `keyspace.nodes.adopted`): the cursor and figures in
        memory, for the caller to checkpoint in the same transaction as the stored key list,
        renamed here at once (one UPDATE)."""
        for name in ("node_cursors", "node_stats"):
            recorded = getattr(self, name)
            if isinstance(recorded, dict) and old in recorded:
                recorded[new] = recorded.pop(old)
        PurgeTargetKey.objects.filter(run=self, node=old).update(node=new)

    def checkpoint(self, token, **fields):
        """`Job.checkpoint` of the run's progress: every node's cursor and figures, and the
        totals they sum to."""
        return super().checkpoint(token, node_cursors=self.node_cursors, node_stats=self.node_stats,
                                  node_layout=self.node_layout, batches=self.batches, matched=self.matched,
                                  done=self.done, skipped=self.skipped, commands=self.commands,
                                  billed_commands=self.billed_commands, **fields)

    def summary(self):
        """The counts an audit entry and the command's JSON carry."""
        return {"run": self.pk, "database": self.database.name, "target_kind": self.target_kind,
                "target": self.target_value, "match": self.match_pattern, "action": self.action,
                "condition": self.condition, "status": self.status, "matched": self.matched,
                self.done_label: self.done, "skipped": self.skipped, "commands": self.commands,
                "billed_commands": self.billed_commands, "estimated_cost_usd": self.estimated_cost_usd,
                "reason": self.reason}


class PurgeTargetKey(models.Model):
    """One key of a review-finding purge, as its preview found it still offending.

    The preview writes them in batches with positions 1, 2, …; execution reads them back
    by position, so its checkpoint (the last position acted on) stays valid across a
    resume. Deleted when the run finishes."""

    run = models.ForeignKey(PurgeRun, on_delete=models.CASCADE, related_name="target_keys")
    node = models.CharField(max_length=255, blank=True, help_text="host:port of the node serving the key.")
    position = models.BigIntegerField()
    key = models.BinaryField()

    class Meta:
        ordering = ["run", "node", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "node", "position"], name="purge_target_key_node_position"),
        ]

    def __str__(self):
        return f"#{self.position} of purge #{self.run_id}"


def store_target_keys(run, node, keys, *, after):
    """Append `keys` to `run`'s stored list on `node` at positions after+1, after+2, … (one
    INSERT). Returns the last position written."""
    rows = [PurgeTargetKey(run=run, node=node, position=after + i, key=bytes(key)) for i, key in enumerate(keys, 1)]
    PurgeTargetKey.objects.bulk_create(rows)
    return after + len(rows)


def stored_target_keys(run, node, *, after, size):
    """(position, key bytes) of `run`'s stored keys on `node` after position `after`, in
    order, fetched `size` at a time (keyset pagination: memory stays bounded)."""
    while True:
        rows = list(PurgeTargetKey.objects.filter(run=run, node=node, position__gt=after).order_by("position")
                    .values_list("position", "key")[:size])
        for position, key in rows:
            yield position, bytes(key)
        if len(rows) < size:
            return
        after = rows[-1][0]


class PolicyReport(models.Model):
    """What a policy purge counted in its report-only namespaces (keys breaking a TTL rule,
    none touched, so no purge run) and what counting them cost Redis."""

    database = models.ForeignKey(RedisDatabase, on_delete=models.CASCADE, related_name="policy_reports")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    counts = models.JSONField(default=dict, help_text="{namespace prefix: keys breaking a TTL rule}")
    commands = models.BigIntegerField(default=0, help_text="Requests the count sent to Redis.")
    billed_commands = models.BigIntegerField(default=0, help_text="Commands Redis executed for the count.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"policy report of {self.database.name} at {self.created_at:%Y-%m-%d %H:%M}"
