"""The keyspace watch's looks at each monitored database (`operations.keyspace_watch`):
one row per database per minute, kept a week (a row that found something, for good)."""

from datetime import timedelta
from decimal import Decimal

from django.db import models
from django.utils import timezone

from dashboard import failure_plan
from dashboard.models import RedisDatabase

# How long a loss or a restart stays on the first screen after the check that found it.
SHOWN_FOR = timedelta(hours=24)
# A worker that recorded no check for this long is shown as silent (the watch runs every minute).
WORKER_SILENT_AFTER = timedelta(minutes=3)
KEPT_FOR = timedelta(days=7)


def dropped_beyond(before, after, share):
    """True when the key count fell from `before` to `after` by more than `share` (0–1) of
    `before`: exactly `share` is not beyond it. Exact arithmetic (0.3 × 1000 is 300, not
    300.00000000000006)."""
    if not before or after is None or after >= before:
        return False
    return (before - after) > Decimal(str(share)) * before


class KeyspaceCheckQuerySet(models.QuerySet):
    def for_database(self, database):
        return self.filter(database=database)

    def answered(self):
        """Checks where every primary answered: what the next check compares with."""
        return self.filter(ok=True)

    def latest_first(self):
        return self.order_by("-checked_at", "-pk")

    def findings_since(self, since):
        """Checks that found a loss or a restart after `since`, newest first."""
        return self.exclude(event="").filter(checked_at__gte=since).latest_first()

    def last_worker_check(self):
        """When a Celery worker last recorded a check (any database): the worker's heartbeat."""
        return self.filter(via=KeyspaceCheck.WORKER).aggregate(at=models.Max("checked_at"))["at"]

    def stale(self, now=None):
        """Checks older than KEPT_FOR that found nothing: what the watch deletes."""
        return self.filter(checked_at__lt=(now or timezone.now()) - KEPT_FOR, event="")


class KeyspaceCheck(models.Model):
    """One look at a monitored database: its keys summed over its primaries, each
    primary's uptime, run id and persistence (`nodes`), and what changed since the last
    check where every primary answered: a loss of keys or a restart (`event`)."""

    WORKER, COMMAND = "worker", "command"
    LOST, RESTARTED = failure_plan.KEYSPACE_LOST, failure_plan.REDIS_RESTARTED
    EVENTS = [("", "nothing"), (LOST, "keys lost"), (RESTARTED, "restarted")]

    database = models.ForeignKey(RedisDatabase, on_delete=models.CASCADE, related_name="keyspace_checks")
    checked_at = models.DateTimeField(default=timezone.now, db_index=True)
    via = models.CharField(max_length=16, choices=[(WORKER, "worker"), (COMMAND, "command")], default=WORKER)
    ok = models.BooleanField(default=True, help_text="Every primary answered.")
    error = models.TextField(blank=True)
    keys = models.BigIntegerField(null=True, blank=True, help_text="DBSIZE summed over the primaries that answered.")
    keys_without_ttl = models.BigIntegerField(null=True, blank=True)
    persistence = models.CharField(max_length=16, blank=True,
                                   help_text="'off' when no primary keeps its keys on disk; blank: not said.")
    nodes = models.JSONField(default=dict, blank=True, help_text="{address: NodeState.to_json()}")
    event = models.CharField(max_length=32, choices=EVENTS, blank=True)
    event_text = models.TextField(blank=True)
    alerted = models.JSONField(default=list, blank=True,
                               help_text="Alert events this check sent to at least one channel.")

    objects = KeyspaceCheckQuerySet.as_manager()

    class Meta:
        ordering = ["-checked_at", "-pk"]
        indexes = [models.Index(fields=["database", "-checked_at"], name="keyspace_check_latest")]

    def __str__(self):
        return f"check of {self.database.name} at {self.checked_at:%Y-%m-%d %H:%M:%S}"

    @property
    def persistence_off(self):
        return self.persistence == "off"
