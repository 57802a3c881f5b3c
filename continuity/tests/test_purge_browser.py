"""A purge in Chromium: form → estimate → preview on the worker → retyped confirmation →
progress → finished → audit entry. The preview and the purge run on a real Celery worker
(in a thread), while the page polls."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def test_it_purges_from_preview_to_audit_entry(page, live_server, operator, lucia, monitored, empty_broker,
                                               celery_worker):
    for i in range(25):
        monitored.set(f"lucia:session:a*b:{i}".encode(), b"v")
    monitored.set(b"lucia:session:aXb:1", b"v")  # a glob look-alike that must survive
    monitored.set(b"lucia:focus:1", b"v")
    page.goto(live_server.url + "/keyspace/jobs/")
    page.get_by_label("Username").fill("otto")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("purges-link").click()
    page.get_by_test_id("new-purge").click()

    page.get_by_label("Prefix or pattern").fill("lucia:session:a*b")
    page.get_by_label("Action").select_option("delete")  # never chosen for the operator
    page.get_by_test_id("preview-button").click()
    expect(page).to_have_url(re.compile(r"/keyspace/purges/\d+/$"))
    expect(page.get_by_test_id("purge-estimate")).to_contain_text("at most 27 keys match")  # DBSIZE, at once
    # The worker's preview ends; the polled region reloads the page with its figures.
    expect(page.get_by_test_id("preview-matched")).to_have_text("25")
    expect(page.get_by_test_id("preview-sample")).to_contain_text("lucia:session:a*b:")
    expect(page.get_by_test_id("purge-status")).to_have_text("previewed")

    # A mistyped confirmation is refused and nothing happens.
    page.get_by_label(re.compile("Retype the prefix")).fill("lucia:session:a")
    page.get_by_label(re.compile("Reason")).fill("stale test sessions")
    page.get_by_test_id("confirm-button").click()
    expect(page.get_by_test_id("purge-error")).to_contain_text("does not match")
    assert monitored.dbsize() == 27

    page.get_by_label(re.compile("Retype the prefix")).fill("lucia:session:a*b")
    page.get_by_label(re.compile("Reason")).fill("stale test sessions")
    page.get_by_test_id("confirm-button").click()
    expect(page.get_by_test_id("purge-progress")).to_be_visible()
    # The progress box is what polls (the heading keeps the status the page loaded with).
    expect(page.get_by_test_id("purge-progress").get_by_test_id("purge-status")).to_have_text("succeeded")
    expect(page.get_by_test_id("progress-matched")).to_have_text("25")
    expect(page.get_by_test_id("progress-done")).to_have_text("25")
    expect(page.get_by_test_id("purge-finished")).to_be_visible()
    assert set(monitored.scan_iter()) == {b"lucia:session:aXb:1", b"lucia:focus:1"}

    page.get_by_test_id("audit-link").click()
    expect(page).to_have_url(re.compile(r"/audit/\d+/$"))
    body = page.locator("body")
    expect(body).to_contain_text("purge.finish")
    expect(body).to_contain_text("stale test sessions")
    expect(body).to_contain_text("otto")
    changes = page.get_by_test_id("changes")
    expect(changes.locator("tr", has_text="deleted")).to_contain_text("25")
    expect(changes.locator("tr", has_text="matched")).to_contain_text("25")
