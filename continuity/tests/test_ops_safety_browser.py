"""The 3 a.m. operator's safety items in Chromium, at a laptop's 1366×768 and a phone's
390×844: a review finding purged only under a typed prefix (Redis checked), the cost shown
before the preview, a broker stop answered with a message and no stuck run, a TTL held to
its namespace's maximum, a policy cut shown with its impact first, the key browser
filtered by finding, and a sensitive value hidden from a viewer and revealed, audited, by
an operator. The preview and the purge run on a real Celery worker (in a thread)."""

import re

import pytest
from playwright.sync_api import expect

from continuity import keyspace
from continuity.models import Namespace, PurgeRun, ReviewRun
from continuity.operations import review
from continuity.tests.test_broker_down import broker  # noqa: F401 — the fixture: a broker of its own
from dashboard.models import AuditEntry

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
SIZES = {"laptop": {"width": 1366, "height": 768}, "phone": {"width": 390, "height": 844}}
FOCUS_A_NO_TTL = {b"lucia:focus:a:%d" % i for i in range(6)}
FOCUS_B_NO_TTL = {b"lucia:focus:b:%d" % i for i in range(4)}
SESSION_NO_TTL = {b"lucia:session:x:%d" % i for i in range(5)}


def sign_in(page, live_server, path, username):
    page.goto(live_server.url + path)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))


@pytest.fixture(params=list(SIZES))
def sized(request, page):
    page.set_viewport_size(SIZES[request.param])
    return page


@pytest.fixture
def offenders(monitored, lucia):
    pipe = monitored.pipeline(transaction=False)
    for key in FOCUS_A_NO_TTL | FOCUS_B_NO_TTL | SESSION_NO_TTL:
        pipe.set(key, b"v")
    for i in range(20):
        pipe.set(b"lucia:focus:ok:%d" % i, b"v", ex=600)
    pipe.execute()
    return review.review_database(database=lucia).run


def test_a_review_finding_purged_only_under_the_typed_prefix(sized, live_server, operator, monitored, offenders,
                                                             empty_broker, celery_worker):
    page = sized
    before = set(monitored.scan_iter())
    sign_in(page, live_server, f"/keyspace/jobs/reviews/{offenders.pk}/", "otto")
    page.get_by_test_id("purge-finding-no_ttl").click()
    # Before anything runs: the least destructive action, the scope and the cost.
    expect(page.get_by_label("Action")).to_have_value("")
    expect(page.get_by_test_id("estimate-cost")).to_contain_text("the preview will cost about")
    page.get_by_label("Prefix or pattern").fill("lucia:focus:a:")
    expect(page.get_by_test_id("scope-prefix")).to_have_text("prefix lucia:focus:a:")
    expect(page.get_by_test_id("scope-namespaces")).to_have_text("namespace lucia:focus:")
    page.get_by_label("Action").select_option("delete")
    expect(page.get_by_test_id("scope-action")).to_have_text("Delete (UNLINK)")
    page.get_by_test_id("preview-button").click()
    expect(page.get_by_test_id("preview-matched")).to_have_text("6")
    expect(page.get_by_test_id("purge-scope")).to_contain_text("prefix lucia:focus:a:")
    phrase = f"review {offenders.pk} no_ttl under lucia:focus:a:"
    page.get_by_label(re.compile("Retype the target")).fill(phrase)
    page.get_by_label(re.compile("Reason")).fill("stale focus keys")
    page.get_by_test_id("confirm-button").click()
    expect(page.get_by_test_id("purge-progress").get_by_test_id("purge-status")).to_have_text("succeeded")
    assert set(monitored.scan_iter()) == before - FOCUS_A_NO_TTL  # exactly the scope, nothing else


def test_a_stopped_broker_answers_a_message_and_leaves_nothing_queued(sized, live_server, operator, lucia, monitored,
                                                                      broker):  # noqa: F811
    page = sized
    broker.stop()
    sign_in(page, live_server, "/keyspace/jobs/", "otto")
    page.get_by_test_id("run-review").first.click()
    expect(page.get_by_text(re.compile(r"Review #\d+ of lucia did not start"))).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Server Error")
    run = ReviewRun.objects.get()
    assert run.status == "failed" and not ReviewRun.objects.filter(status__in=ReviewRun.ACTIVE).exists()
    expect(page.get_by_test_id("review-status").first).to_have_text("failed")


def test_ttls_maximums_and_impact_before_harm(sized, live_server, admin, operator, monitored, lucia):
    page = sized
    monitored.set(b"lucia:session:k", b"v", ex=600)
    for i in range(8):
        monitored.set(b"lucia:focus:mid:%d" % i, b"v", ex=12 * 3600)
    Namespace.objects.filter(database=lucia, name="session").update(sensitive=False)
    sign_in(page, live_server, f"/keyspace/lucia/key/{keyspace.encode_key(b'lucia:session:k')}/", "otto")
    expect(page.get_by_test_id("ttl-maximum")).to_contain_text("At most 1h")
    page.get_by_placeholder("15m, 1h, 7d").fill("1h 1s")
    page.get_by_role("button", name="Set TTL").click()
    expect(page.get_by_test_id("outcome")).to_contain_text("above the maximum of 1h")
    assert monitored.ttl(b"lucia:session:k") <= 600
    page.get_by_placeholder("15m, 1h, 7d").fill("45m")
    page.get_by_role("button", name="Set TTL").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Set TTL: done.")
    assert 2690 < monitored.ttl(b"lucia:session:k") <= 2700

    focus = Namespace.objects.get(database=lucia, name="focus")
    page.goto(live_server.url + f"/keyspace/lucia/namespaces/{focus.pk}/edit/")
    expect(page.get_by_label("Maximum TTL")).to_have_value("1d")
    page.get_by_label("Maximum TTL").fill("6h")
    page.get_by_test_id("save-namespace").click()
    expect(page.get_by_test_id("impact-sample-newly")).to_have_text("8")
    focus.refresh_from_db()
    assert focus.max_ttl_seconds == 86400  # not saved before the impact is seen
    page.get_by_test_id("save-namespace").click()
    expect(page).to_have_url(re.compile(r"/keyspace/lucia/namespaces/$"))
    focus.refresh_from_db()
    assert focus.max_ttl_seconds == 6 * 3600


def test_the_browser_filters_by_finding_and_a_sensitive_value_is_revealed_audited(sized, live_server, operator,
                                                                                  viewer, monitored, lucia):
    page = sized
    for i in range(30):
        monitored.set(b"lucia:focus:fine:%d" % i, b"v", ex=600)
    monitored.set(b"lucia:focus:nottl", b"v")
    monitored.set(b"lucia:session:ann", b"stage-3 for ann", ex=600)
    sign_in(page, live_server, "/keyspace/lucia/browse/", "vera")
    page.get_by_label("Finding").select_option("no_ttl")
    page.get_by_role("button", name="Scan").click()
    expect(page.get_by_test_id("key-row")).to_have_count(1)
    expect(page.get_by_test_id("scan-summary")).to_contain_text("32 read, 1 with the finding no TTL")

    page.goto(live_server.url + f"/keyspace/lucia/key/{keyspace.encode_key(b'lucia:session:ann')}/")
    expect(page.get_by_test_id("value-hidden")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("stage-3 for ann")
    expect(page.get_by_test_id("reveal-button")).to_have_count(0)

    page.context.clear_cookies()
    sign_in(page, live_server, f"/keyspace/lucia/key/{keyspace.encode_key(b'lucia:session:ann')}/", "otto")
    expect(page.locator("body")).not_to_contain_text("stage-3 for ann")
    page.get_by_test_id("reveal-button").click()
    expect(page.get_by_test_id("value")).to_have_text("stage-3 for ann")
    assert AuditEntry.objects.get(action="key.reveal").actor_label == "otto"
    assert not PurgeRun.objects.exists()
