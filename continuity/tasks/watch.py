"""The 'keyspace watch' beat task; `manage.py watch_keyspaces` is its twin."""

from celery import shared_task

from continuity.operations import keyspace_watch
from dashboard.failure_plan import WATCH_TASK


@shared_task(name=WATCH_TASK, soft_time_limit=50, time_limit=60, ignore_result=True)
def watch_keyspaces_task():
    """Look at every monitored database; alert once when one lost keys or restarted."""
    return [event for check in keyspace_watch.watch_keyspaces() for event in check.alerted]
