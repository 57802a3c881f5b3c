"""Settings of the demo OpenID provider: a separate small Django project (django-oidc-provider)
run as its own process on loopback by `DEMO_SSO=1 make run` and by the SSO tests. Never part
of the dashboard: throwaway accounts in a throwaway SQLite file (IDP_DATA_DIR)."""

import os
import secrets
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ["IDP_DATA_DIR"])

SECRET_KEY = os.environ.get("IDP_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]  # it listens on loopback only

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "oidc_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "dashboard.devtools.idp.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [HERE / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth"]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATA_DIR / "idp.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
# The dashboard and this provider share the host 127.0.0.1 (cookies ignore ports): other names.
SESSION_COOKIE_NAME = "idp_sessionid"
CSRF_COOKIE_NAME = "idp_csrftoken"
LOGIN_URL = "/login/"
# Throwaway demo accounts: a fast hasher keeps the tests' sign-ins quick.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# django-oidc-provider: the issuer is this server's URL + /openid (from the request's host).
OIDC_USERINFO = "dashboard.devtools.idp.claims.userinfo"
OIDC_EXTRA_SCOPE_CLAIMS = "dashboard.devtools.idp.claims.GroupsClaims"
OIDC_IDTOKEN_SUB_GENERATOR = "dashboard.devtools.idp.claims.subject"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"django.server": {"handlers": ["console"], "level": "WARNING", "propagate": False}},
}
