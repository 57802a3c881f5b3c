"""Prometheus metrics of the keyspace side, computed from Postgres (and a PING) at scrape time.

`KeyspaceCollector` is a custom collector: nothing is counted in the web process, so every
gunicorn worker answers a scrape with the same figures (see dashboard.monitoring). Labels are
records' names only: databases, namespaces (their slug), job kinds and outcomes, finding kinds.
Never a key name, prefix or pattern: cardinality is bounded by the records.
"""

from django.db.models import Count, F, FloatField, Func, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from continuity import keyspace
from continuity.models import KeyspaceCheck, Namespace, PolicyReport, PurgeRun, ReviewRun
from continuity.models.watch import SHOWN_FOR
from continuity.policy import FINDINGS, NO_TTL_BUCKET
from dashboard.models import RedisDatabase

NO_NAMESPACE = "(none)"  # keys under the database's key prefix in no namespace
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600)
REVIEW_KINDS = {False: "exact", True: "sampled"}


def _latest_reviews():
    """The latest succeeded review of each kind (exact, sampled) of each database."""
    latest = []
    for database in RedisDatabase.objects.order_by("name"):
        for sampled in (False, True):
            run = (ReviewRun.objects.filter(database=database, status=ReviewRun.SUCCEEDED, sampled=sampled)
                   .order_by("-finished_at", "-id").first())
            if run is not None:
                latest.append((database, run))
    return latest


def review_families(now=None):
    """Keys, keys without TTL and findings per database and namespace from the last review of
    each kind (label `review`: exact, or sampled: then estimates, scaled to the keyspace), and
    the age of those reviews."""
    now = now or timezone.now()
    labels = ["database", "namespace", "review"]
    keys = GaugeMetricFamily("dashboard_review_keys", "Keys per namespace in the last review (sampled: estimated).",
                             labels=labels)
    no_ttl = GaugeMetricFamily("dashboard_review_keys_without_ttl",
                               "Keys without a TTL per namespace in the last review (sampled: estimated).", labels=labels)
    findings = GaugeMetricFamily("dashboard_review_findings",
                                 "Findings per namespace and kind in the last review (sampled: estimated).",
                                 labels=[*labels, "finding"])
    age = GaugeMetricFamily("dashboard_review_age_seconds", "Seconds since the last review of this kind finished.",
                            labels=["database", "review"])
    for database, run in _latest_reviews():
        kind, scale = REVIEW_KINDS[run.sampled], run.scale()
        age.add_metric([database.name, kind], max(0.0, (now - (run.finished_at or run.created_at)).total_seconds()))
        # A namespace the review found no key in is a 0, not an absent series (alerts compare).
        figures = {name: (0, 0, {}) for name in Namespace.objects.for_database(database).values_list("name", flat=True)}
        for stat in run.namespace_stats.select_related("namespace"):
            namespace = stat.namespace.name if stat.namespace is not None else NO_NAMESPACE
            figures[namespace] = (stat.keys, (stat.ttl_histogram or {}).get(NO_TTL_BUCKET, 0), stat.findings or {})
        for namespace, (count, without_ttl, found) in sorted(figures.items()):
            row = [database.name, namespace, kind]
            keys.add_metric(row, round(count * scale))
            no_ttl.add_metric(row, round(without_ttl * scale))
            for finding in FINDINGS:
                findings.add_metric([*row, finding], round(found.get(finding, 0) * scale))
    return [keys, no_ttl, findings, age]


def _executed_purges():
    # Previews nobody confirmed are deleted after a day: counting them would make counters drop.
    return PurgeRun.objects.filter(queued_at__isnull=False)


def job_families():
    """Job runs by kind, database and outcome; those still queued or running; their durations;
    and the billed commands they spent. Counters are sums over rows that are never deleted
    (reviews, executed purges, policy reports), so they only grow."""
    runs = CounterMetricFamily("dashboard_job_runs", "Finished job runs by kind, database and outcome.",
                               labels=["kind", "database", "outcome"])
    active = GaugeMetricFamily("dashboard_jobs_active", "Job runs queued or running.",
                               labels=["kind", "database", "status"])
    billed = CounterMetricFamily("dashboard_job_billed_commands",
                                 "Commands the monitored Redis billed for jobs (script-internal calls included).",
                                 labels=["kind", "database"])
    reviews = (ReviewRun.objects.values("database__name", "sampled", "status")
               .annotate(n=Count("id"), billed=Coalesce(Sum("billed_commands"), 0)))
    for row in reviews:
        kind = "review_" + REVIEW_KINDS[row["sampled"]]
        family = active if row["status"] in ReviewRun.ACTIVE else runs
        family.add_metric([kind, row["database__name"], row["status"]], row["n"])
    for row in ReviewRun.objects.values("database__name", "sampled").annotate(billed=Coalesce(Sum("billed_commands"), 0)):
        billed.add_metric(["review_" + REVIEW_KINDS[row["sampled"]], row["database__name"]], row["billed"])
    for row in _executed_purges().values("database__name", "status").annotate(n=Count("id")):
        family = active if row["status"] in PurgeRun.ACTIVE else runs
        family.add_metric(["purge", row["database__name"], row["status"]], row["n"])
    purge_billed = _executed_purges().values("database__name").annotate(
        billed=Coalesce(Sum(F("billed_commands") + F("preview_billed_commands")), 0))
    for row in purge_billed:
        billed.add_metric(["purge", row["database__name"]], row["billed"])
    for row in PolicyReport.objects.values("database__name").annotate(billed=Coalesce(Sum("billed_commands"), 0)):
        billed.add_metric(["policy_report", row["database__name"]], row["billed"])
    return [runs, active, billed, _durations()]


def _durations():
    """A histogram of finished runs' durations per kind, counted by Postgres per bucket."""
    family = HistogramMetricFamily("dashboard_job_duration_seconds", "Durations of finished job runs.",
                                   labels=["kind"])
    finished = (ReviewRun.SUCCEEDED, ReviewRun.PARTIAL, ReviewRun.FAILED)
    sources = {
        "review_exact": (ReviewRun.objects.filter(status__in=finished, sampled=False), "duration_s"),
        "review_sampled": (ReviewRun.objects.filter(status__in=finished, sampled=True), "duration_s"),
    }
    for kind, (rows, field) in sources.items():
        _add_histogram(family, kind, rows, field)
    purges = (_executed_purges().filter(status__in=PurgeRun.FINISHED, started_at__isnull=False,
                                        finished_at__isnull=False)
              .annotate(seconds=_epoch(F("finished_at")) - _epoch(F("started_at"))))
    _add_histogram(family, "purge", purges, "seconds")
    return family


def _epoch(expression):
    return Func(expression, function="EXTRACT", template="EXTRACT(EPOCH FROM %(expressions)s)",
                output_field=FloatField())


def _add_histogram(family, kind, rows, field):
    aggregates = {f"le_{i}": Count("id", filter=Q(**{f"{field}__lte": bound}))
                  for i, bound in enumerate(DURATION_BUCKETS)}
    totals = rows.aggregate(count=Count("id"), total=Coalesce(Sum(field), 0.0), **aggregates)
    buckets = [(str(float(bound)), totals[f"le_{i}"]) for i, bound in enumerate(DURATION_BUCKETS)]
    buckets.append(("+Inf", totals["count"]))
    family.add_metric([kind], buckets, float(totals["total"]))


def redis_families():
    """Each monitored Redis: up (1) or down (0), and its PING round trip. A PING per database
    per scrape, with the monitored keyspace's short timeouts (REDIS_CONNECT_TIMEOUT)."""
    up = GaugeMetricFamily("dashboard_redis_up", "1 when the monitored Redis answers PING.", labels=["database"])
    rtt = GaugeMetricFamily("dashboard_redis_rtt_seconds", "Round trip of a PING to the monitored Redis.",
                            labels=["database"])
    for database in RedisDatabase.objects.order_by("name"):
        health = keyspace.ping(database)
        up.add_metric([database.name], 1 if health.ok else 0)
        if health.ok:
            rtt.add_metric([database.name], health.latency_ms / 1000)
    return [up, rtt]


def watch_families(now=None):
    """The keyspace watch (a look every minute): each database's keys and keys without TTL at
    the last check where every primary answered, that check's age, and the keyspace-loss alarm:
    1 for each event (keys lost, restarted) a check found in the last SHOWN_FOR (24 h, as long
    as the first screen shows it), else 0. A database never checked has no samples."""
    now = now or timezone.now()
    keys = GaugeMetricFamily("dashboard_keyspace_keys", "Keys at the keyspace watch's last answered check.",
                             labels=["database"])
    no_ttl = GaugeMetricFamily("dashboard_keyspace_keys_without_ttl",
                               "Keys without TTL at the keyspace watch's last answered check (where counted).",
                               labels=["database"])
    age = GaugeMetricFamily("dashboard_keyspace_check_age_seconds",
                            "Seconds since the keyspace watch's last answered check.", labels=["database"])
    alarm = GaugeMetricFamily("dashboard_keyspace_alarm",
                              "1 when the keyspace watch found this event in the last 24 hours (keys lost: "
                              "keyspace.lost; a restart: redis.restarted), else 0.", labels=["database", "event"])
    for database in RedisDatabase.objects.order_by("name"):
        checks = KeyspaceCheck.objects.for_database(database)
        last = checks.answered().latest_first().first()
        if last is None:
            continue
        if last.keys is not None:
            keys.add_metric([database.name], last.keys)
        if last.keys_without_ttl is not None:
            no_ttl.add_metric([database.name], last.keys_without_ttl)
        age.add_metric([database.name], max(0.0, (now - last.checked_at).total_seconds()))
        found = set(checks.findings_since(now - SHOWN_FOR).values_list("event", flat=True))
        for event in (KeyspaceCheck.LOST, KeyspaceCheck.RESTARTED):
            alarm.add_metric([database.name, event], 1 if event in found else 0)
    return [keys, no_ttl, age, alarm]


class KeyspaceCollector:
    """Reviews, jobs and the monitored Redis, for prometheus_client's registry."""

    def collect(self):
        yield from review_families()
        yield from job_families()
        yield from redis_families()
        yield from watch_families()

    def describe(self):
        return []  # computed at scrape time only: no query when the collector is registered
