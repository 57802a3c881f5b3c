"""Browser tests of the record-rotation flow (Debian Chromium through Playwright)."""

import re

import pytest
from playwright.sync_api import expect

from dashboard.models import AuditEntry, Rotation, Secret

PASSWORD = "correct horse battery staple"
PASTED = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _log_in(page, live_server, username):
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("whoami")).to_contain_text(username)


@pytest.fixture
def seeded(transactional_db):
    from continuity import seed

    seed.seed_all()
    secret = Secret.objects.get(name="lucia-rest-token")
    secret.set_reference("op://Lucia/Upstash Redis lucia/REST token")
    secret.save()
    return secret


def test_it_records_a_rotation_from_the_secret_page(page, live_server, seeded, operator):
    _log_in(page, live_server, "otto")
    page.goto(live_server.url + seeded.get_absolute_url())
    expect(page.get_by_test_id("status")).to_have_attribute("data-status", "never_rotated")
    page.get_by_test_id("record-rotation").click()
    form = page.get_by_test_id("rotation-form")
    form.locator("[name=reference]").fill("op://Lucia/Upstash Redis lucia 2025/REST token")
    form.locator("[name=verified_how]").fill("Engine redeployed, PING ok")
    page.get_by_test_id("rotation-next").click()
    confirm = page.get_by_test_id("rotation-confirm")
    expect(confirm).to_contain_text("$UPSTASH_REDIS_REST_TOKEN")
    page.get_by_test_id("rotation-confirm-button").click()
    expect(page.get_by_test_id("rotation-recorded")).to_be_visible()
    expect(page.get_by_test_id("rotation-panel").get_by_test_id("status")).to_have_attribute("data-status", "ok")
    expect(page.get_by_test_id("rotation-row")).to_contain_text("Upstash Redis lucia 2025")
    assert re.search(r"/secrets/lucia-rest-token/$", page.url)  # stayed on the page: htmx swapped the panel
    rotation = Rotation.objects.get()
    assert rotation.recorded_by_label == "otto"
    assert AuditEntry.objects.filter(action="secret.rotate", actor_label="otto").count() == 1


def test_it_refuses_a_plaintext_paste_with_a_clear_error_and_no_echo(page, live_server, seeded, operator):
    _log_in(page, live_server, "otto")
    page.goto(live_server.url + seeded.get_absolute_url())
    page.get_by_test_id("record-rotation").click()
    form = page.get_by_test_id("rotation-form")
    form.locator("[name=reference]").fill(PASTED)
    form.locator("[name=verified_how]").fill("checked")
    page.get_by_test_id("rotation-next").click()
    error = page.get_by_test_id("field-error").first
    expect(error).to_contain_text("not a 1Password secret reference")
    expect(error).to_contain_text("op://vault/item/field")
    expect(page.get_by_test_id("rotation-form").locator("[name=reference]")).to_have_value("")
    assert PASTED not in page.content()
    assert not Rotation.objects.exists()
