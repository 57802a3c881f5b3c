"""The 'monitored redis check' beat task; `manage.py check_monitored_redis` is its twin."""

from celery import shared_task

from continuity.operations import alerting
from dashboard.failure_plan import CHECK_TASK


@shared_task(name=CHECK_TASK, soft_time_limit=50, time_limit=60, ignore_result=True)
def check_monitored_redis_task():
    """Ping every monitored database; alert once when one stays unreachable, once when back."""
    return [check.event for check in alerting.check_monitored_redis() if check.event]
