"""The login flow in Debian's Chromium, headless, against the live server."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"


def sign_in(page, live_server, username, password=PASSWORD):
    page.goto(live_server.url + "/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_it_signs_in_sees_the_runbook_and_signs_out(page, live_server, operator, lucia):
    page.goto(live_server.url + "/keyspace/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/keyspace/"))
    page.get_by_label("Username").fill("otto")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(live_server.url + "/keyspace/")
    expect(page.get_by_test_id("whoami")).to_contain_text("otto")
    expect(page.get_by_test_id("whoami")).to_contain_text("operator")
    expect(page.get_by_test_id("namespace-row")).to_have_count(5)
    # The live figures arrive through htmx after the page.
    expect(page.get_by_test_id("summary")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    page.goto(live_server.url + "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def test_it_explains_a_wrong_password(page, live_server, viewer):
    sign_in(page, live_server, "vera", "not the password")
    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username and password")
    expect(page.get_by_label("Password")).to_have_value("")
