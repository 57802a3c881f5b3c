"""Crontab schedules: every field is checked before it is stored (no 500 for any input), and a
row that does not parse, however it got there, cannot break the jobs page."""

import html
import random

import pytest
from celery.schedules import crontab
from django.core.exceptions import ValidationError
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from continuity.operations import configuration, costs
from dashboard.models import AuditEntry

FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
KNOWN_BAD = ["*/", "-1", "60", "1-", "*/0", "a", "1" * 5000, "٣", "１", "5 5", "1,,2", "*/-1", "mon", "\u202e1",
             "🙂", "0x1", "1.5", "*/ 5", "59-0", "", " ", "<b>", "'", "\\"]
NAMES = ["mon", "sun", "sat", "jan", "dec", "sunday", "x"]
JUNK = ["", "٣", "١٢", "é", "🙂", " ", "\t", "*/", "/", "-", ",", "%", "'", "<b>", "\\", "1" * 300, "-1",
        "99999999999999999999"]


TOPS = {"minute": 59, "hour": 23, "day_of_week": 6, "day_of_month": 31, "month_of_year": 12}


def fuzz_number(rng, field):
    """Mostly a number around the field's range (its bounds and one past them), else a name or junk."""
    top = TOPS[field]
    return rng.choice([str(rng.randint(0, top + 1)), str(rng.randint(0, top + 1)), rng.choice(["0", "1", str(top),
                       str(top + 1)]), rng.choice(NAMES), rng.choice(JUNK), "00"])


def fuzz_element(rng, field):
    """One cron element from the grammar (value, range, step), now and then with junk in it."""
    shape = rng.randrange(5)
    if shape == 0:
        return fuzz_number(rng, field)
    if shape == 1:
        return f"{fuzz_number(rng, field)}-{fuzz_number(rng, field)}"
    if shape == 2:
        return f"*/{fuzz_number(rng, field)}"
    if shape == 3:
        return f"{fuzz_number(rng, field)}-{fuzz_number(rng, field)}/{fuzz_number(rng, field)}"
    return "*"


def fuzz_value(rng, field):
    """A field: a list of one to three grammar elements, or a known bad value."""
    if rng.random() < 0.2:
        return rng.choice(KNOWN_BAD)
    return rng.choice([",", ", ", ",", ",", ",,"]).join(fuzz_element(rng, field) for _ in range(rng.randint(1, 3)))


def fuzz_cases(n=200, seed=15):
    """`n` schedule POSTs from a fixed seed: one or two fuzzed fields, the others * or empty;
    one in twenty with a fuzzed kind or interval instead."""
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        data = {"enabled": "on", "kind": "crontab"}
        data.update({field: rng.choice(["*", "", "*"]) for field in FIELDS})
        for field in rng.sample(FIELDS, rng.randint(1, 2)):
            data[field] = fuzz_value(rng, field)
        if rng.random() < 0.05:
            data["kind"] = rng.choice(["", "cron", "interval"])
            data.update(every=fuzz_number(rng, "minute"), period=rng.choice(["minutes", "days", "x"]))
        cases.append(data)
    # The reported ones, in the field they were reported in, are always among the inputs.
    for value in ("*/", "-1", "60", "1-", "*/0", "a", "1" * 5000, "٣", ""):
        cases.append({"kind": "crontab", "minute": value})
    return cases


@pytest.fixture
def task(lucia):
    return PeriodicTask.objects.get(name="ttl review")


def stored_fields(task):
    task.refresh_from_db()
    return {field: getattr(task.crontab, field) for field in FIELDS} if task.crontab_id else None


def test_it_answers_every_fuzzed_schedule_with_an_error_or_a_stored_runnable_crontab(admin_client, task):
    url = reverse("continuity:schedule_edit", args=[task.pk])
    accepted = refused = 0
    for data in fuzz_cases():
        before = stored_fields(task)
        response = admin_client.post(url, data)
        assert response.status_code in (200, 302), data
        if response.status_code == 302:
            accepted += 1
            if data["kind"] != "crontab":
                continue
            posted = {field: (data.get(field) or "").strip() or "*" for field in FIELDS}
            assert stored_fields(task) == posted, data
            crontab(**posted)  # celery beat can run what was stored
            task.crontab.full_clean()  # and the admin site would accept it
        else:
            refused += 1
            page = response.content.decode()
            assert 'data-testid="error-' in page or 'data-testid="form-errors"' in page, data
            assert stored_fields(task) == before, data
    assert accepted >= 15 and refused >= 150, (accepted, refused)  # the fuzz reaches both sides
    for row in CrontabSchedule.objects.all():
        fields = {field: getattr(row, field) for field in FIELDS}
        crontab(**fields)
        row.full_clean()
    assert AuditEntry.objects.filter(action="schedule.update").count() == accepted


@pytest.mark.parametrize("value", ["*/", "-1", "*/-1", "1,,2", "60", "1-", "*/0", "a", "mon", "٣", "59-0", "5 5"])
def test_it_refuses_a_bad_minute_with_a_clear_error(admin_client, task, value):
    url = reverse("continuity:schedule_edit", args=[task.pk])
    response = admin_client.post(url, {"kind": "crontab", "enabled": "on", "minute": value})
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert 'data-testid="error-minute">Minute: Not a valid crontab minute: ' in page
    assert "use 0–59: a value, a list (1,5), a rising range (1-5), a step (*/15) or *." in page
    assert stored_fields(task) is None and not AuditEntry.objects.filter(action="schedule.update").exists()


@pytest.mark.parametrize("field,value,ok", [
    ("minute", "0", True), ("minute", "59", True), ("minute", "60", False),
    ("hour", "0", True), ("hour", "23", True), ("hour", "24", False),
    ("day_of_month", "1", True), ("day_of_month", "31", True), ("day_of_month", "0", False),
    ("day_of_month", "32", False),
    ("month_of_year", "1", True), ("month_of_year", "12", True), ("month_of_year", "0", False),
    ("month_of_year", "13", False), ("month_of_year", "jan-dec", True),
    ("day_of_week", "0", True), ("day_of_week", "6", True), ("day_of_week", "sun-sat", True),
    ("day_of_week", "7", False),  # cron's other Sunday: celery refuses it, so it is never stored
    ("day_of_week", "1-7", False),
])
def test_it_keeps_each_field_within_its_bounds(admin_client, task, field, value, ok):
    url = reverse("continuity:schedule_edit", args=[task.pk])
    response = admin_client.post(url, {"kind": "crontab", "enabled": "on", field: value})
    if ok:
        assert response.status_code == 302
        assert stored_fields(task) == {**dict.fromkeys(FIELDS, "*"), field: value}
    else:
        assert response.status_code == 200
        label = field.replace("_", " ")
        assert f'data-testid="error-{field}">{label.capitalize()}: Not a valid crontab {label}: ' \
               f"&#x27;{value}&#x27; is out of range or malformed" in response.content.decode()
        assert stored_fields(task) is None


def test_it_refuses_a_day_that_never_comes(admin_client, task):
    url = reverse("continuity:schedule_edit", args=[task.pk])
    response = admin_client.post(url, {"kind": "crontab", "day_of_month": "30", "month_of_year": "2"})
    assert response.status_code == 200
    assert ('data-testid="form-errors">Not a valid crontab: Invalid crontab: day_of_month &#x27;30&#x27; '
            "never occurs in month_of_year &#x27;2&#x27;.") in response.content.decode()
    assert stored_fields(task) is None


def test_it_refuses_a_bad_crontab_in_the_operation_too(admin, task):
    with pytest.raises(ValidationError) as refused:
        configuration.update_schedule(task=task, enabled=True, crontab={"minute": "*/", "hour": "24"}, actor=admin)
    assert set(refused.value.message_dict) == {"minute", "hour"}
    with pytest.raises(ValueError):
        configuration.update_schedule(task=task, enabled=True, crontab={"second": "1"}, actor=admin)
    assert stored_fields(task) is None and not AuditEntry.objects.filter(action="schedule.update").exists()
    configuration.update_schedule(task=task, enabled=True, crontab={"minute": "5"}, actor=admin)
    assert stored_fields(task) == {**dict.fromkeys(FIELDS, "*"), "minute": "5"}


@pytest.mark.parametrize("fields", [
    {"minute": "*/"}, {"minute": "-1"}, {"hour": "1,,2"}, {"day_of_month": "30", "month_of_year": "2"},
    {"day_of_week": "7"},
])
def test_it_shows_a_stored_row_that_does_not_parse_as_invalid(viewer_client, admin_client, task, fields):
    # Stored past every check (an old row, or a raw insert): the page must still render.
    row = CrontabSchedule.objects.create(**{**dict.fromkeys(FIELDS, "*"), **fields}, timezone="UTC")
    task.crontab, task.interval = row, None
    task.save()
    assert costs.runs_per_month(task) is None
    response = viewer_client.get(reverse("continuity:job_list"))
    assert response.status_code == 200
    expected = " ".join(getattr(row, field) for field in ("minute", "hour", "day_of_month", "month_of_year",
                                                          "day_of_week"))
    assert f'data-testid="crontab">invalid crontab {expected} (m h dM MY d)</span>' \
        in html.unescape(response.content.decode())
    edit = admin_client.get(reverse("continuity:schedule_edit", args=[task.pk]))
    assert edit.status_code == 200 and 'value="' in edit.content.decode()


def test_it_still_describes_a_valid_crontab_in_words(viewer_client, task, admin):
    configuration.update_schedule(task=task, enabled=True, crontab={"minute": "30", "hour": "3"}, actor=admin)
    page = viewer_client.get(reverse("continuity:job_list")).content.decode()
    assert 'data-testid="crontab">At 03:30 AM UTC</span> (UTC)' in page
