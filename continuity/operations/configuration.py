"""Configuration changes of the keyspace side, each with its audit entry in the same
transaction: a namespace and its TTL policy, and a beat schedule."""

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule

from dashboard import audit, roles


def _actor_kwargs(request, actor, source):
    return {"request": request} if request is not None else {"actor": actor, "source": source}


def save_namespace(*, form, actor, request=None, source="web"):
    """Create or edit a namespace from a valid NamespaceForm; audited as namespace.create
    or namespace.update with before/after. `before` comes from the database, because the
    form has already written the new values onto its instance."""
    roles.require_role(actor, roles.OPERATOR)
    instance = form.instance
    with transaction.atomic():
        before = None
        if instance.pk:
            before = audit.snapshot(type(instance).objects.select_for_update().get(pk=instance.pk))
        namespace = form.save()
        audit.record(action="namespace.update" if before else "namespace.create", target=namespace,
                     before=before, after=audit.snapshot(namespace), **_actor_kwargs(request, actor, source))
    return namespace


def schedule_snapshot(task):
    """What an admin can change on a beat schedule, as audit before/after."""
    return {"enabled": task.enabled, "interval": str(task.interval) if task.interval else None,
            "crontab": str(task.crontab) if task.crontab else None}


def update_schedule(*, task, enabled, interval=None, crontab=None, actor, request=None, source="web"):
    """Switch a django-celery-beat PeriodicTask on or off and give it either an interval
    (`(every, period)`) or a crontab (a dict of its five fields, UTC); audited as
    schedule.update."""
    roles.require_role(actor, roles.ADMIN)
    if (interval is None) == (crontab is None):
        raise ValueError("Give either an interval or a crontab.")
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
                     after=schedule_snapshot(task), **_actor_kwargs(request, actor, source))
    return task
