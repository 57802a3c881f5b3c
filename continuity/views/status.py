"""The first screen: the top of the home page, for the operator woken at 3 a.m.

An htmx region of the records' home page (the records import no continuity), refreshed
every 30 seconds. Per monitored database: Redis up or down (the page's own ping, with its
age), its keys and keys without TTL from the keyspace watch's last check, a loss or a
restart the watch found in the last 24 hours, persistence off, and the share of keys inside
policy per namespace from the last review (its age, sampled or exact). Then the Celery
worker's and beat's last sign of life, and the alert channels or the warning that there
are none. No SCAN and no key is read here: a ping per database (cached for the banner).
"""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Max
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.vary import vary_on_headers

from continuity import keyspace
from continuity.models import KeyspaceCheck, ReviewRun
from continuity.models.watch import SHOWN_FOR, WORKER_SILENT_AFTER
from dashboard import roles
from dashboard.models import AlertChannel, RedisDatabase

# Beat saves the last run times of its schedules every 3 minutes (celery's sync_every), and the
# keyspace watch runs every minute: older than this, beat has stopped sending.
BEAT_SILENT_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class Liveness:
    """A process's last sign of life: `at` (None: never), and whether that is recent enough."""

    at: object
    up: bool


def _liveness(at, silent_after, now):
    return Liveness(at, at is not None and now - at <= silent_after)


def beat_liveness(now):
    """When beat last sent a scheduled task (django-celery-beat's last run times)."""
    from django_celery_beat.models import PeriodicTask

    at = PeriodicTask.objects.filter(enabled=True).aggregate(at=Max("last_run_at"))["at"]
    return _liveness(at, BEAT_SILENT_AFTER, now)


def _last_review(database):
    return (ReviewRun.objects.for_database(database).filter(status__in=(ReviewRun.SUCCEEDED, ReviewRun.PARTIAL))
            .order_by("-finished_at", "-pk").first())


def database_status(database, now):
    """Everything the first screen shows about one database."""
    checks = KeyspaceCheck.objects.for_database(database)
    review = _last_review(database)
    stats = list(review.namespace_stats.select_related("run", "namespace")) if review else []
    return {
        "database": database,
        "redis": keyspace.cached_ping(database),
        "check": checks.latest_first().first(),
        "answered": checks.answered().latest_first().first(),
        "finding": checks.findings_since(now - SHOWN_FOR).first(),
        "review": review,
        "namespaces": [(stat, stat.inside_policy()) for stat in stats if stat.namespace_id],
        "outside": sum(stat.keys for stat in stats if not stat.namespace_id),
    }


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def first_screen(request):
    """The first screen's region (htmx), or the same as a page of its own."""
    now = timezone.now()
    context = {
        "statuses": [database_status(database, now) for database in RedisDatabase.objects.all()],
        "worker": _liveness(KeyspaceCheck.objects.last_worker_check(), WORKER_SILENT_AFTER, now),
        "beat": beat_liveness(now),
        "channels": list(AlertChannel.objects.enabled()),
    }
    template = "continuity/first_screen.html#screen" if request.htmx else "continuity/first_screen.html"
    return render(request, template, context)
