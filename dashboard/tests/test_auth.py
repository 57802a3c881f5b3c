import pytest
from django.test import Client
from django.urls import reverse

from dashboard import roles
from dashboard.models import AuditEntry

PASSWORD = "correct horse battery staple"


def test_it_redirects_anonymous_visitors_to_login(client, db):
    for url in [reverse("dashboard:home"), reverse("dashboard:audit_list"), reverse("continuity:overview"),
                reverse("continuity:job_list"), reverse("dashboard:user_list")]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next=")


def test_it_signs_in_with_the_right_password(client, viewer):
    response = client.post(reverse("login"), {"username": "vera", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:home")
    page = client.get(reverse("dashboard:home"))
    assert 'data-testid="whoami">vera' in page.content.decode()
    assert "viewer" in page.content.decode()


def test_it_refuses_a_wrong_password_without_saying_which_part(client, viewer):
    response = client.post(reverse("login"), {"username": "vera", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_locks_out_after_repeated_failures(client, viewer, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "vera", "password": "wrong"})
    response = client.post(reverse("login"), {"username": "vera", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_forbids_a_user_without_a_role(client, norole):
    client.force_login(norole)
    response = client.get(reverse("dashboard:home"))
    assert response.status_code == 403
    assert "needs the viewer role" in response.content.decode()


@pytest.mark.parametrize("persona,status", [("viewer", 403), ("operator", 403), ("admin", 200)])
def test_it_lets_only_admins_manage_users(client, request, persona, status):
    client.force_login(request.getfixturevalue(persona))
    assert client.get(reverse("dashboard:user_list")).status_code == status
    response = client.post(reverse("dashboard:user_create"), {"username": "newbie", "role": "viewer"})
    assert response.status_code == status
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.filter(username="newbie").exists() == (status == 200)


def test_it_creates_a_user_with_a_role_and_audits_it(admin_client):
    response = admin_client.post(reverse("dashboard:user_create"), {"username": "carol", "email": "c@example.test",
                                                                    "role": "operator"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert 'data-testid="new-password"' in body
    assert "<html" not in body  # the fragment, not the page
    from django.contrib.auth import get_user_model

    carol = get_user_model().objects.get(username="carol")
    assert roles.role_of(carol) == "operator"
    entry = AuditEntry.objects.get(action="user.create")
    assert entry.actor_label == "ada" and entry.target_label == "carol"
    assert entry.after["role"] == "operator"
    assert entry.request_id and entry.remote_addr == "127.0.0.1"


def test_it_changes_a_role_and_records_before_and_after(admin_client, viewer):
    response = admin_client.post(reverse("dashboard:user_role", args=[viewer.pk]), {"role": "operator", "is_active": "on"})
    assert "Saved" in response.content.decode()
    viewer.refresh_from_db()
    assert roles.role_of(viewer) == "operator"
    entry = AuditEntry.objects.get(action="user.role")
    assert entry.before == {"role": "viewer", "is_active": True}
    assert entry.after == {"role": "operator", "is_active": True}


def test_it_will_not_let_an_admin_demote_themself(admin_client, admin):
    response = admin_client.post(reverse("dashboard:user_role", args=[admin.pk]), {"role": "viewer", "is_active": "on"})
    assert "cannot remove your own admin role" in response.content.decode()
    assert roles.role_of(admin) == "admin"
    assert not AuditEntry.objects.filter(action="user.role").exists()


def test_it_signs_out_only_by_post(client, viewer):
    client.force_login(viewer)
    assert client.get(reverse("logout")).status_code == 405
    client.post(reverse("logout"))
    assert "_auth_user_id" not in client.session


def test_it_locks_an_address_that_tries_many_usernames(client, viewer, settings):
    """Each username stays under AXES_FAILURE_LIMIT, but the address is locked after
    AXES_IP_FAILURE_LIMIT failures in all: then even a right password is refused from it."""
    settings.AXES_IP_FAILURE_LIMIT = 12
    for n in range(settings.AXES_IP_FAILURE_LIMIT - 1):
        response = client.post(reverse("login"), {"username": f"guess{n}", "password": "wrong"})
        assert response.status_code == 200, n
    # One below the limit the right password still works...
    other = Client(REMOTE_ADDR="127.0.0.1")
    assert other.post(reverse("login"), {"username": "vera", "password": PASSWORD}).status_code == 302
    client.post(reverse("login"), {"username": "guess-last", "password": "wrong"})
    response = client.post(reverse("login"), {"username": "vera", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.content.decode()
    # ...and another address is not affected.
    elsewhere = Client(REMOTE_ADDR="192.0.2.10")
    assert elsewhere.post(reverse("login"), {"username": "vera", "password": PASSWORD}).status_code == 302


@pytest.mark.parametrize("proxies, forwarded, remote, expected", [
    (0, "203.0.113.9", "10.0.0.2", "10.0.0.2"),                 # no proxy: the header is the client's word
    (1, "203.0.113.9", "10.0.0.2", "203.0.113.9"),
    (1, "1.2.3.4, 203.0.113.9", "10.0.0.2", "203.0.113.9"),     # the client's own prefix is ignored
    (2, "203.0.113.9, 10.0.0.7", "10.0.0.2", "203.0.113.9"),
    (2, "203.0.113.9", "10.0.0.2", "10.0.0.2"),                 # shorter than promised
    (1, "not-an-ip", "10.0.0.2", "10.0.0.2"),
])
def test_the_lockout_keys_on_the_address_the_trusted_proxies_saw(settings, proxies, forwarded, remote, expected):
    from django.test import RequestFactory

    from dashboard.lockout import client_ip

    settings.DJANGO_PROXY_COUNT = proxies
    request = RequestFactory().get("/", HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR=remote)
    assert client_ip(request) == expected


TOKEN_AS_USERNAME = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"


def _lockout_rows():
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    return [*AccessAttempt.objects.values_list("username", "get_data", "post_data"),
            *AccessFailureLog.objects.values_list("username"), *AccessLog.objects.values_list("username")]


@pytest.mark.parametrize("username", [TOKEN_AS_USERNAME, "ghp_1234567890abcdefghijABCDEFGHIJ123456",
                                      "password=hunter2xyzzy", f"op://vault/{TOKEN_AS_USERNAME}/field"])
def test_it_neither_echoes_nor_stores_a_secret_typed_as_the_username(client, viewer, caplog, username):
    import logging

    caplog.set_level(logging.DEBUG)
    response = client.post(reverse("login"), {"username": username, "password": "wrong"})
    body = response.content.decode()
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    assert "looks like a secret" in body and 'data-testid="username-error"' in body
    assert username not in body and 'name="username" id="id_username" autocomplete="username" autofocus required value=""' in body
    assert username not in str(_lockout_rows()) and username not in caplog.text


def test_the_lockout_never_stores_a_secret_username_from_any_path(rf, viewer, settings):
    """Any caller of authenticate() (not only the sign-in form) reaches axes: the lockout
    table keys a secret-looking username on a placeholder, and still counts its failures."""
    from axes.models import AccessAttempt
    from django.contrib.auth import authenticate

    from dashboard.lockout import SECRET_USERNAME

    for n in range(2):
        request = rf.post(reverse("login"), {"username": TOKEN_AS_USERNAME, "password": "wrong"})
        assert authenticate(request, username=TOKEN_AS_USERNAME, password="wrong") is None
    request = rf.post(reverse("login"), {"username": "vera", "password": "wrong"})
    authenticate(request, username="vera", password="wrong")
    attempts = dict(AccessAttempt.objects.values_list("username", "failures_since_start"))
    assert attempts == {SECRET_USERNAME: 2, "vera": 1}
    assert TOKEN_AS_USERNAME not in str(_lockout_rows())


def test_an_ordinary_wrong_username_is_still_recorded_and_shown(client, viewer):
    from axes.models import AccessAttempt

    response = client.post(reverse("login"), {"username": "vera.typo", "password": "wrong"})
    assert 'value="vera.typo"' in response.content.decode()
    assert list(AccessAttempt.objects.values_list("username", flat=True)) == ["vera.typo"]
