"""Alerts of the keyspace side, sent through the records side's channels
(`dashboard.alerts.notify`): review findings crossing a threshold, and a monitored Redis
unreachable for some minutes. Each fires once per transition, not on every run or ping."""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from continuity import keyspace
from dashboard import alerts, failure_plan
from dashboard.models import RedisDatabase


def _link(path):
    return settings.DASHBOARD_BASE_URL.rstrip("/") + path


def alert_on_review(run):
    """After a succeeded review: alert when the findings rise to the threshold or above
    (having been below it in the previous succeeded review), and say so when they fall back.
    Returns the event sent, or None."""
    from continuity.models import ReviewRun

    threshold = settings.ALERT_REVIEW_FINDINGS_THRESHOLD
    previous = (ReviewRun.objects.filter(database=run.database, status=ReviewRun.SUCCEEDED, pk__lt=run.pk)
                .order_by("-pk").first())
    now_total = run.estimated_total_findings
    before_total = previous.estimated_total_findings if previous else 0
    kind = " (sampled: estimated)" if run.sampled else ""
    link = _link(reverse("continuity:review_detail", args=[run.pk]))
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted((run.findings or {}).items()) if count)
    if now_total >= threshold > before_total:
        alerts.notify(event="review.findings", severity="warning", link=link,
                      title=f"TTL review of {run.database.name}{kind}: {now_total} findings",
                      text=f"Review #{run.pk} found {now_total} keys breaking policy ({counts}); "
                           f"the previous review found {before_total}.")
        return "review.findings"
    if before_total >= threshold > now_total and previous is not None:
        alerts.notify(event="review.resolved", severity="info", link=link,
                      title=f"TTL review of {run.database.name}{kind}: findings below {threshold}",
                      text=f"Review #{run.pk} found {now_total} keys breaking policy, down from {before_total}.")
        return "review.resolved"
    return None


def alert_on_partial_review(run):
    """After a partial review of a Redis Cluster (some primaries could not be read): always
    alert, naming the missing nodes; its figures are not compared with the previous review's."""
    nodes = ", ".join(run.missing_nodes or []) or "unknown nodes"
    alerts.notify(event="review.partial", severity="warning",
                  link=_link(reverse("continuity:review_detail", args=[run.pk])),
                  title=f"TTL review of {run.database.name} is partial: {len(run.missing_nodes or [])} "
                        f"primar{'y' if len(run.missing_nodes or []) == 1 else 'ies'} not read",
                  text=f"Review #{run.pk} could not read {nodes}; its figures ({run.total_findings} findings in "
                       f"{run.keys_scanned} keys) cover the other primaries only. {run.error}")
    return "review.partial"


@dataclass(frozen=True)
class RedisCheck:
    database: str
    ok: bool
    down_since: datetime | None
    event: str | None  # the alert sent by this check, if any


def _state_key(database):
    return f"monitored-redis-down:{database.pk}"


def check_monitored_redis(*, now=None):
    """Ping every monitored database. A database that has been unreachable for
    ALERT_REDIS_DOWN_MINUTES is alerted once; its recovery is alerted once after that.
    The 'down since' state lives in the dashboard's cache Redis, never the monitored one."""
    now = now or timezone.now()
    limit = settings.ALERT_REDIS_DOWN_MINUTES * 60
    results = []
    for database in RedisDatabase.objects.all():
        health = keyspace.ping(database)
        key = _state_key(database)
        state = cache.get(key)
        event = None
        if health.ok:
            if state and state.get("alerted"):
                alerts.notify(event=failure_plan.REDIS_RECOVERED,
                              severity=failure_plan.SEVERITIES[failure_plan.REDIS_RECOVERED],
                              title=f"Redis {database.name} is reachable again",
                              text=f"{database.name} answers again after being unreachable since "
                                   f"{state['since']:%Y-%m-%d %H:%M} UTC.", link=_link(reverse("continuity:overview")))
                event = failure_plan.REDIS_RECOVERED
            cache.delete(key)
            results.append(RedisCheck(database.name, True, None, event))
            continue
        state = state or {"since": now, "alerted": False}
        if not state["alerted"] and (now - state["since"]).total_seconds() >= limit:
            alerts.notify(event=failure_plan.REDIS_UNREACHABLE,
                          severity=failure_plan.SEVERITIES[failure_plan.REDIS_UNREACHABLE],
                          title=f"Redis {database.name} unreachable for {settings.ALERT_REDIS_DOWN_MINUTES}+ minutes",
                          text=f"{health.error} Unreachable since {state['since']:%Y-%m-%d %H:%M} UTC. "
                               "Lucia falls back per the failure plan; records pages keep working.",
                          link=_link(reverse("dashboard:database_detail", args=[database.name])))
            state["alerted"] = True
            event = failure_plan.REDIS_UNREACHABLE
        cache.set(key, state, timeout=7 * 86400)
        results.append(RedisCheck(database.name, False, state["since"], event))
    return results


def alert_on_purge(run):
    """A purge finished or failed: tell the channels (a cancel was someone's decision: no alert).

    Alerts leave the dashboard for third-party chat and webhook services, so they carry only
    what on-call needs to act: run id, database, action, status, counts and the link. Never
    the operator's free-text reason, the target or an error text: those stay on the run's page.
    """
    from continuity.models import PurgeRun

    if run.status not in (PurgeRun.SUCCEEDED, PurgeRun.FAILED):
        return None
    link = _link(run.get_absolute_url())
    counts = f"matched {run.matched}, {run.done_label} {run.done}, skipped {run.skipped}"
    if run.status == PurgeRun.SUCCEEDED:
        alerts.notify(event="purge.finished", severity="info", link=link,
                      title=f"Purge #{run.pk} finished: {run.done} {run.done_label}",
                      text=f"Purge #{run.pk} ({run.action}) on {run.database.name} succeeded: {counts}.")
        return "purge.finished"
    alerts.notify(event="purge.failed", severity="critical", link=link, title=f"Purge #{run.pk} failed",
                  text=f"Purge #{run.pk} ({run.action}) on {run.database.name} failed: {counts}. "
                       "The error is on the run's page.")
    return "purge.failed"
