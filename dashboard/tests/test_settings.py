import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from dashboard import env, roles
from dashboard.devtools.devrun import read_dotenv

ROOT = Path(__file__).resolve().parents[2]
PROD = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "k" * 20 + "Q7#x9!mZp2@Lw4$Rt8^Yb6&Nc1*Hv3(Jd5)" + "s" * 10,
    "DJANGO_ALLOWED_HOSTS": "dashboard.example.com",
    "DATABASE_URL": "postgres://u@db.example.com/dashboard",
    "REDIS_URL": "rediss://default_ro@eu1-lucia.upstash.io:6379",
    "CELERY_BROKER_URL": "redis://broker.internal:6379/0",
    "CACHE_URL": "redis://broker.internal:6379/1",
}


def _manage(*args, **overrides):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REDIS_", "CELERY_", "CACHE_"))}
    environ.update(PROD, **overrides)
    environ = {k: v for k, v in environ.items() if v is not None}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_production_settings_pass_the_deploy_check():
    result = _manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_the_deploy_check_fails_with_a_weak_key_and_debug():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", DJANGO_DEBUG="1", DJANGO_SECRET_KEY="short")
    assert result.returncode != 0
    assert "security.W018" in result.stderr and "security.W009" in result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage("check", DJANGO_SECRET_KEY=None)
    assert result.returncode != 0
    assert "Set the environment variable DJANGO_SECRET_KEY" in result.stderr


def test_the_monitored_keyspace_may_not_share_a_database_with_the_broker():
    result = _manage("check", CELERY_BROKER_URL="rediss://default_ro@eu1-lucia.upstash.io:6379/0")
    assert result.returncode != 0
    assert "CELERY_BROKER_URL and REDIS_URL point at the same Redis database" in result.stderr


def test_the_old_all_private_targets_switch_fails_loudly():
    # A deployment that still sets it would otherwise lose its internal receiver in silence.
    result = _manage("check", ALERT_ALLOW_PRIVATE_TARGETS="1")
    assert result.returncode != 0
    assert "ALERT_ALLOW_PRIVATE_TARGETS is gone" in result.stderr and "ALERT_ALLOWED_PRIVATE_HOSTS" in result.stderr
    allowed = _manage("check", ALERT_ALLOW_PRIVATE_TARGETS="0", ALERT_ALLOWED_PRIVATE_HOSTS="alerts.internal")
    assert allowed.returncode == 0, allowed.stderr


def test_a_secret_can_come_from_a_file(tmp_path, monkeypatch):
    (tmp_path / "key").write_text("from-a-file\n")
    monkeypatch.setenv("SOME_SECRET_FILE", str(tmp_path / "key"))
    assert env.env_str("SOME_SECRET") == "from-a-file"


@pytest.mark.parametrize("helper,value", [(env.env_bool, "maybe"), (env.env_int, "ten"), (env.env_float, "x")])
def test_bad_values_fail_loudly(helper, value, monkeypatch):
    monkeypatch.setenv("SOME_SETTING", value)
    with pytest.raises(ImproperlyConfigured, match="SOME_SETTING"):
        helper("SOME_SETTING", 1)


def test_dotenv_values_never_override_the_real_environment(tmp_path):
    (tmp_path / ".env").write_text("# comment\nA=1\nB='two'\n\nbad line\n")
    assert read_dotenv(tmp_path / ".env") == {"A": "1", "B": "two"}


def test_ensure_admin_creates_the_first_admin_once(db, monkeypatch, capsys):
    from django.contrib.auth import get_user_model

    monkeypatch.setenv("DASHBOARD_ADMIN_PASSWORD", "a-long-admin-password")
    call_command("ensure_admin")
    admin = get_user_model().objects.get(username="admin")
    assert roles.role_of(admin) == "admin"
    assert admin.check_password("a-long-admin-password")
    assert "a-long-admin-password" not in capsys.readouterr().out
    call_command("ensure_admin")
    assert "nothing to do" in capsys.readouterr().out
    assert get_user_model().objects.count() == 1


def test_ensure_admin_prints_a_generated_password_once(db, monkeypatch, capsys):
    from django.contrib.auth import get_user_model

    monkeypatch.delenv("DASHBOARD_ADMIN_PASSWORD", raising=False)
    call_command("ensure_admin")
    out = capsys.readouterr().out
    password = out.split("password: ")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)
