"""Configuration changes of the keyspace side, each with its audit entry in the same
transaction: a namespace and its TTL policy, and a beat schedule."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule

from continuity import crontabs
from dashboard import audit, roles
from dashboard.models import RedisDatabase
from dashboard.operations import actor_kwargs, save_record


def save_namespace(*, form, actor, request=None, source="web"):
    """Create or edit a namespace from a valid NamespaceForm; audited as namespace.create
    or namespace.update with before/after (`dashboard.operations.save_record`)."""
    action = "namespace.update" if form.instance.pk else "namespace.create"
    with transaction.atomic():
        # Every record locked: the prefix rule spans the records on one keyspace.
        list(RedisDatabase.objects.select_for_update().values_list("pk", flat=True))
        problem = form.instance.prefix_problem()
        if problem:
            raise ValidationError({"prefix": problem})
        return save_record(form=form, action=action, actor=actor, request=request, source=source)


def schedule_snapshot(task):
    """What an admin can change on a beat schedule, as audit before/after."""
    return {"enabled": task.enabled, "interval": str(task.interval) if task.interval else None,
            "crontab": str(task.crontab) if task.crontab else None}


def update_schedule(*, task, enabled, interval=None, crontab=None, actor, request=None, source="web"):
    """Switch a django-celery-beat PeriodicTask on or off and give it either an interval
    (`(every, period)`) or a crontab (a dict of its five fields, UTC; a field left out is
    "*"); audited as schedule.update. A crontab that celery beat could not run, or that the
    beat model refuses, raises ValidationError and changes nothing (`crontabs.check`)."""
    roles.require_role(actor, roles.ADMIN)
    if (interval is None) == (crontab is None):
        raise ValueError("Give either an interval or a crontab.")
    if crontab is not None:
        if set(crontab) - set(crontabs.FIELDS):
            raise ValueError(f"A crontab has only the fields {', '.join(crontabs.FIELDS)}.")
        crontab = {name: crontab.get(name, "*") for name in crontabs.FIELDS}
        crontabs.check(crontab)
    with transaction.atomic():
        before = schedule_snapshot(task)
        if interval is not None:
            every, period = interval
            task.interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
            task.crontab = None
        else:
            task.crontab, _ = CrontabSchedule.objects.get_or_create(**crontab, timezone="UTC")
            task.interval = None
        task.enabled = enabled
        task.save()
        audit.record(action="schedule.update", target=task, target_label=task.name, before=before,
                     after=schedule_snapshot(task), **actor_kwargs(request, actor, source))
    return task
