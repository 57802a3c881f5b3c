"""Celery tasks of the records side. Thin: each calls one function and is idempotent."""

from celery import shared_task

from dashboard import alerts


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
