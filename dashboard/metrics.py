"""Prometheus metrics of the records side, computed from Postgres at scrape time: secrets by
rotation status. Labels are records' names only (a secret's record name, never its value or
reference). The keyspace side has its own collector (continuity.metrics); the project wires
both to /metrics (dashboard.monitoring)."""

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from dashboard.models import Secret

STATUSES = [status for status, _label in Secret.STATUSES]


def secret_families(now=None):
    """How many secrets are in each rotation status, and each secret's status and next due date."""
    now = now or timezone.now()
    counts = GaugeMetricFamily("dashboard_secrets", "Secrets by rotation status.", labels=["status"])
    status = GaugeMetricFamily("dashboard_secret_rotation_status", "1 for the rotation status each secret is in.",
                               labels=["secret", "status"])
    due = GaugeMetricFamily("dashboard_secret_next_rotation_timestamp_seconds",
                            "When each secret is next due for rotation (Unix time); absent if never rotated.",
                            labels=["secret"])
    tally = dict.fromkeys(STATUSES, 0)
    for secret in Secret.objects.order_by("name"):
        current = secret.rotation_status(now)
        tally[current] += 1
        status.add_metric([secret.name, current], 1)
        next_due = secret.next_due()
        if next_due is not None:
            due.add_metric([secret.name], next_due.timestamp())
    for name, count in tally.items():
        counts.add_metric([name], count)
    return [counts, status, due]


class RecordsCollector:
    """Secrets by rotation status, for prometheus_client's registry."""

    def collect(self):
        yield from secret_families()

    def describe(self):
        return []  # computed at scrape time only
