"""The walk of issue 18: the nine on-call tasks as a new operator does them, in Chromium at
1366 × 768 and 390 × 844, on a live dashboard with a real Celery worker (in a thread), beat
ticked for real (django-celery-beat's scheduler), and a monitored redis-server of the test's
own that it restarts. Every page is checked for sideways scroll, and no answer may be a 500.

The nine tasks:
 1. Is everything up? (the first screen: health, policy share, alert channels)
 2. Are sessions expiring as they should? (the last review, then a review run now)
 3. Find a session by its id and open it
 4. Fix that session's TTL
 5. Purge the keys without a TTL in lucia:focus: (scoped finding purge: ops-safety, marked below)
 6. Start a review while the broker is down (no dead end: ops-safety, marked below)
 7. Record a secret rotation
 8. Read what happens when Redis is down (the runbook's failure plan against /healthz)
 9. Notice that Redis restarted and lost its keys (the alarm, alerted once)
"""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler
from playwright.sync_api import expect

from continuity import demo
from continuity.models import KeyspaceCheck, ReviewRun
from continuity.tests.test_keyspace_watch import Private
from continuity.tests.waiting import wait_for
from dashboard.models import AlertChannel, Secret
from dashboard.tests.browsing import WIDTHS, ServerErrors, assert_no_sideways_scroll, log_in, settle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


class Walk:
    """The page, the live server and what the walk checks on every page it reaches."""

    def __init__(self, page, live_server, viewport, redis, receiver):
        self.page, self.base, self.viewport, self.redis, self.receiver = page, live_server.url, viewport, redis, receiver
        self.errors = ServerErrors(page)
        self.checked = []

    def visit(self, path):
        self.page.goto(self.base + path)
        self.settled()

    def settled(self):
        """After any navigation: htmx regions loaded, and the page no wider than the screen."""
        settle(self.page)
        assert_no_sideways_scroll(self.page, f"{self.page.url} at {self.viewport}")
        self.checked.append(self.page.url)

    def events(self):
        return [request["json"]["event"] for request in self.receiver.requests]


@pytest.fixture
def volatile(lucia, monkeypatch):
    """The monitored keyspace: a redis-server without persistence, as the issue's local one."""
    private = Private(persistent=False)
    monkeypatch.setenv("REDIS_URL", private.server.url(0))
    yield private
    private.stop()


def _tick_beat(celery_app, *names):
    """Beat, for real: the named schedules made due, then a tick of the database scheduler
    per schedule, which sends it to the broker and records its last run time."""
    PeriodicTask.objects.filter(name__in=names).update(last_run_at=timezone.now() - timedelta(hours=1))
    scheduler = DatabaseScheduler(app=celery_app)
    for _ in names:  # a tick sends one due schedule and answers 0 while more are due
        scheduler.tick()
    scheduler.sync()


def _no_run_left_queued():
    wait_for(lambda: not ReviewRun.objects.filter(status__in=ReviewRun.ACTIVE).exists(), 30, "reviews to end")


# --- the nine tasks ----------------------------------------------------------------------------
def is_everything_up(walk):
    walk.visit(reverse("dashboard:home"))
    health = walk.page.get_by_test_id("health")
    for row in ("health-redis", "health-worker", "health-beat"):
        expect(health.get_by_test_id(row)).to_have_attribute("data-state", "up")
    expect(health.get_by_test_id("health-alerts")).to_have_attribute("data-state", "configured")
    expect(health.get_by_test_id("health-alerts")).to_contain_text("pager")
    expect(walk.page.get_by_test_id("health-redis")).to_be_in_viewport()
    rows = walk.page.get_by_test_id("policy-row")
    expect(rows).to_have_count(5)
    expect(rows.first.get_by_test_id("share")).to_contain_text(re.compile(r"\d+\.\d%"))
    with walk.redis.client() as client:
        keyspace = client.info("keyspace")["db0"]
    expect(walk.page.get_by_test_id("keys-without-ttl")).to_have_text(f"{keyspace['keys'] - keyspace['expires']:,}")


def are_sessions_expiring(walk):
    walk.page.get_by_test_id("policy-source").get_by_role("link").click()
    walk.settled()
    expect(walk.page.get_by_test_id("finding-no_ttl")).to_have_text(re.compile(r"^[1-9]"))
    walk.visit(reverse("continuity:job_list"))
    walk.page.get_by_test_id("run-review").click()
    expect(walk.page).to_have_url(re.compile(r"/keyspace/jobs/reviews/\d+/$"))
    expect(walk.page.get_by_test_id("review-status")).to_have_text("succeeded", timeout=30_000)
    walk.settled()


def find_a_session(walk, session_id):
    walk.visit(reverse("continuity:browse", args=["lucia"]))
    walk.page.get_by_label("Look up an id in every namespace").fill(session_id)
    walk.page.get_by_role("button", name="Look up").click()
    row = walk.page.get_by_test_id("lookup").get_by_test_id("key-row").filter(has_text="lucia:session:")
    expect(row).to_have_count(1)
    row.get_by_role("link").first.click()
    expect(walk.page.get_by_test_id("key-name")).to_have_text(f"lucia:session:{session_id}")
    walk.settled()


def fix_its_ttl(walk, session_id):
    walk.page.get_by_test_id("ttl-input").fill("30m")  # a duration, as an operator types it
    walk.page.get_by_role("button", name="Set TTL").click()
    expect(walk.page.get_by_test_id("outcome")).to_have_text("Set TTL: done.")
    with walk.redis.client() as client:
        assert 1_790_000 < client.pttl(f"lucia:session:{session_id}") <= 1_800_000
    walk.settled()


def purge_the_focus_keys_without_ttl(walk):
    # ops-safety (issue 18, item 1) completes this task: from the review's no_ttl finding, a
    # purge limited to lucia:focus: whose preview shows that scope, applying the policy TTL by
    # default; then Redis is checked: only the focus keys without a TTL changed. Until then the
    # walk reaches the purge form from the finding and checks its layout.
    walk.visit(reverse("continuity:job_list"))
    walk.page.get_by_test_id("review-row").first.get_by_role("link").first.click()
    walk.page.get_by_test_id("purge-finding-no_ttl").click()
    walk.settled()
    expect(walk.page.get_by_test_id("preview-button")).to_be_visible()


def review_with_the_broker_down(walk):
    # ops-safety (issue 18, item 2) completes this task: the broker stopped, "Run review now"
    # answers a clear message and leaves no run queued that no worker will pick up. Until then
    # the walk checks what holds already: nothing it started is left queued or running.
    _no_run_left_queued()


def record_a_rotation(walk):
    secret = Secret.objects.get(name="lucia-rest-token")
    walk.visit(secret.get_absolute_url())
    walk.page.get_by_test_id("record-rotation").click()
    form = walk.page.get_by_test_id("rotation-form")
    form.locator("[name=reference]").fill("op://Lucia/Upstash Redis lucia 2026/REST token")
    form.locator("[name=verified_how]").fill("Engine redeployed, PING ok")
    walk.page.get_by_test_id("rotation-next").click()
    walk.page.get_by_test_id("rotation-confirm-button").click()
    expect(walk.page.get_by_test_id("rotation-recorded")).to_be_visible()
    expect(walk.page.get_by_test_id("reference")).to_have_text("op://Lucia/Upstash Redis lucia 2026/REST token")
    walk.settled()


def read_the_failure_plan(walk):
    walk.visit(reverse("dashboard:runbook"))
    said = walk.page.get_by_test_id("dashboard-behaviour")
    healthz = walk.page.request.get(walk.base + reverse("healthz"))
    status = healthz.json()["status"]
    assert (healthz.status, status) == (200, "ok")
    expect(said).to_contain_text(f"{healthz.status} (“{status}”) otherwise")
    expect(said).to_contain_text("answers 200 with status “degraded” while a monitored Redis is unreachable")
    expect(said).to_contain_text("To the enabled alert channels: pager.")


def notice_the_restart(walk, celery_app):
    before = KeyspaceCheck.objects.count()
    walk.redis.server.restart()  # a real restart: a new process, nothing on disk to load
    walk.redis.fill(5, ttl=600)
    _tick_beat(celery_app, "keyspace watch")
    wait_for(lambda: KeyspaceCheck.objects.count() > before, 30, "the keyspace watch after the restart")
    walk.visit(reverse("dashboard:home"))
    alarm = walk.page.get_by_test_id("loss-alarm")
    expect(alarm).to_have_attribute("data-event", "keyspace.lost")
    expect(alarm).to_contain_text("restarted (run id changed")
    _tick_beat(celery_app, "keyspace watch")  # the next minute's look finds nothing new
    wait_for(lambda: KeyspaceCheck.objects.count() > before + 1, 30, "the next keyspace watch")
    wait_for(lambda: "keyspace.lost" in walk.events(), 30, "the alarm's delivery")
    assert walk.events().count("keyspace.lost") == 1
    assert KeyspaceCheck.objects.exclude(event="").count() == 1


@pytest.mark.parametrize("viewport", WIDTHS)
def test_the_nine_on_call_tasks(page, live_server, lucia, volatile, operator, receiver, empty_broker, celery_app,
                                celery_worker, viewport):
    specs = list(demo.lucia_keyspace(400, seed=18, violation_rate=0.05))
    with volatile.client() as client:
        demo.write_keyspace(client, specs)
    session_id = next(spec.key for spec in specs if spec.key.startswith(b"lucia:session:")
                      and spec.violation is None).decode().removeprefix("lucia:session:")
    AlertChannel.objects.create(name="pager", kind="webhook", url=receiver.url("/hook"))
    _tick_beat(celery_app, "keyspace watch", "ttl review")  # beat sends; the worker runs both
    wait_for(lambda: KeyspaceCheck.objects.filter(via=KeyspaceCheck.WORKER).exists(), 30, "the keyspace watch")
    wait_for(lambda: ReviewRun.objects.filter(status=ReviewRun.SUCCEEDED).exists(), 60, "the scheduled review")

    log_in(page, live_server, "otto", viewport)
    walk = Walk(page, live_server, viewport, volatile, receiver)
    is_everything_up(walk)
    are_sessions_expiring(walk)
    find_a_session(walk, session_id)
    fix_its_ttl(walk, session_id)
    purge_the_focus_keys_without_ttl(walk)
    review_with_the_broker_down(walk)
    record_a_rotation(walk)
    read_the_failure_plan(walk)
    notice_the_restart(walk, celery_app)

    assert walk.errors.seen == []
    assert len(walk.checked) >= 12
