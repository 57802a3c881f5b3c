"""`DEMO_SSO=1 make run`: the demo OpenID provider started as its own process, the dashboard
registered as its client, and the demo people able to sign in with the printed password."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from dashboard import roles
from dashboard.devtools import devrun
from dashboard.devtools.idp import DEMO_PEOPLE
from dashboard.tests import sso
from dashboard.tests.sso import PersonAtProvider


@pytest.fixture
def demo(tmp_path, settings, db):
    env = {}
    provider, password = devrun.demo_sso(env, tmp_path / "idp", None, ["http://testserver"])
    yield env, provider, password
    provider.stop()


def test_it_starts_the_provider_and_points_the_dashboard_at_it(demo, settings, client):
    env, provider, password = demo
    assert env["OIDC_ISSUER"] == provider.issuer and env["OIDC_CLIENT_ID"] == "continuity-dashboard"
    assert len(env["OIDC_CLIENT_SECRET"]) >= 32 and provider.process.poll() is None
    sso.configure(settings, env["OIDC_ISSUER"], OIDC_RP_CLIENT_ID=env["OIDC_CLIENT_ID"],
                  OIDC_RP_CLIENT_SECRET=env["OIDC_CLIENT_SECRET"], OIDC_GROUP_ROLES={
                      group: role for group, _, role in (item.partition("=") for item in env["OIDC_GROUP_ROLES"].split(","))})
    expected = {"ada": "admin", "otto": "operator", "vera": "viewer"}
    for username, role in expected.items():
        assert sso.sign_in(client, PersonAtProvider(username, password)).status_code == 302
        assert roles.role_of(get_user_model().objects.get(email=DEMO_PEOPLE[username][0])) == role
        client.post(reverse("logout"))
    assert sso.sign_in(client, PersonAtProvider("nina", password)).status_code == 403
