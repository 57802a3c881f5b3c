import re

import pytest
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from continuity.models import ReviewRun
from continuity.operations import review
from dashboard.models import AuditEntry

pytestmark = pytest.mark.usefixtures("transport")

XSS_KEY = b"lucia:session:<script>alert(1)</script>\xff"


@pytest.fixture
def finished(lucia, monitored):
    monitored.set(XSS_KEY, b"v")  # no TTL: a no_ttl finding
    monitored.set(b"lucia:session:ok", b"v", ex=600)
    monitored.set(b"lucia:legacy:1", b"v")
    monitored.set(b"elsewhere:1", b"v")
    return review.review_database(database=lucia).run


def test_it_lists_review_runs_with_status_and_duration(viewer_client, finished, django_assert_max_num_queries):
    with django_assert_max_num_queries(14):  # +2: the last review and policy-purge cost per database
        page = viewer_client.get(reverse("continuity:job_list")).content.decode()
    assert f'href="{reverse("continuity:review_detail", args=[finished.pk])}"' in page
    assert 'data-testid="review-status">succeeded' in page
    assert "ttl review" in page  # the seeded schedule
    assert 'data-testid="run-review"' not in page  # viewers cannot start reviews
    assert reverse("continuity:schedule_edit", args=[PeriodicTask.objects.get(name="ttl review").pk]) not in page


def test_it_shows_operators_the_run_button_and_polls_only_while_active(operator_client, lucia):
    page = operator_client.get(reverse("continuity:job_list")).content.decode()
    assert 'data-testid="run-review"' in page and 'hx-trigger="every 2s"' not in page
    review.start_review(database=lucia)
    fragment = operator_client.get(reverse("continuity:job_list"), HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and 'id="review-runs"' in fragment
    assert 'hx-trigger="every 2s"' in fragment and "queued" in fragment


def test_it_forbids_viewers_to_start_a_review(viewer_client, lucia):
    response = viewer_client.post(reverse("continuity:review_start", args=["lucia"]))
    assert response.status_code == 403
    assert not ReviewRun.objects.exists()


def test_it_starts_a_review_for_operators_after_commit(operator_client, operator, lucia,
                                                       django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = operator_client.post(reverse("continuity:review_start", args=["lucia"]), HTTP_HX_REQUEST="true")
    run = ReviewRun.objects.get()
    assert response["HX-Redirect"] == reverse("continuity:review_detail", args=[run.pk])
    assert run.actor == operator and run.triggered_by == ReviewRun.WEB and run.status == ReviewRun.QUEUED
    assert len(callbacks) == 1
    again = operator_client.post(reverse("continuity:review_start", args=["lucia"]))
    assert again["Location"] == reverse("continuity:review_detail", args=[run.pk])
    assert ReviewRun.objects.count() == 1


def test_it_shows_the_review_with_escaped_sample_keys_and_tokens(viewer_client, finished):
    page = viewer_client.get(reverse("continuity:review_detail", args=[finished.pk])).content.decode()
    assert 'data-testid="finding-no_ttl">1<' in page and 'data-testid="finding-unknown_namespace">1<' in page
    assert "<script>alert(1)" not in page
    assert "lucia:session:&lt;script&gt;alert(1)&lt;/script&gt;\\xff" in page
    from continuity.keyspace import encode_key

    assert f'data-key-token="{encode_key(XSS_KEY)}"' in page
    assert page.count('data-testid="namespace-stat"') == 2  # session + (no namespace)
    assert "outside lucia:" in page and 'hx-trigger="every 1s"' not in page


def test_it_polls_progress_and_refreshes_when_done(viewer_client, lucia, monitored):
    run = review.start_review(database=lucia)
    url = reverse("continuity:review_detail", args=[run.pk])
    fragment = viewer_client.get(url + "?poll=1", HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert "<html" not in body and 'hx-trigger="every 1s"' in body and "queued" in body
    review.review_database(database=lucia, run=run)
    done = viewer_client.get(url + "?poll=1", HTTP_HX_REQUEST="true")
    assert done["HX-Refresh"] == "true"


def test_it_lets_operators_cancel_a_review(operator_client, viewer_client, lucia):
    run = review.start_review(database=lucia)
    assert viewer_client.post(reverse("continuity:review_cancel", args=[run.pk])).status_code == 403
    run.refresh_from_db()
    assert run.status == ReviewRun.QUEUED
    operator_client.post(reverse("continuity:review_cancel", args=[run.pk]), HTTP_HX_REQUEST="true")
    run.refresh_from_db()
    assert run.status == ReviewRun.CANCELLED


def test_it_charts_keys_and_findings_per_namespace(viewer_client, lucia, monitored):
    monitored.set(b"lucia:session:1", b"v")
    review.review_database(database=lucia)
    monitored.set(b"lucia:rate:1", b"v", ex=30)
    review.review_database(database=lucia)
    page = viewer_client.get(reverse("continuity:review_trend", args=["lucia"])).content.decode()
    assert page.count('data-testid="trend-chart"') == 2  # lucia:rate: and lucia:session:
    assert page.count("<svg") == 2 and "kozea.github.io" not in page
    assert "lucia:session:" in page and "findings" in page


@pytest.mark.parametrize("persona,status", [("viewer", 403), ("operator", 403)])
def test_it_lets_only_admins_edit_schedules(request, persona, status, lucia):
    client = request.getfixturevalue(f"{persona}_client")
    task = PeriodicTask.objects.get(name="ttl review")
    url = reverse("continuity:schedule_edit", args=[task.pk])
    assert client.get(url).status_code == status
    assert client.post(url, {"kind": "interval", "every": 5, "period": "minutes"}).status_code == status
    task.refresh_from_db()
    assert task.enabled and task.interval.every == 15


def test_it_saves_a_schedule_change_with_audit(admin_client, admin, lucia):
    task = PeriodicTask.objects.get(name="ttl review")
    url = reverse("continuity:schedule_edit", args=[task.pk])
    assert 'value="15"' in admin_client.get(url).content.decode()
    response = admin_client.post(url, {"kind": "interval", "every": 30, "period": "minutes"})
    assert response.status_code == 302
    task.refresh_from_db()
    assert not task.enabled and task.interval.every == 30 and task.crontab is None
    entry = AuditEntry.objects.get(action="schedule.update")
    assert entry.actor == admin and entry.target_label == "ttl review"
    assert entry.before == {"enabled": True, "interval": "every 15 minutes", "crontab": None}
    assert entry.after == {"enabled": False, "interval": "every 30 minutes", "crontab": None}

    admin_client.post(url, {"kind": "crontab", "enabled": "on", "minute": "*/10", "hour": "*"})
    task.refresh_from_db()
    assert task.enabled and task.interval is None and task.crontab.minute == "*/10"


def test_it_refuses_an_invalid_crontab_and_changes_nothing(admin_client, lucia):
    task = PeriodicTask.objects.get(name="ttl review")
    url = reverse("continuity:schedule_edit", args=[task.pk])
    response = admin_client.post(url, {"kind": "crontab", "enabled": "on", "minute": "99"})
    assert response.status_code == 200 and "Not a valid crontab" in response.content.decode()
    task.refresh_from_db()
    assert task.interval.every == 15 and not AuditEntry.objects.filter(action="schedule.update").exists()


def test_it_shows_each_field_error_on_the_schedule_form(admin_client, lucia):
    task = PeriodicTask.objects.get(name="ttl review")
    url = reverse("continuity:schedule_edit", args=[task.pk])
    response = admin_client.post(url, {"kind": "interval", "every": "0", "period": "fortnights", "minute": "1" * 241})
    page = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'data-testid="error-every">Every: Ensure this value is greater than or equal to 1\.<', page)
    assert re.search(r'data-testid="error-period">Period: Select a valid choice\. fortnights is not one', page)
    assert re.search(r'data-testid="error-minute">Minute: Ensure this value has at most 240 characters', page)
    assert 'data-testid="form-errors">Give a number and a unit for the interval.<' in page
    response = admin_client.post(url, {"kind": "hourly"})
    assert re.search(r'data-testid="error-kind">Kind: Select a valid choice\. hourly is not one', response.content.decode())
    task.refresh_from_db()
    assert task.interval.every == 15 and not AuditEntry.objects.filter(action="schedule.update").exists()


def test_it_labels_a_sampled_review_and_its_estimates_everywhere(viewer_client, lucia, monitored, settings):
    from continuity import demo

    demo.write_keyspace(monitored, demo.lucia_keyspace(6000, seed=3, violation_rate=0.05))
    exact = review.review_database(database=lucia).run
    sampled = review.review_database(database=lucia, sample=800).run
    assert sampled.sampled and not exact.sampled
    page = viewer_client.get(reverse("continuity:review_detail", args=[sampled.pk])).content.decode()
    e = sampled.estimates()["no_ttl"]
    assert 'data-testid="review-kind"' in page and ">sampled</span>" in page and 'data-testid="sampled-note"' in page
    assert f'data-testid="finding-no_ttl">≈ {e.value:,}<' in page
    assert f'data-testid="interval-no_ttl">95%: {e.low:,}–{e.high:,}<' in page
    listing = viewer_client.get(reverse("continuity:job_list")).content.decode()
    assert listing.count(">sampled</span>") == 1 and listing.count(">exact</span>") == 1
    trend = viewer_client.get(reverse("continuity:review_trend", args=["lucia"])).content.decode()
    assert "keys (exact)" in trend and "keys (sampled, estimated)" in trend


@pytest.mark.parametrize("every,period", [
    ("99999999999999999999", "days"),  # overflowed the column: a 500
    ("2147483647", "seconds"),
    ("367", "days"),
    ("59", "seconds"),
])
def test_it_refuses_an_interval_outside_a_minute_to_a_year(admin_client, lucia, every, period):
    task = PeriodicTask.objects.get(name="ttl review")
    url = reverse("continuity:schedule_edit", args=[task.pk])
    response = admin_client.post(url, {"kind": "interval", "enabled": "on", "every": every, "period": period})
    assert response.status_code == 200 and "An interval must be between 1 minute and 366 days." in response.content.decode()
    task.refresh_from_db()
    assert task.interval.every == 15 and task.interval.period == "minutes"
    assert not AuditEntry.objects.filter(action="schedule.update").exists()


def test_it_accepts_the_interval_bounds(admin_client, lucia):
    task = PeriodicTask.objects.get(name="ttl review")
    url = reverse("continuity:schedule_edit", args=[task.pk])
    assert admin_client.post(url, {"kind": "interval", "every": "60", "period": "seconds"}).status_code == 302
    assert admin_client.post(url, {"kind": "interval", "every": "366", "period": "days"}).status_code == 302
    task.refresh_from_db()
    assert (task.interval.every, task.interval.period) == (366, "days")
