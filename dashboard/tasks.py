"""Celery tasks of the records side. Thin: each calls one function and is idempotent."""

from celery import shared_task

from dashboard import alerts
from dashboard.models import RedisDatabase, Secret
from dashboard.sources import databases, secrets


@shared_task(name="dashboard.check_rotations", time_limit=300, soft_time_limit=240)
def check_rotations_task():
    """Daily: alert once per rotation-status transition (twin: `manage.py check_rotations`)."""
    result = alerts.check_rotations()
    return {"checked": result.checked, "transitions": result.transitions, "queued": result.queued}


@shared_task(bind=True, name=alerts.DELIVER_TASK, max_retries=alerts.MAX_ATTEMPTS,
             time_limit=60, soft_time_limit=45)
def deliver_alert_task(self, delivery_id):
    """Deliver one queued alert; retry with backoff until `alerts.MAX_ATTEMPTS` attempts."""
    outcome = alerts.deliver(delivery_id)
    if outcome == alerts.RETRY:
        raise self.retry(countdown=min(30 * 2 ** self.request.retries, 900))
    return outcome


@shared_task(name="dashboard.check_onepassword", time_limit=600, soft_time_limit=540)
def check_onepassword_task(secret_id=None):
    """Daily, and "check now" for one secret: each secret's reference against 1Password
    (metadata only; twin: `manage.py check_sources --only 1password`)."""
    only = Secret.objects.filter(pk=secret_id) if secret_id is not None else None
    result = secrets.check_secrets(secrets=only)
    return {"configured": result.configured, "failure": result.failure, "states": result.states,
            "transitions": result.transitions, "queued": result.queued}


@shared_task(name="dashboard.check_upstash", time_limit=600, soft_time_limit=540)
def check_upstash_task(database_id=None):
    """Hourly, and "check now" for one record: each linked database against the Upstash account
    (read only; twin: `manage.py check_sources --only upstash`)."""
    only = RedisDatabase.objects.filter(pk=database_id) if database_id is not None else None
    result = databases.check_databases(databases=only)
    return {"configured": result.configured, "failure": result.failure, "found": result.found,
            "alerts": result.alerts, "queued": result.queued}
