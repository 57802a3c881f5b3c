"""What the dashboard itself does when a service fails: the answers of /healthz and the
alerts it sends, and when.

The code that answers /healthz (`dashboard.health`) and the code that sends these alerts
(`continuity.operations.alerting`, `continuity.operations.keyspace_watch`) take their
status codes, event names and severities from here, and the runbook's failure plan
(`dashboard_behaviour`) is written from the same constants and the live schedules and
channels, so the runbook cannot say something the product does not do.
"""

from django.conf import settings

# /healthz: its "status" and the HTTP code it answers with.
OK, DEGRADED, DOWN = "ok", "degraded", "down"
HEALTHZ_CODES = {OK: 200, DEGRADED: 200, DOWN: 503}

# Alert events about a monitored Redis, and their severities.
REDIS_UNREACHABLE, REDIS_RECOVERED = "redis.unreachable", "redis.recovered"
KEYSPACE_LOST, REDIS_RESTARTED, PERSISTENCE_OFF = "keyspace.lost", "redis.restarted", "redis.persistence_off"
SEVERITIES = {REDIS_UNREACHABLE: "critical", REDIS_RECOVERED: "info", KEYSPACE_LOST: "critical",
              REDIS_RESTARTED: "warning", PERSISTENCE_OFF: "warning"}

# The beat tasks that send them (`continuity.tasks.health`, `continuity.tasks.watch`).
CHECK_TASK, WATCH_TASK = "continuity.check_monitored_redis", "continuity.watch_keyspaces"


def _schedule(task_name):
    """How often beat runs `task_name`, in words ("every minute", "every 15 minutes"), or why it does not."""
    from django_celery_beat.models import PeriodicTask

    tasks = list(PeriodicTask.objects.filter(task=task_name).select_related("interval", "crontab"))
    enabled = [task for task in tasks if task.enabled]
    if not enabled:
        return "never: its schedule is off (Jobs → Schedules)" if tasks else "never: it has no schedule (seed_runbook)"
    task = enabled[0]
    if task.interval_id:
        every, period = task.interval.every, task.interval.period
        return f"every {period.rstrip('s')}" if every == 1 else f"every {every} {period}"
    return f"on the crontab {task.crontab}"


def dashboard_behaviour(*, channels):
    """[(label, sentence)]: what the dashboard does when a monitored Redis fails, from the
    constants above, the settings, the beat schedules and the enabled alert `channels`
    (their names)."""
    codes, share = HEALTHZ_CODES, settings.ALERT_KEYSPACE_LOSS_SHARE
    where = (f"To the enabled alert channels: {', '.join(channels)}" if channels else
             "Nowhere: no alert channel is enabled (Runbook → Alerts)")
    return [
        ("Health probe", f"GET /healthz answers {codes[DEGRADED]} with status “{DEGRADED}” while a monitored Redis "
                         f"is unreachable or misconfigured, {codes[DOWN]} (“{DOWN}”) only when Postgres is down, "
                         f"{codes[OK]} (“{OK}”) otherwise: a load balancer keeps the dashboard in service, so page on "
                         f"the alerts below, not on /healthz."),
        ("On every page", "A red “Redis … is unreachable” banner while it does not answer a ping."),
        ("Unreachable", f"Checked {_schedule(CHECK_TASK)}. After {settings.ALERT_REDIS_DOWN_MINUTES} minutes "
                        f"without an answer (ALERT_REDIS_DOWN_MINUTES): alert {REDIS_UNREACHABLE} "
                        f"({SEVERITIES[REDIS_UNREACHABLE]}), once; {REDIS_RECOVERED} once when it answers again."),
        ("Keys lost or restarted", f"Checked {_schedule(WATCH_TASK)}. Alert {KEYSPACE_LOST} "
                                   f"({SEVERITIES[KEYSPACE_LOST]}) when its keys drop by more than {share:.0%} "
                                   f"between two checks (ALERT_KEYSPACE_LOSS_SHARE), {REDIS_RESTARTED} "
                                   f"({SEVERITIES[REDIS_RESTARTED]}) when it restarted and kept them, "
                                   f"{PERSISTENCE_OFF} ({SEVERITIES[PERSISTENCE_OFF]}) when it keeps no keys on disk; "
                                   f"each once, and on the home page for 24 hours."),
        ("Where alerts go", where + "."),
    ]
