"""Enqueue a Celery task by its registered name when the current transaction commits.

Code that queues work (alert delivery, review requests) names the task instead of importing
the tasks module, whose tasks call back into that code: imports then run one way only,
tasks -> operations and alerts -> models.
"""

from dashboard.celery import app


def task(name):
    """The registered Celery task `name` (NotRegistered if there is none). The first time a
    name is missing in this process, the task modules are loaded the way the worker loads
    them (autodiscovery of every installed app's `tasks`)."""
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]


def enqueue_on_commit(name, *args, **kwargs):
    """Queue task `name` with these arguments once the surrounding transaction commits
    (`delay_on_commit`); nothing is queued if it rolls back. Eager mode applies as usual."""
    task(name).delay_on_commit(*args, **kwargs)
