"""The one way work is queued: a Celery task by its registered name, when the current
transaction commits (nothing is queued if it rolls back; eager mode applies as usual).

Code that queues work (alert delivery, reviews, purges) names the task instead of importing
the tasks module, whose tasks call back into that code: imports then run one way only,
tasks -> operations and alerts -> models. The app is Celery's current one, the project's
(`dashboard.celery`, loaded with the `dashboard` package), as for `shared_task`.

A broker that refuses the task (down, unreachable, full) is never a dead end: the caller's
`on_refused(reason)` records the run as failed with the reason (so nothing is left queued
that no task will ever pick up) and returns the operator's message, which `EnqueueRefused`
carries to the page or command. Without `on_refused` the broker's error propagates.
"""

import redis
from celery import chord, group
from celery import current_app as app
from django.db import transaction
from kombu.exceptions import OperationalError

# What publishing raises when the broker cannot take a message (kombu wraps most of them).
BROKER_ERRORS = (OperationalError, redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


class EnqueueRefused(Exception):
    """The broker refused a task. The message says what happened to the run and what to do;
    the run is already recorded failed (the transaction that created it had committed)."""


def describe_broker_error(exc):
    """The broker's refusal in an operator's words, without its URL (it may hold a password)."""
    detail = str(exc).split(" connecting to ")[0].strip() or exc.__class__.__name__
    return f"the task queue (Celery broker, CELERY_BROKER_URL) refused it: {detail}"


def task(name):
    """The registered Celery task `name` (NotRegistered if there is none). The first time a
    name is missing in this process, the task modules are loaded the way the worker loads
    them (autodiscovery of every installed app's `tasks`)."""
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]


def enqueue_on_commit(name, *args, countdown=None, on_refused=None):
    """Queue task `name` with `args` once the surrounding transaction commits (at once
    outside one), after `countdown` seconds when given. When the broker refuses and
    `on_refused` is given, `on_refused(reason)` runs (it records the failure and returns the
    operator's message) and EnqueueRefused is raised where the transaction ends."""

    def send():
        try:
            task(name).apply_async(args=args, countdown=countdown)
        except BROKER_ERRORS as exc:
            if on_refused is None:
                raise
            raise EnqueueRefused(on_refused(describe_broker_error(exc))) from exc

    transaction.on_commit(send)


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
