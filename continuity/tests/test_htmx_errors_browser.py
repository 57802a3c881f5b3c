"""In Chromium, an htmx request refused with 409 swaps its error fragment into the page: the
operator reads the specific reason, not the generic 'The dashboard answered 409' banner."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from continuity.models import PurgeRun
from continuity.operations import purge

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def test_it_shows_why_a_purge_cannot_be_cancelled(page, live_server, operator, lucia, monitored):
    monitored.set(b"lucia:session:1", b"v")
    run = purge.preview_purge(action="delete",
                              database=lucia, kind="prefix", value=b"lucia:session:", actor=operator).run
    PurgeRun.objects.filter(pk=run.pk).update(status=PurgeRun.RUNNING, started_at=timezone.now())
    # Freeze the progress poll (204: htmx swaps nothing) so the page still offers Cancel after
    # the run has finished behind its back, as it would between two polls.
    page.route(f"**/keyspace/purges/{run.pk}/progress/", lambda route: route.fulfill(status=204))

    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "otto")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(live_server.url + run.get_absolute_url())
    expect(page.get_by_test_id("cancel-button")).to_be_visible()
    PurgeRun.objects.filter(pk=run.pk).update(status=PurgeRun.SUCCEEDED, finished_at=timezone.now())

    with page.expect_response(f"**/keyspace/purges/{run.pk}/cancel/") as answer:
        page.get_by_test_id("cancel-button").click()
    assert answer.value.status == 409
    progress = page.get_by_test_id("purge-progress")
    expect(progress.get_by_role("alert")).to_have_text(f"Purge #{run.pk} is succeeded; there is nothing to cancel.")
    expect(page.get_by_test_id("cancel-button")).to_have_count(0)
    expect(page.locator("#htmx-error")).to_be_hidden()
    assert PurgeRun.objects.get(pk=run.pk).cancel_requested is False
