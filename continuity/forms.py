"""Forms of the keyspace side."""

from celery.schedules import crontab
from django import forms
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule

from dashboard import audit


def schedule_snapshot(task):
    """What an admin can change on a beat schedule, as audit before/after."""
    return {"enabled": task.enabled, "interval": str(task.interval) if task.interval else None,
            "crontab": str(task.crontab) if task.crontab else None}


class ScheduleForm(forms.Form):
    """Edit a django-celery-beat PeriodicTask: enabled, and an interval or a crontab."""

    INTERVAL, CRONTAB = "interval", "crontab"
    enabled = forms.BooleanField(required=False)
    kind = forms.ChoiceField(choices=[(INTERVAL, "Every…"), (CRONTAB, "Crontab")])
    every = forms.IntegerField(min_value=1, required=False)
    period = forms.ChoiceField(choices=IntervalSchedule.PERIOD_CHOICES, required=False)
    minute = forms.CharField(max_length=240, required=False, initial="*")
    hour = forms.CharField(max_length=96, required=False, initial="*")
    day_of_week = forms.CharField(max_length=64, required=False, initial="*")
    day_of_month = forms.CharField(max_length=124, required=False, initial="*")
    month_of_year = forms.CharField(max_length=64, required=False, initial="*")

    CRON_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")

    @classmethod
    def for_task(cls, task, data=None):
        initial = {"enabled": task.enabled, "kind": cls.CRONTAB if task.crontab_id else cls.INTERVAL}
        if task.interval_id:
            initial.update(every=task.interval.every, period=task.interval.period)
        if task.crontab_id:
            initial.update({f: getattr(task.crontab, f) for f in cls.CRON_FIELDS})
        return cls(data=data, initial=initial)

    def clean(self):
        data = super().clean()
        if data.get("kind") == self.INTERVAL:
            if not data.get("every") or not data.get("period"):
                raise forms.ValidationError("Give a number and a unit for the interval.")
        elif data.get("kind") == self.CRONTAB:
            fields = {f: (data.get(f) or "*").strip() for f in self.CRON_FIELDS}
            try:
                crontab(**fields)
            except ValueError as exc:
                raise forms.ValidationError(f"Not a valid crontab: {exc}") from exc
            data.update(fields)
        return data

    def save(self, task, *, request):
        """Apply the change to `task` and audit it, in one transaction."""
        data = self.cleaned_data
        with transaction.atomic():
            before = schedule_snapshot(task)
            if data["kind"] == self.INTERVAL:
                task.interval, _ = IntervalSchedule.objects.get_or_create(every=data["every"], period=data["period"])
                task.crontab = None
            else:
                task.crontab, _ = CrontabSchedule.objects.get_or_create(
                    **{f: data[f] for f in self.CRON_FIELDS}, timezone="UTC")
                task.interval = None
            task.enabled = data["enabled"]
            task.save()
            audit.record(action="schedule.update", target=task, target_label=task.name, before=before,
                         after=schedule_snapshot(task), request=request)
        return task
