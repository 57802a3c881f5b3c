"""manage.py create_user --role: the password from a file, standard input or a real terminal
prompt (a pty), never from the command line; the account signs in with its role; the audit
row never holds the password."""

import io
import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from dashboard import dbroles, roles
from dashboard.models import AuditEntry, PasswordChangeRequired

PASSWORD = "plum-tractor-vivid-71"


def create(*args, stdin=None):
    out, old = io.StringIO(), sys.stdin
    sys.stdin = stdin if stdin is not None else old
    try:
        call_command("create_user", *args, stdout=out, stderr=io.StringIO())
    finally:
        sys.stdin = old
    return out.getvalue()


def signs_in(username, password):
    """A real sign-in through the login page (its throttling included)."""
    client = Client()
    response = client.post(reverse("login"), {"username": username, "password": password})
    return response.status_code == 302 and client.get(reverse("dashboard:home")).status_code == 200


@pytest.mark.parametrize("role", roles.ROLES)
def test_it_creates_an_account_with_its_role_from_a_password_file(db, tmp_path, role):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    out = create("--username", "vic", "--role", role, "--email", "vic@example.test", "--password-file", str(secret))
    assert out.strip() == f"create_user: created {role} 'vic'."
    user = get_user_model().objects.get(username="vic")
    assert roles.role_of(user) == role and signs_in("vic", PASSWORD)
    assert not PasswordChangeRequired.objects.filter(user=user).exists()
    entry = AuditEntry.objects.get(action="user.create")
    assert (entry.actor_label, entry.source) == ("create_user", "cli")
    assert entry.after == {"username": "vic", "email": "vic@example.test", "role": role, "one_time": False}
    assert PASSWORD not in json.dumps([entry.before, entry.after, entry.note]) and PASSWORD not in out


def test_it_reads_standard_input_and_can_require_a_new_password(db):
    create("--username", "otis", "--role", "operator", "--password-file", "-", "--one-time",
           stdin=io.StringIO(PASSWORD + "\n"))
    user = get_user_model().objects.get(username="otis")
    assert roles.role_of(user) == "operator" and PasswordChangeRequired.objects.filter(user=user).exists()


@pytest.mark.parametrize("args,message", [
    (["--role", "viewer", "--password", PASSWORD], "unrecognized arguments"),
    (["--role", "root", "--password-file", "-"], "invalid choice"),
    (["--role", "viewer"], "No terminal to ask for the password"),
])
def test_it_never_takes_the_password_as_an_argument(db, args, message):
    with pytest.raises(CommandError, match=message) as refused:
        create("--username", "vic", *args, stdin=io.StringIO(""))
    assert PASSWORD not in str(refused.value) and not get_user_model().objects.filter(username="vic").exists()


def test_it_refuses_a_weak_password_and_a_taken_name_without_quoting_the_password(db, viewer, tmp_path):
    weak = tmp_path / "weak"
    weak.write_text("12345\n")
    with pytest.raises(CommandError, match="too short") as refused:
        create("--username", "wes", "--role", "viewer", "--password-file", str(weak))
    assert "12345" not in str(refused.value) and not get_user_model().objects.filter(username="wes").exists()
    strong = tmp_path / "pw"
    strong.write_text(PASSWORD)
    with pytest.raises(CommandError, match="The username 'VERA' is taken"):
        create("--username", "VERA", "--role", "admin", "--password-file", str(strong))
    assert not AuditEntry.objects.filter(action="user.create").exists()


def _read_until(fd, marker, timeout=30):
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} in {seen!r}"
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                break
            seen += chunk
    return seen


@pytest.mark.django_db(transaction=True)
def test_it_prompts_twice_on_a_real_terminal_without_echoing(redis_server):
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{dbroles.APP}@127.0.0.1:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": redis_server.url(0), "CELERY_BROKER_URL": redis_server.url(1),
           "CACHE_URL": redis_server.url(2), "DJANGO_DEBUG": "0", "DJANGO_HTTPS": "0",
           "DJANGO_SECRET_KEY": settings.SECRET_KEY}
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "manage.py", "create_user", "--username", "tess", "--role", "operator"],
                               cwd=settings.BASE_DIR, env=env, stdin=follower, stdout=follower, stderr=follower,
                               close_fds=True)
    os.close(follower)
    try:
        _read_until(leader, b"Password: ")
        os.write(leader, PASSWORD.encode() + b"\n")
        _read_until(leader, b"Password (again): ")
        os.write(leader, PASSWORD.encode() + b"\n")
        rest = _read_until(leader, b"created operator 'tess'.")
        assert process.wait(timeout=30) == 0
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    assert PASSWORD.encode() not in rest  # typed, never echoed
    assert PASSWORD not in " ".join(process.args)
    user = get_user_model().objects.get(username="tess")
    assert roles.role_of(user) == "operator" and signs_in("tess", PASSWORD)
