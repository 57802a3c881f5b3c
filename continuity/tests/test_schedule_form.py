"""The schedule form: no microseconds, sampled or exact named on every review schedule, and
what a month of the schedule costs, priced as it is typed."""

import re

from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from continuity.operations import review
from continuity.tests.test_costs import fill
from dashboard.models import AuditEntry


def _cost(admin_client, task, **data):
    response = admin_client.get(reverse("continuity:schedule_cost", args=[task.pk]), data, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def test_it_offers_no_microseconds_and_refuses_them(admin_client, lucia):
    task = PeriodicTask.objects.get(name="ttl review")
    url = reverse("continuity:schedule_edit", args=[task.pk])
    page = admin_client.get(url).content.decode()
    assert re.findall(r'<option value="(\w+)"', page) == ["days", "hours", "minutes", "seconds"]
    response = admin_client.post(url, {"kind": "interval", "every": "60000000", "period": "microseconds"})
    assert response.status_code == 200 and 'data-testid="error-period"' in response.content.decode()
    assert not AuditEntry.objects.filter(action="schedule.update").exists()


def test_every_review_schedule_says_sampled_or_exact(viewer_client, admin_client, lucia):
    jobs = viewer_client.get(reverse("continuity:job_list")).content.decode()
    rows = dict(re.findall(r'<tr data-testid="schedule-row"><td>([^<]+?)(?: <span [^>]+>([^<]+)</span>)?</td>', jobs))
    assert rows["ttl review"] == "sampled review: 2,000 keys"
    assert rows["ttl review (exact)"] == "exact review: every key"
    assert rows["keyspace watch"] == "" and rows["policy purge"] == ""
    exact = PeriodicTask.objects.get(name="ttl review (exact)")
    page = admin_client.get(reverse("continuity:schedule_edit", args=[exact.pk])).content.decode()
    assert 'data-testid="schedule-kind">exact review: every key</span>' in page


def test_it_prices_the_schedule_as_it_is_typed(admin_client, lucia, monitored):
    fill(monitored, 3000)
    sampled = review.review_database(database=lucia, sample=200).run
    task = PeriodicTask.objects.get(name="ttl review")
    page = admin_client.get(reverse("continuity:schedule_edit", args=[task.pk])).content.decode()
    assert "<strong>2,880</strong> runs in 30 days of the sampled review." in page  # every 15 minutes, as stored
    hourly = _cost(admin_client, task, kind="interval", every="1", period="hours", enabled="on")
    assert "<strong>720</strong> runs in 30 days of the sampled review." in hourly
    assert f"lucia: 720 × last sampled review = <strong>{720 * sampled.billed_commands:,}</strong> billed" in hourly
    nightly = _cost(admin_client, task, kind="crontab", minute="15", hour="2", day_of_week="*", day_of_month="*",
                    month_of_year="*")
    assert "<strong>30</strong> runs in 30 days" in nightly
    assert "Give a valid schedule" in _cost(admin_client, task, kind="interval", every="", period="hours")
    assert "Give a valid schedule" in _cost(admin_client, task, kind="crontab", minute="61")
    task.refresh_from_db()
    assert (task.interval.every, task.interval.period) == (15, "minutes")  # pricing saves nothing
    assert not AuditEntry.objects.filter(action="schedule.update").exists()


def test_an_exact_schedule_is_priced_from_the_last_exact_review(admin_client, lucia, monitored):
    fill(monitored, 500)
    exact = review.review_database(database=lucia).run
    task = PeriodicTask.objects.get(name="ttl review (exact)")
    twice = _cost(admin_client, task, kind="crontab", minute="15", hour="2,14", day_of_week="*", day_of_month="*",
                  month_of_year="*")
    assert f"lucia: 60 × last exact review = <strong>{60 * exact.billed_commands:,}</strong> billed" in twice
    watch = PeriodicTask.objects.get(name="keyspace watch")
    assert "no billed command worth counting" in _cost(admin_client, watch, kind="interval", every="1",
                                                        period="minutes")


def test_only_admins_price_schedules(operator_client, lucia):
    task = PeriodicTask.objects.get(name="ttl review")
    assert operator_client.get(reverse("continuity:schedule_cost", args=[task.pk])).status_code == 403
