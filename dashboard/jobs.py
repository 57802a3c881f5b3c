"""The one way work is queued: a Celery task by its registered name, when the current
transaction commits (nothing is queued if it rolls back; eager mode applies as usual).

Code that queues work (alert delivery, reviews, purges) names the task instead of importing
the tasks module, whose tasks call back into that code: imports then run one way only,
tasks -> operations and alerts -> models. The app is Celery's current one, the project's
(`dashboard.celery`, loaded with the `dashboard` package), as for `shared_task`.
"""

from celery import chord, group
from celery import current_app as app
from django.db import transaction


def task(name):
    """The registered Celery task `name` (NotRegistered if there is none). The first time a
    name is missing in this process, the task modules are loaded the way the worker loads
    them (autodiscovery of every installed app's `tasks`)."""
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]


def enqueue_on_commit(name, *args, countdown=None):
    """Queue task `name` with `args` once the surrounding transaction commits (at once
    outside one), after `countdown` seconds when given."""
    transaction.on_commit(lambda: task(name).apply_async(args=args, countdown=countdown))


def fan_out_on_commit(name, each, callback, *args):
    """Queue one task `name` per argument tuple of `each`, as a group whose results go to
    task `callback` (with `args` after them): a Celery chord, once the transaction commits.
    The result backend (django-celery-results) counts the group's parts."""
    parts = [task(name).si(*part) for part in each]

    def send():
        if parts:
            chord(group(parts), task(callback).s(*args)).apply_async()
        else:
            task(callback).apply_async(args=([], *args))

    transaction.on_commit(send)
