"""Single sign-on in Debian's Chromium: the whole authorization-code flow through the demo
OpenID provider's own login page (a separate process on loopback) and back to the live server."""

import re

import pytest
from playwright.sync_api import expect

from dashboard.tests import sso

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def signed_in_through(openid_provider, live_server, settings):
    openid_provider.register_client(sso.CLIENT_ID, sso.CLIENT_SECRET, [f"{live_server.url}/oidc/callback/"])
    sso.configure(settings, openid_provider.issuer)

    def sign_in(page, username, groups, start="/"):
        openid_provider.add_person(username, sso.PASSWORD, f"{username}@lucia.example", groups)
        page.goto(live_server.url + start)
        page.get_by_role("link", name="Sign in with Demo provider").click()
        expect(page).to_have_url(re.compile(rf"^{re.escape(openid_provider.base_url)}/login/"))
        page.get_by_label("Provider username").fill(username)
        page.get_by_label("Provider password").fill(sso.PASSWORD)
        page.get_by_role("button", name="Sign in at the provider").click()

    return sign_in


def test_it_signs_in_through_the_provider_and_lands_where_it_was_going(page, live_server, signed_in_through, lucia):
    signed_in_through(page, "otto", ["dashboard-operators"], start="/keyspace/")
    expect(page).to_have_url(live_server.url + "/keyspace/")
    expect(page.get_by_test_id("whoami")).to_contain_text("otto@lucia.example")
    expect(page.get_by_test_id("whoami")).to_contain_text("operator")
    expect(page.get_by_role("link", name="Password")).to_have_count(0)  # the provider holds the password
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))


def test_a_person_without_a_mapped_group_sees_why_they_are_refused(page, live_server, signed_in_through):
    signed_in_through(page, "nina", ["marketing"])
    expect(page.get_by_test_id("sso-refused")).to_contain_text("nina@lucia.example")
    expect(page.get_by_test_id("sso-refused")).to_contain_text("none of your groups there gives a role")
    page.goto(live_server.url + "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
