"""The first screen in Chromium at 1366 and 390 px: health, the share of keys inside policy and
the alert channels answer at the top of the home page, and a real Redis restart that lost
the keys shows as an alarm there (alerted once)."""

import pytest
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from playwright.sync_api import expect

from continuity.operations import keyspace_watch, review
from continuity.tests.test_keyspace_watch import Private
from dashboard.models import AlertChannel
from dashboard.tests.browsing import WIDTHS, ServerErrors, assert_no_sideways_scroll, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def volatile(lucia, monkeypatch):
    private = Private(persistent=False)
    monkeypatch.setenv("REDIS_URL", private.server.url(0))
    yield private
    private.stop()


@pytest.mark.parametrize("viewport", WIDTHS)
def test_the_first_screen_answers_before_anything_else(page, live_server, lucia, volatile, viewer, viewport):
    volatile.fill(40, ttl=1800)
    volatile.fill(3, prefix="lucia:session:stuck:")  # no TTL
    review.review_database(database=lucia)
    keyspace_watch.check_database(lucia)
    PeriodicTask.objects.filter(name="keyspace watch").update(last_run_at=timezone.now())
    errors = ServerErrors(page)
    log_in(page, live_server, "vera", viewport)
    health = page.get_by_test_id("health")
    expect(health.get_by_test_id("health-redis")).to_have_attribute("data-state", "up")
    expect(health.get_by_test_id("health-worker")).to_have_attribute("data-state", "up")
    expect(health.get_by_test_id("health-beat")).to_have_attribute("data-state", "up")
    expect(health.get_by_test_id("health-alerts")).to_have_attribute("data-state", "none")
    expect(page.get_by_test_id("no-channel")).to_contain_text("No alert channel is enabled: alerts go nowhere.")
    expect(page.get_by_test_id("health-redis")).to_be_in_viewport()  # the first thing on the screen
    session = page.locator('[data-testid="policy-row"][data-namespace="session"]')
    expect(session.get_by_test_id("share")).to_contain_text("93.0%")  # 40 of 43 inside policy
    expect(page.get_by_test_id("review-kind")).to_have_text("exact")
    expect(page.get_by_test_id("keys-without-ttl")).to_have_text("3")
    assert_no_sideways_scroll(page)
    assert errors.seen == []


@pytest.mark.parametrize("viewport", WIDTHS)
def test_a_redis_restart_that_lost_the_keys_raises_the_alarm_once(page, live_server, lucia, volatile, viewer,
                                                                 receiver, eager, viewport):
    AlertChannel.objects.create(name="pager", kind="webhook", url=receiver.url("/hook"))
    volatile.fill(120, ttl=1800)
    keyspace_watch.watch_keyspaces()
    log_in(page, live_server, "vera", viewport)
    expect(page.get_by_test_id("health-alerts")).to_have_attribute("data-state", "configured")
    expect(page.get_by_test_id("persistence-off")).to_be_visible()
    expect(page.get_by_test_id("loss-alarm")).to_have_count(0)

    volatile.server.restart()  # a real restart: new process, nothing on disk to load
    volatile.fill(4, ttl=1800)
    keyspace_watch.watch_keyspaces()
    keyspace_watch.watch_keyspaces()  # the next minute: compared with the check after the loss
    page.reload()
    alarm = page.get_by_test_id("loss-alarm")
    expect(alarm).to_have_attribute("data-event", "keyspace.lost")
    expect(alarm).to_contain_text("lucia lost 116 of 120 keys (97%)")
    expect(alarm).to_contain_text("restarted (run id changed")
    expect(alarm).to_contain_text("Alerted once.")
    assert_no_sideways_scroll(page)
    events = [request["json"]["event"] for request in receiver.requests]
    assert events == ["redis.persistence_off", "keyspace.lost"]
    page.goto(live_server.url + reverse("dashboard:first_screen"))  # the same, as a page of its own
    expect(page.get_by_test_id("loss-alarm")).to_be_visible()
