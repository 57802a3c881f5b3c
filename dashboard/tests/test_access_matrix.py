"""Every URL the app serves, checked for login and role, so a new view cannot forget them."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

PUBLIC = {"/healthz", "/accounts/login/", "/accounts/logout/"}
# URLs with access rules of their own, tested where they live: /metrics takes a bearer token or
# an allowed network (test_monitoring); the single sign-on start and callback are the sign-in
# itself (test_sso), and answer 404 while SSO is off.
OWN_ACCESS = {"/metrics", "/oidc/authenticate/", "/oidc/callback/"}
# Any signed-in user's own account, whatever their role.
SELF_SERVICE = {"/accounts/password/", "/accounts/password/done/"}
SAMPLE = {"slug": "lucia", "int": "1", "str": "x", "path": "x"}


def _walk(patterns, prefix=""):
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield "/" + re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLE[m.group(1) or "str"], route).lstrip("^").rstrip("$")


URLS = sorted(set(_walk(get_resolver().url_patterns)))
PRIVATE = [url for url in URLS if url not in PUBLIC | OWN_ACCESS and not url.startswith("/static/")]


def test_the_matrix_covers_the_app():
    assert len(PRIVATE) >= 50  # the walk found the app, not an empty list
    assert "/keyspace/lucia/browse/" in PRIVATE and "/secrets/lucia/rotate/" in PRIVATE


@pytest.mark.parametrize("url", sorted(OWN_ACCESS))
def test_urls_with_their_own_access_rules_give_an_anonymous_visitor_nothing(client, db, url):
    assert url in URLS
    response = client.get(url)
    assert response.status_code in (401, 403, 404) and b"dashboard_" not in response.content


@pytest.mark.parametrize("url", PRIVATE)
def test_every_private_url_sends_anonymous_visitors_to_login(client, db, url):
    for method in (client.get, client.post):
        response = method(url)
        assert response.status_code == 302, (url, method)
        assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("url", [url for url in PRIVATE if url not in SELF_SERVICE])
def test_every_private_url_refuses_a_signed_in_user_without_a_role(client, norole, url):
    client.force_login(norole)
    assert client.get(url).status_code == 403, url
    assert client.post(url).status_code == 403, url


@pytest.mark.parametrize("url", sorted(SELF_SERVICE))
def test_a_user_without_a_role_may_still_change_their_own_password(client, norole, url):
    assert url in PRIVATE
    client.force_login(norole)
    assert client.get(url).status_code == 200
