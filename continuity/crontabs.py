"""The five crontab fields of a beat schedule: one check of what may be stored, and a safe
reading of what is stored.

A field is stored only when celery (which runs it) and django-celery-beat's own model
validators (which the admin site applies) both accept it. Each disagrees with the other
somewhere: celery refuses day of week 7 and accepts wrapping ranges such as `59-0`; the
model accepts 7 and refuses wrapping ranges. Celery's parser also raises its own
`ParseException` (not a ValueError) for `*/` or `-1`, and takes non-ASCII digits (`٣`)
and day names in any field (`minute=mon` is minute 1). So a field must first have the
plain shape: ASCII digits, `* , - /`, and names only where cron has names.
"""

import re

from celery.schedules import ParseException, crontab
from django.core.exceptions import ValidationError
from django_celery_beat import validators
from django_celery_beat.models import CrontabSchedule

FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
CRON_ORDER = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")  # as a crontab line reads
_NUMBERS = re.compile(r"[0-9*,/\-]+")
_NAMED = re.compile(r"[0-9A-Za-z*,/\-]+")
SHAPES = {"minute": _NUMBERS, "hour": _NUMBERS, "day_of_month": _NUMBERS,
          "day_of_week": _NAMED, "month_of_year": _NAMED}
HINTS = {
    "minute": "0–59",
    "hour": "0–23",
    "day_of_week": "0–6 (0 is Sunday) or sun–sat",
    "day_of_month": "1–31",
    "month_of_year": "1–12 or jan–dec",
}
SYNTAX = "a value, a list (1,5), a rising range (1-5), a step (*/15) or *"


def field_error(name, value):
    """Why `value` cannot be stored as the crontab field `name`, as one sentence for the
    form; None when it can."""
    label = name.replace("_", " ")
    usage = f"use {HINTS[name]}: {SYNTAX}."
    if not value:
        return f"Not a valid crontab {label}: empty; {usage}"
    limit = CrontabSchedule._meta.get_field(name).max_length
    if len(value) > limit:
        return f"Not a valid crontab {label}: longer than {limit} characters."
    if not SHAPES[name].fullmatch(value):
        allowed = "ASCII digits" + (", names" if SHAPES[name] is _NAMED else "")
        return f"Not a valid crontab {label}: only {allowed} and * , - / are allowed; {usage}"
    try:
        crontab(**{name: value})
        getattr(validators, f"{name}_validator")(value)
    except (ParseException, ValueError, ValidationError):
        # Celery's and the validators' own wording ("empty filter", "Invalid weekday
        # literal") speaks of their parsers, not of this field: say what is allowed.
        return f"Not a valid crontab {label}: {value!r} is out of range or malformed; {usage}"
    return None


def check(fields):
    """Raise a ValidationError (a dict by field, or one message for the whole) unless the
    five `fields` (a dict, every key of FIELDS) make a crontab that can be stored and run."""
    errors = {name: message for name in FIELDS if (message := field_error(name, fields[name]))}
    if errors:
        raise ValidationError(errors)
    try:
        crontab(**{name: fields[name] for name in FIELDS})
    except (ParseException, ValueError) as exc:  # e.g. day 30 of February: never runs
        raise ValidationError(f"Not a valid crontab: {exc}") from exc


def parse(row):
    """Celery's crontab of a stored CrontabSchedule `row`, or None when the row does not parse
    (stored before this check, or through another path): pages show it as invalid, not a 500."""
    try:
        return crontab(**{name: getattr(row, name) for name in FIELDS})
    except (ParseException, ValueError):
        return None


def in_words(row):
    """A crontab row in words for the jobs page; its raw fields, marked invalid, when it does
    not parse."""
    if parse(row) is None:
        fields = " ".join(str(getattr(row, name)) for name in CRON_ORDER)
        return f"invalid crontab {fields} (m h dM MY d)"
    return row.human_readable
