"""Single sign-on's configuration: the environment variables, their refusals, and
`manage.py check --deploy` warning when SSO is on without HTTPS."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from dashboard import env, roles
from dashboard.sso import provider

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
SSO = {"OIDC_ISSUER": "https://login.example.com/realms/lucia", "OIDC_CLIENT_ID": "continuity",
       "OIDC_CLIENT_SECRET": "s3cret-from-the-provider-0123456789", "OIDC_GROUP_ROLES": "dashboard-admins=admin"}


def _manage(*args, **overrides):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REDIS_", "CELERY_", "CACHE_", "OIDC_"))}
    environ.update(PROD, **overrides)
    environ = {k: v for k, v in environ.items() if v is not None}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_the_deploy_check_warns_when_sso_is_on_without_https():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", DJANGO_HTTPS="0", **SSO)
    assert result.returncode != 0
    assert "dashboard.W001" in result.stderr and "Single sign-on is configured (OIDC_ISSUER) without HTTPS" in result.stderr
    assert "DJANGO_HTTPS is off" in result.stderr


def test_the_deploy_check_passes_with_sso_over_https():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **SSO)
    assert result.returncode == 0, result.stderr
    assert "dashboard.W001" not in result.stderr


def test_sso_without_a_group_mapping_fails_at_start():
    result = _manage("check", **{**SSO, "OIDC_GROUP_ROLES": ""})
    assert result.returncode != 0 and "OIDC_GROUP_ROLES is empty: nobody could sign in" in result.stderr


def test_an_unresolved_1password_reference_as_the_client_secret_fails_at_start_without_echoing_it():
    result = _manage("check", **{**SSO, "OIDC_CLIENT_SECRET": "op://Lucia/SSO client/secret"})
    assert result.returncode != 0
    assert "OIDC_CLIENT_SECRET holds a 1Password reference, not the secret: start the process under `op run`" in (
        result.stderr)
    assert "SSO client" not in result.stderr


def test_the_client_secret_may_come_from_a_file(tmp_path, monkeypatch):
    path = tmp_path / "oidc-secret"
    path.write_text("from-a-file-0123456789\n")
    monkeypatch.delenv("OIDC_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("OIDC_CLIENT_SECRET_FILE", str(path))
    assert env.env_secret("OIDC_CLIENT_SECRET", "") == "from-a-file-0123456789"


@pytest.mark.parametrize("value, expected", [
    ("dashboard-admins=admin,sre=operator, oncall = viewer", {"dashboard-admins": "admin", "sre": "operator",
                                                              "oncall": "viewer"}),
    ("cn=ops,ou=groups,dc=lucia=operator;cn=leads,ou=groups,dc=lucia=Admin",
     {"cn=ops,ou=groups,dc=lucia": "operator", "cn=leads,ou=groups,dc=lucia": "admin"}),
    ("", {}),
])
def test_it_reads_the_group_to_role_mapping(monkeypatch, value, expected):
    monkeypatch.setenv("OIDC_GROUP_ROLES", value)
    assert env.env_group_roles("OIDC_GROUP_ROLES", roles.ROLES) == expected


@pytest.mark.parametrize("value, message", [("dashboard-admins=root", "'root' is not a role"),
                                            ("dashboard-admins", "write each entry as group=role")])
def test_it_refuses_a_mapping_it_cannot_read(monkeypatch, value, message):
    monkeypatch.setenv("OIDC_GROUP_ROLES", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        env.env_group_roles("OIDC_GROUP_ROLES", roles.ROLES)


def test_the_settings_know_the_roles_of_dashboard_roles():
    settings_text = (ROOT / "dashboard" / "settings.py").read_text()
    assert 'env_group_roles("OIDC_GROUP_ROLES", ("viewer", "operator", "admin"))' in settings_text
    assert roles.ROLES == ("viewer", "operator", "admin")


def test_the_strongest_mapped_role_wins(settings):
    settings.OIDC_GROUPS_CLAIM = "groups"
    mapping = {"a": "viewer", "b": "admin", "c": "operator"}
    assert provider.role_for(["a", "c"], mapping) == "operator"
    assert provider.role_for(["c", "b", "x"], mapping) == "admin"
    assert provider.role_for(["x"], mapping) is None and provider.role_for([], mapping) is None
    assert provider.groups_of({"groups": "b"}) == ["b"] and provider.groups_of({}) == []
