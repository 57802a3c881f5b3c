"""Single sign-on against a real OpenID provider (django-oidc-provider in its own process on
loopback, `openid_provider`): the authorization-code flow with PKCE through the provider's own
login form, group → role mapping, refusals, tampered and foreign tokens, the session refresh,
break-glass local accounts and the lockout. The browser's version: test_browser_sso."""

import logging
import time

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from axes.models import AccessAttempt
from dashboard import roles
from dashboard.models import AuditEntry, ChecklistItem, SsoIdentity
from dashboard.sso import SESSION_KEY
from dashboard.tests import sso
from dashboard.tests.sso import PersonAtProvider, forge_claims, sign_in

CALLBACK = "http://testserver/oidc/callback/"


@pytest.fixture
def provider(openid_provider, settings, db):
    """SSO on, against the demo provider, with the test client's callback registered."""
    openid_provider.register_client(sso.CLIENT_ID, sso.CLIENT_SECRET, [CALLBACK])
    sso.configure(settings, openid_provider.issuer)
    return openid_provider


def person(provider, username, groups):
    provider.add_person(username, sso.PASSWORD, f"{username}@lucia.example", groups)
    return PersonAtProvider(username)


def subject_of(username):
    from dashboard.devtools.idp.claims import subject

    class Named:
        pass

    named = Named()
    named.username = username
    return subject(named)


def expire(client):
    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()


def signed_in_user(client):
    return client.get(reverse("dashboard:home")).wsgi_request.user


@pytest.mark.parametrize("groups, role", [
    (["dashboard-admins"], "admin"),
    (["dashboard-operators", "oncall"], "operator"),
    (["dashboard-viewers", "dashboard-operators"], "operator"),  # the strongest role wins
    (["dashboard-viewers"], "viewer"),
])
def test_it_signs_in_through_the_provider_with_the_role_its_groups_give(provider, client, groups, role):
    answer = sign_in(client, person(provider, "dana", groups))
    assert answer.status_code == 302 and answer["Location"] == reverse("dashboard:home")
    user = get_user_model().objects.get(username="dana@lucia.example")
    assert roles.role_of(user) == role and user.email == "dana@lucia.example"
    assert not user.has_usable_password()
    identity = SsoIdentity.objects.get(user=user)
    assert (identity.issuer, identity.subject) == (provider.issuer, subject_of("dana"))
    page = client.get(reverse("dashboard:home")).content.decode()
    assert 'data-testid="whoami">dana@lucia.example' in page and role in page
    entry = AuditEntry.objects.get(action="sso.sign_in")
    assert entry.source == "sso" and entry.actor == user
    assert entry.after["subject"] == subject_of("dana") and entry.after["email"] == "dana@lucia.example"
    assert entry.after["issuer"] == provider.issuer and entry.after["role"] == role
    assert AuditEntry.objects.get(action="user.role").after["role_before"] is None
    # Nothing of a token is kept in the session; the provider's identity is.
    session = client.session
    assert not [key for key in session.keys() if "token" in key and key != "oidc_id_token_expiration"]
    assert session[SESSION_KEY] == {"iss": provider.issuer, "sub": subject_of("dana"), "email": "dana@lucia.example"}


def test_a_person_whose_groups_map_to_no_role_is_refused_with_a_clear_page(provider, client):
    answer = sign_in(client, person(provider, "nina", ["marketing", "oncall"]))
    assert answer.status_code == 403
    text = answer.content.decode()
    assert 'data-testid="sso-refused"' in text and "nina@lucia.example" in text
    assert "none of your groups there gives a role" in text and "<code>dashboard-operators</code>" in text
    assert not get_user_model().objects.filter(email="nina@lucia.example").exists()
    assert client.get(reverse("dashboard:home")).status_code == 302  # not signed in
    entry = AuditEntry.objects.get(action="sso.refused")
    assert entry.after["subject"] == subject_of("nina") and entry.after["email"] == "nina@lucia.example"
    assert entry.after["reason"] == "no_role" and entry.after["groups"] == ["marketing", "oncall"]


def test_the_role_follows_the_groups_at_the_next_sign_in(provider, client):
    otto = person(provider, "otto", ["dashboard-operators"])
    sign_in(client, otto)
    client.post(reverse("logout"))
    provider.set_groups("otto", ["dashboard-viewers"])
    assert sign_in(client, PersonAtProvider("otto")).status_code == 302
    user = get_user_model().objects.get(username="otto@lucia.example")
    assert roles.role_of(user) == "viewer"
    change = AuditEntry.objects.filter(action="user.role").order_by("-id").first()
    assert (change.after["role_before"], change.after["role"]) == ("operator", "viewer")
    assert change.after["subject"] == subject_of("otto")


def test_an_expired_session_is_refreshed_silently_with_the_role_evaluated_again(provider, client, lucia):
    otto = person(provider, "otto", ["dashboard-operators"])
    sign_in(client, otto)
    provider.set_groups("otto", ["dashboard-viewers"])
    assert client.get(reverse("continuity:overview")).status_code == 200  # within the interval: as it was
    expire(client)
    answer = client.get(reverse("continuity:overview"))
    assert answer.status_code == 302 and answer["Location"].startswith(f"{provider.issuer}/authorize?")
    assert "prompt=none" in answer["Location"]
    # Still signed in at the provider: no login form, straight back with a code.
    back = sso.follow_to_dashboard(client, otto.authorize(answer["Location"]))
    assert back.status_code == 302 and back["Location"] == reverse("continuity:overview")
    assert roles.role_of(signed_in_user(client)) == "viewer"
    create = client.post(reverse("dashboard:checklist_create"), {"stage": 3, "position": 9, "text": "alerting"})
    assert create.status_code == 403 and not ChecklistItem.objects.filter(text="alerting").exists()
    assert AuditEntry.objects.filter(action="sso.sign_in").count() == 1  # a refresh is no new sign-in


def test_removal_from_the_group_ends_the_session_at_the_next_refresh(provider, client):
    otto = person(provider, "otto", ["dashboard-operators"])
    sign_in(client, otto)
    provider.set_groups("otto", ["oncall"])
    expire(client)
    answer = client.get(reverse("dashboard:home"))
    refused = sso.follow_to_dashboard(client, otto.authorize(answer["Location"]))
    assert refused.status_code == 403 and 'data-testid="sso-refused"' in refused.content.decode()
    assert client.get(reverse("dashboard:home")).status_code == 302
    user = get_user_model().objects.get(username="otto@lucia.example")
    assert roles.role_of(user) is None
    entry = AuditEntry.objects.get(action="sso.refused")
    assert entry.actor == user and entry.after["role_before"] == "operator"


def test_an_expired_session_carries_out_no_post_and_sends_htmx_to_the_provider(provider, client):
    sign_in(client, person(provider, "otto", ["dashboard-operators"]))
    expire(client)
    answer = client.post(reverse("dashboard:checklist_create"), {"stage": 3, "position": 9, "text": "alerting"},
                         HTTP_REFERER="http://testserver/checklist/")
    assert answer.status_code == 303 and answer["Location"].startswith(f"{provider.issuer}/authorize?")
    assert not ChecklistItem.objects.filter(text="alerting").exists()
    assert client.session["oidc_login_next"] == "http://testserver/checklist/"
    fragment = client.get(reverse("dashboard:checklist"), HTTP_HX_REQUEST="true",
                          HTTP_HX_CURRENT_URL="http://testserver/checklist/")
    assert fragment.status_code == 200 and fragment["HX-Redirect"].startswith(f"{provider.issuer}/authorize?")


def test_a_session_ended_at_the_provider_ends_here_at_the_refresh(provider, client):
    otto = person(provider, "otto", ["dashboard-operators"])
    sign_in(client, otto)
    provider.end_sessions("otto")
    expire(client)
    answer = client.get(reverse("dashboard:home"))
    callback = otto.http.get(answer["Location"], allow_redirects=False).headers["Location"]
    assert "error=login_required" in callback
    back = sso.follow_to_dashboard(client, callback)
    assert back.status_code == 302 and back["Location"] == reverse("login")
    page = client.get(reverse("login")).content.decode()
    assert "Your Demo provider session has ended: sign in again." in page
    assert client.get(reverse("dashboard:home")).status_code == 302


def test_a_replayed_callback_is_refused(provider, client):
    otto = person(provider, "otto", ["dashboard-operators"])
    start = client.get("/oidc/authenticate/")
    callback = otto.authorize(start["Location"])
    assert sso.follow_to_dashboard(client, callback).status_code == 302
    client.post(reverse("logout"))
    again = sso.follow_to_dashboard(client, callback)
    assert again.status_code in (400, 403) and 'data-testid="sso-failed"' in again.content.decode()
    assert client.get(reverse("dashboard:home")).status_code == 302


# --- tokens that must not be trusted: a proxy in front of the real provider ---------------
@pytest.fixture
def proxied(openid_provider, settings, db):
    """The dashboard talks to the provider through a proxy (its issuer is the proxy's URL)."""
    proxy = sso.ProviderProxy(openid_provider.port)
    openid_provider.register_client(sso.CLIENT_ID, sso.CLIENT_SECRET, [CALLBACK])
    sso.configure(settings, proxy.issuer)
    yield proxy
    proxy.close()


def test_a_tampered_id_token_is_refused(proxied, openid_provider, client, caplog):
    person(openid_provider, "vera", ["dashboard-viewers"])
    proxied.tamper = lambda answer: {**answer, "id_token": forge_claims(answer["id_token"], sub=subject_of("ada"))}
    with caplog.at_level(logging.WARNING):
        answer = sign_in(client, PersonAtProvider("vera"))
    assert answer.status_code == 403
    assert "the ID token&#x27;s signature does not verify" in answer.content.decode()
    assert not SsoIdentity.objects.exists() and client.get(reverse("dashboard:home")).status_code == 302
    assert "Single sign-on refused: The identity provider's answer did not verify" in caplog.text
    assert not AccessAttempt.objects.exists()  # not counted as a password guess


def test_a_token_issued_by_another_issuer_is_refused(proxied, openid_provider, client):
    person(openid_provider, "vera", ["dashboard-viewers"])
    proxied.token_host = f"127.0.0.1:{openid_provider.port}"  # the provider then signs as itself
    answer = sign_in(client, PersonAtProvider("vera"))
    assert answer.status_code == 403
    text = answer.content.decode()
    assert f"The ID token was issued by &#x27;{openid_provider.issuer}&#x27;, not by OIDC_ISSUER" in text
    assert not SsoIdentity.objects.exists()


def test_the_genuine_token_through_the_same_proxy_signs_in(proxied, openid_provider, client):
    person(openid_provider, "vera", ["dashboard-viewers"])
    assert sign_in(client, PersonAtProvider("vera")).status_code == 302
    assert SsoIdentity.objects.get().issuer == proxied.issuer


def test_a_provider_naming_another_issuer_in_its_discovery_is_refused(openid_provider, settings, client, db):
    openid_provider.register_client(sso.CLIENT_ID, sso.CLIENT_SECRET, [CALLBACK])
    wrong = openid_provider.issuer.replace("127.0.0.1", "localhost")
    sso.configure(settings, wrong, discovery_url=f"{openid_provider.issuer}/.well-known/openid-configuration")
    answer = client.get("/oidc/authenticate/")
    assert answer.status_code == 503
    assert f"names its issuer &#x27;{openid_provider.issuer}&#x27;, but OIDC_ISSUER is &#x27;{wrong}&#x27;" in (
        answer.content.decode())


# --- local accounts, lockout, secrets -------------------------------------------------------
PASSWORD = "correct horse battery staple"


def test_local_accounts_stay_for_break_glass_and_may_be_kept_to_admins(provider, client, settings, viewer, admin):
    assert client.post(reverse("login"), {"username": "vera", "password": PASSWORD}).status_code == 302
    kept = type(client)()
    kept.force_login(viewer)
    settings.SSO_LOCAL_LOGIN = "admins"
    assert kept.get(reverse("dashboard:home")).status_code == 302  # the viewer's local session ended
    fresh = type(client)()
    login = fresh.get(reverse("login")).content.decode()
    assert "Sign in with Demo provider" in login and "Password sign-in is for admins only" in login
    refused = fresh.post(reverse("login"), {"username": "vera", "password": PASSWORD})
    assert refused.status_code == 200 and "_auth_user_id" not in fresh.session
    assert fresh.post(reverse("login"), {"username": "ada", "password": PASSWORD}).status_code == 302


def test_a_provider_user_has_no_password_here(provider, client):
    sign_in(client, person(provider, "otto", ["dashboard-operators"]))
    client.post(reverse("logout"))
    answer = client.post(reverse("login"), {"username": "otto@lucia.example", "password": ""})
    assert answer.status_code == 200 and "_auth_user_id" not in client.session
    sign_in(client, PersonAtProvider("otto"))
    page = client.get(reverse("dashboard:home")).content.decode()
    assert "data-testid=\"whoami\">otto@lucia.example" in page and ">Password</a>" not in page


def test_a_locked_out_address_signs_in_no_way_and_refusals_lock_no_one(provider, client, settings, viewer):
    nina = person(provider, "nina", ["marketing"])
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):  # refused people are no password guesses
        assert sign_in(client, nina).status_code == 403
    assert not AccessAttempt.objects.exists()
    settings.AXES_IP_FAILURE_LIMIT = 3
    for n in range(3):
        client.post(reverse("login"), {"username": f"guess{n}", "password": "wrong"})
    otto = person(provider, "otto", ["dashboard-operators"])
    answer = sign_in(client, otto)
    assert answer.status_code == 429 and "Too many failed sign-in attempts" in answer.content.decode()
    assert not get_user_model().objects.filter(email="otto@lucia.example").exists()


def test_the_audit_log_names_the_provider_subject_and_email_of_what_they_do(provider, client):
    sign_in(client, person(provider, "otto", ["dashboard-operators"]))
    client.post(reverse("dashboard:checklist_create"), {"stage": 3, "position": 9, "text": "alerting"})
    entry = AuditEntry.objects.get(action="checklist.create")
    assert entry.actor.username == "otto@lucia.example"
    assert entry.actor_label == f"otto@lucia.example (sso sub={subject_of('otto')})"
    assert entry.source == "web"


def test_no_secret_or_token_reaches_the_log_the_session_or_the_audit_log(provider, client, caplog):
    with caplog.at_level(logging.DEBUG):
        sign_in(client, person(provider, "otto", ["dashboard-operators"]))
    assert sso.CLIENT_SECRET not in caplog.text and "eyJ" not in caplog.text
    session = client.session
    assert sso.CLIENT_SECRET not in str(dict(session)) and "eyJ" not in str(dict(session))
    assert not [e for e in AuditEntry.objects.all() if sso.CLIENT_SECRET in str(e.after) or "eyJ" in str(e.after)]


def test_the_sign_in_pages_have_one_h1_and_named_controls(provider, client, settings):
    from dashboard.tests.test_accessibility import _audit

    refused = sign_in(client, person(provider, "nina", ["marketing"]))
    settings.OIDC_DISCOVERY_URL = "http://127.0.0.1:9/.well-known/openid-configuration"  # nothing listens there
    sso_provider_forget()
    failed = client.get("/oidc/authenticate/")
    assert failed.status_code == 503 and "could not be read" in failed.content.decode()
    for page in (client.get(reverse("login")), refused, failed):
        audit = _audit(page.content.decode())
        assert audit.h1 == 1 and audit.unnamed() == []


def test_an_unreachable_provider_at_the_refresh_ends_the_session(provider, client, settings):
    sign_in(client, person(provider, "otto", ["dashboard-operators"]))
    settings.OIDC_DISCOVERY_URL = "http://127.0.0.1:9/.well-known/openid-configuration"
    sso_provider_forget()
    assert client.get(reverse("dashboard:home")).status_code == 200  # within the interval
    expire(client)
    answer = client.get(reverse("dashboard:home"))
    assert answer.status_code == 503 and "Your session could not be renewed and has ended." in answer.content.decode()
    assert client.get(reverse("dashboard:home")).status_code == 302


def sso_provider_forget():
    from dashboard.sso import provider as discovery

    discovery.forget()


def test_it_answers_404_where_single_sign_on_is_off(client, db):
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404
    assert "Sign in with" not in client.get(reverse("login")).content.decode()
