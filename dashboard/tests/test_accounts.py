"""New users set their own password at first sign-in; anyone can change theirs; a
deactivated user's sessions end (issue 11, item 7)."""

import re

from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from dashboard import roles
from dashboard.models import AuditEntry, PasswordChangeRequired

PASSWORD = "correct horse battery staple"
NEW = "a-brand-new-passphrase-42"


def _sign_in(username, password):
    client = Client()
    response = client.post(reverse("login"), {"username": username, "password": password})
    return client, response


def test_a_new_user_must_set_their_own_password_at_first_sign_in(admin_client):
    body = admin_client.post(reverse("dashboard:user_create"), {"username": "carol", "role": "operator"},
                             HTTP_HX_REQUEST="true").content.decode()
    one_time = re.search(r"One-time password \(shown once\): <code>([^<]+)</code>", body).group(1)
    carol = get_user_model().objects.get(username="carol")
    assert PasswordChangeRequired.objects.filter(user=carol).exists()

    client, response = _sign_in("carol", one_time)
    assert response.status_code == 302
    # Every page, full or htmx, leads to the password form until a password is set.
    for url in (reverse("dashboard:home"), reverse("continuity:overview"), reverse("dashboard:audit_list")):
        assert client.get(url)["Location"] == reverse("password_change"), url
    assert client.get(reverse("dashboard:home"), HTTP_HX_REQUEST="true")["HX-Redirect"] == reverse("password_change")
    form = client.get(reverse("password_change"))
    assert form.status_code == 200 and 'data-testid="first-sign-in"' in form.content.decode()

    weak = client.post(reverse("password_change"), {"old_password": one_time, "new_password1": "short",
                                                    "new_password2": "short"})
    assert weak.status_code == 200 and "This password is too short" in weak.content.decode()
    done = client.post(reverse("password_change"), {"old_password": one_time, "new_password1": NEW,
                                                    "new_password2": NEW})
    assert done.status_code == 302 and done["Location"] == reverse("password_change_done")
    assert client.get(reverse("dashboard:home")).status_code == 200  # same session, free to go
    assert not PasswordChangeRequired.objects.filter(user=carol).exists()
    entry = AuditEntry.objects.get(action="user.password_change")
    assert entry.target_label == "carol" and entry.after == {"first_sign_in": True}
    assert one_time not in str(entry.after) and NEW not in str(entry.after)

    # The admin's one-time password no longer works; the user's own does, with no detour.
    assert _sign_in("carol", one_time)[1].status_code == 200
    client, response = _sign_in("carol", NEW)
    assert response.status_code == 302 and client.get(reverse("dashboard:home")).status_code == 200


def test_anyone_can_change_their_password_and_other_sessions_end(viewer):
    laptop, _ = _sign_in("vera", PASSWORD)
    phone, _ = _sign_in("vera", PASSWORD)
    page = laptop.get(reverse("dashboard:home")).content.decode()
    assert f'href="{reverse("password_change")}"' in page
    assert laptop.get(reverse("password_change")).status_code == 200
    wrong = laptop.post(reverse("password_change"), {"old_password": "nope", "new_password1": NEW,
                                                     "new_password2": NEW})
    assert wrong.status_code == 200 and "Your old password was entered incorrectly" in wrong.content.decode()
    laptop.post(reverse("password_change"), {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW})
    viewer.refresh_from_db()
    assert viewer.check_password(NEW)
    assert laptop.get(reverse("dashboard:home")).status_code == 200
    assert phone.get(reverse("dashboard:home"))["Location"].startswith(reverse("login"))
    assert AuditEntry.objects.get(action="user.password_change").after == {"first_sign_in": False}


def test_deactivating_a_user_ends_their_sessions(admin_client, viewer):
    client, _ = _sign_in("vera", PASSWORD)
    other, _ = _sign_in("vera", PASSWORD)
    bystander = Client()
    bystander.force_login(get_user_model().objects.create_user("bob", "", PASSWORD))
    assert client.get(reverse("dashboard:home")).status_code == 200
    sessions_before = Session.objects.count()

    admin_client.post(reverse("dashboard:user_role", args=[viewer.pk]), {"role": "viewer"})  # is_active unticked
    viewer.refresh_from_db()
    assert viewer.is_active is False
    assert Session.objects.count() == sessions_before - 2  # vera's two; bob's and the admin's stay

    # Reactivated, the old sessions do not come back.
    admin_client.post(reverse("dashboard:user_role", args=[viewer.pk]), {"role": "viewer", "is_active": "on"})
    for session in (client, other):
        assert session.get(reverse("dashboard:home"))["Location"].startswith(reverse("login"))
    assert roles.role_of(get_user_model().objects.get(pk=viewer.pk)) == "viewer"


def test_ensure_admin_makes_a_generated_password_one_time(db, monkeypatch, capsys):
    monkeypatch.delenv("DASHBOARD_ADMIN_PASSWORD", raising=False)
    call_command("ensure_admin")
    assert "asks for a new password at the first sign-in" in capsys.readouterr().out
    assert PasswordChangeRequired.objects.filter(user__username="admin").exists()


def test_ensure_admin_with_a_chosen_password_asks_for_no_change(db, monkeypatch):
    monkeypatch.setenv("DASHBOARD_ADMIN_PASSWORD", "a-long-admin-password")
    call_command("ensure_admin")
    assert not PasswordChangeRequired.objects.exists()
