"""Polish operators feel, in Chromium at 1366 and 390 px: one date format, schedules priced as
they are typed and named sampled or exact, and panels that show what a save changed."""

import re

import pytest
from django.urls import reverse
from django_celery_beat.models import PeriodicTask
from playwright.sync_api import expect

from dashboard.models import Secret
from dashboard.tests.browsing import MOMENT, WIDTHS, ServerErrors, assert_no_sideways_scroll, log_in, settle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("viewport", WIDTHS)
def test_every_moment_reads_the_same_way(page, live_server, lucia, admin, viewport):
    Secret.objects.filter(name="lucia-rest-url").update(last_rotated="2026-01-02T03:04:05Z")
    log_in(page, live_server, "ada", viewport)
    seen = []
    for path in (reverse("dashboard:audit_list"), Secret.objects.get(name="lucia-rest-url").get_absolute_url(),
                 reverse("dashboard:secret_list"), reverse("dashboard:home"), reverse("dashboard:runbook")):
        page.goto(live_server.url + path)
        settle(page)
        moments = page.evaluate("() => [...document.querySelectorAll('main time')].map("
                                "t => t.textContent + ' ' + t.nextElementSibling.textContent)")
        assert moments, path
        assert [moment for moment in moments if not MOMENT.match(moment)] == [], path
        seen += moments
    assert "2026-01-02 03:04 UTC" in " ".join(seen)


@pytest.mark.parametrize("viewport", WIDTHS)
def test_a_schedule_is_named_and_priced_as_it_is_typed(page, live_server, lucia, admin, viewport):
    errors = ServerErrors(page)
    log_in(page, live_server, "ada", viewport)
    page.goto(live_server.url + reverse("continuity:job_list"))
    rows = page.get_by_test_id("schedule-row")
    expect(rows.filter(has_text="ttl review (exact)").get_by_test_id("schedule-kind")).to_have_text(
        "exact review: every key")
    expect(rows.filter(has_text=re.compile(r"^ttl review sampled")).get_by_test_id("schedule-kind")).to_have_text(
        "sampled review: 2,000 keys")
    task = PeriodicTask.objects.get(name="ttl review")
    page.goto(live_server.url + reverse("continuity:schedule_edit", args=[task.pk]))
    expect(page.get_by_test_id("schedule-kind")).to_have_text("sampled review: 2,000 keys")
    assert page.get_by_label("Interval: unit").locator("option").all_inner_texts() == [
        "Days", "Hours", "Minutes", "Seconds"]
    cost = page.get_by_test_id("schedule-cost")
    expect(cost).to_contain_text("2,880 runs in 30 days of the sampled review")
    page.get_by_label("Interval: how many").fill("30")
    expect(cost).to_contain_text("1,440 runs in 30 days")
    page.get_by_label("Interval: unit").select_option("hours")
    expect(cost).to_contain_text("24 runs in 30 days")  # every 30 hours
    page.get_by_label("Interval: how many").fill("1")
    expect(cost).to_contain_text("720 runs in 30 days")
    page.get_by_label("Interval: how many").fill("")
    expect(cost).to_contain_text("Give a valid schedule")
    page.get_by_role("radio", name="Crontab (UTC)").check()
    page.get_by_label("Minute").fill("15")
    page.get_by_label("Hour").fill("2")
    expect(cost).to_contain_text("30 runs in 30 days")
    expect(cost).to_contain_text("lucia: cost known after the first sampled review")
    assert_no_sideways_scroll(page)
    task.refresh_from_db()
    assert (task.interval.every, task.interval.period) == (15, "minutes")  # nothing saved while pricing
    assert errors.seen == []


@pytest.mark.parametrize("viewport", WIDTHS)
def test_the_secrets_details_follow_a_recorded_rotation(page, live_server, lucia, operator, viewport):
    secret = Secret.objects.get(name="lucia-rest-token")
    secret.set_reference("op://Lucia/Upstash Redis lucia/REST token")
    secret.save()
    log_in(page, live_server, "otto", viewport)
    page.goto(live_server.url + secret.get_absolute_url())
    expect(page.get_by_test_id("reference")).to_have_text("op://Lucia/Upstash Redis lucia/REST token")
    page.get_by_test_id("record-rotation").click()
    form = page.get_by_test_id("rotation-form")
    form.locator("[name=reference]").fill("op://Lucia/Upstash Redis lucia 2026/REST token")
    form.locator("[name=verified_how]").fill("Engine redeployed, PING ok")
    page.get_by_test_id("rotation-next").click()
    page.get_by_test_id("rotation-confirm-button").click()
    expect(page.get_by_test_id("rotation-recorded")).to_be_visible()
    expect(page.get_by_test_id("reference")).to_have_text("op://Lucia/Upstash Redis lucia 2026/REST token")
    expect(page.get_by_test_id("detail-table")).to_contain_text("item Upstash Redis lucia 2026")
    assert page.url.endswith(secret.get_absolute_url())  # no reload: the panels were swapped
    assert_no_sideways_scroll(page)


@pytest.mark.parametrize("viewport", WIDTHS)
def test_a_new_user_appears_in_the_list_at_once(page, live_server, lucia, admin, viewport):
    log_in(page, live_server, "ada", viewport)
    page.goto(live_server.url + reverse("dashboard:user_list"))
    expect(page.get_by_test_id("user-row")).to_have_count(1)
    create = page.locator("#user-create")
    create.get_by_label("Username").fill("carol")
    create.get_by_label("Role").select_option("operator")
    create.get_by_role("button", name="Create").click()
    expect(page.get_by_test_id("new-password")).to_contain_text("carol")
    expect(page.get_by_test_id("user-row")).to_have_count(2)
    expect(page.get_by_test_id("users")).to_contain_text("carol")
    expect(page.get_by_label("Role of carol")).to_have_value("operator")
    assert_no_sideways_scroll(page)
