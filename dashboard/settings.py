"""Settings for the continuity dashboard.

Twelve-factor: every difference between deployments is an environment variable with a
safe local default, documented in `.env.example`. A secret may also come from a file named
by `<NAME>_FILE` (Docker/Kubernetes secrets). Bad values fail loudly at start-up.
"""

import ipaddress
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import (env_bool, env_float, env_group_roles, env_int, env_list, env_secret, env_str,
                           redis_target)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str(
    "DJANGO_SECRET_KEY",
    # Only a local DEBUG run may fall back to a fixed development key.
    default="insecure-local-development-key-do-not-use-in-production" if DEBUG else None,
)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# Where the dashboard is reached, for absolute links in alerts (https://dashboard.example.com).
DASHBOARD_BASE_URL = env_str("DASHBOARD_BASE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "template_partials",
    "django_htmx",
    "bulma",
    "axes",
    "django_celery_beat",
    "django_celery_results",
    "dashboard",
    "continuity",
]

MIDDLEWARE = [
    # First: every response gets the security headers and a request id, the redirects,
    # static files and 503s that the middlewares below answer by themselves included.
    "dashboard.middleware.SecurityHeadersMiddleware",
    "dashboard.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "dashboard.middleware.PostgresUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # An SSO session older than OIDC_SESSION_REFRESH_SECONDS goes back to the provider first.
    "dashboard.sso.middleware.SessionRefreshMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "dashboard.middleware.PasswordChangeRequiredMiddleware",
    "dashboard.middleware.LogContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a lockout into a response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "builtins": ["template_partials.templatetags.partials", "dashboard.templatetags.when"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.dashboard",
            ],
        },
    },
]

# --- Postgres: the durable, audited records --------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "postgres://dashboard@127.0.0.1:5432/dashboard"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: three roles, three databases, never shared -----------------------------------
# REDIS_URL is the monitored Lucia keyspace (the runbook's name for it). Database records
# name the env var that holds their URL and read it at connect time; REDIS_URL is the
# default that `seed_runbook` gives the `lucia` record.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")
CACHE_URL = env_str("CACHE_URL", "redis://127.0.0.1:6379/2")
REDIS_CA_FILE = env_str("REDIS_CA_FILE", "")
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 2.0)
REDIS_READ_TIMEOUT = env_float("REDIS_READ_TIMEOUT", 2.0)
# Key browser bounds: keys examined per request (sum of SCAN COUNT hints), rows per page,
# and the largest string value offered for download.
KEYSPACE_SCAN_BUDGET = env_int("KEYSPACE_SCAN_BUDGET", 10_000)
KEYSPACE_PAGE_SIZE = env_int("KEYSPACE_PAGE_SIZE", 200)
KEYSPACE_DOWNLOAD_CAP = env_int("KEYSPACE_DOWNLOAD_CAP", 1024 * 1024)


_roles = {"REDIS_URL": REDIS_URL, "CELERY_BROKER_URL": CELERY_BROKER_URL, "CACHE_URL": CACHE_URL}
_seen = {}
for _name, _url in _roles.items():
    _target = redis_target(_url)
    if _target in _seen:
        raise ImproperlyConfigured(
            f"{_name} and {_seen[_target]} point at the same Redis database {_target}: the monitored "
            "keyspace, the Celery broker and the cache must use separate databases, so that a purge "
            "can never reach Celery's keys."
        )
    _seen[_target] = _name

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": "dashboard",
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_READ_TIMEOUT,
        },
    }
}

# --- Alerts (channels are configured in the dashboard by admins) ------------------------
# A TTL review alerts when its findings reach this many (after a review below it).
ALERT_REVIEW_FINDINGS_THRESHOLD = env_int("ALERT_REVIEW_FINDINGS_THRESHOLD", 1)
# A monitored Redis unreachable for this long is alerted (checked every minute by beat).
ALERT_REDIS_DOWN_MINUTES = env_int("ALERT_REDIS_DOWN_MINUTES", 5)
# A monitored Redis whose keys drop by more than this share between two keyspace-watch checks
# (a minute apart) has lost data: alerted once as keyspace.lost. 0.5: half the keys gone.
ALERT_KEYSPACE_LOSS_SHARE = env_float("ALERT_KEYSPACE_LOSS_SHARE", 0.5)
if not 0 < ALERT_KEYSPACE_LOSS_SHARE < 1:
    raise ImproperlyConfigured("ALERT_KEYSPACE_LOSS_SHARE must be between 0 and 1 (0.5: half the keys gone).")
# Alert webhooks go to public addresses only (dashboard/webhooks.py): otherwise a channel
# reaches the metadata service or the LAN. Name an internal receiver here: host names as
# written in the webhook URL, or IP addresses, comma-separated.
ALERT_ALLOWED_PRIVATE_HOSTS = env_list("ALERT_ALLOWED_PRIVATE_HOSTS", "")
if env_bool("ALERT_ALLOW_PRIVATE_TARGETS", False):
    raise ImproperlyConfigured("ALERT_ALLOW_PRIVATE_TARGETS is gone: name the internal receiver's host "
                               "in ALERT_ALLOWED_PRIVATE_HOSTS instead.")

# --- Sources of truth (README, "Sources of truth") ----------------------------------------
# 1Password Connect (OP_CONNECT_HOST, OP_CONNECT_TOKEN) and the Upstash Developer API
# (UPSTASH_EMAIL, UPSTASH_API_KEY, optional UPSTASH_API_URL) are read when a check runs
# (dashboard.sources), never here. A 1Password item that changed more than this long after the
# last recorded rotation is "changed, not recorded".
ONEPASSWORD_CHANGE_GRACE_HOURS = env_float("ONEPASSWORD_CHANGE_GRACE_HOURS", 24)

# --- Celery ------------------------------------------------------------------------------
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600)
# Must exceed the longest task, or an acks_late task is delivered twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# A review or purge still queued this long after it was sent shows "never started — retry":
# no worker took its task (workers or broker down, or the task lost). A busy worker may keep a
# task waiting behind a long job: set this above your longest queue wait.
JOB_NEVER_STARTED_SECONDS = env_int("JOB_NEVER_STARTED_SECONDS", 300)

# TTL reviews: SCAN COUNT per batch, checkpoint every N batches, and the lease after which
# a running review whose worker stopped checkpointing may be resumed by another worker.
REVIEW_SCAN_COUNT = env_int("REVIEW_SCAN_COUNT", 1000)
REVIEW_CHECKPOINT_BATCHES = env_int("REVIEW_CHECKPOINT_BATCHES", 20)
REVIEW_LEASE_SECONDS = env_int("REVIEW_LEASE_SECONDS", 120)
REVIEW_TASK_MAX_RETRIES = env_int("REVIEW_TASK_MAX_RETRIES", 5)
# Keys a sampled review draws at random (the 15-minute schedule; `ttl_review --sample N`).
REVIEW_SAMPLE_SIZE = env_int("REVIEW_SAMPLE_SIZE", 2000)
# No script call of a job may keep Redis busy longer than this: batches are sized from the
# measured time per key (Upstash runs a script on undeclared keys under its global lock).
SCRIPT_BUDGET_MS = env_float("SCRIPT_BUDGET_MS", 10.0)
# Pay-as-you-go price per 100,000 commands (Upstash: 0.20 USD), for the cost estimates.
REDIS_PRICE_PER_100K_COMMANDS = env_float("REDIS_PRICE_PER_100K_COMMANDS", 0.20)

# --- Purges ------------------------------------------------------------------------------
# Keys per second a purge may touch (0 = no cap): one 1000-key UNLINK blocks Redis for well
# under a millisecond, so 250k keys/s keeps a purge to a fraction of the server's time.
PURGE_RATE_CAP = env_int("PURGE_RATE_CAP", 250_000)
# SCAN COUNT per batch; the keys of a batch that match are acted on in one script call. 3000
# measured faster than 1000 at 1M keys (docs/benchmarks.md) and still blocks Redis ~1 ms a call.
PURGE_BATCH_SIZE = env_int("PURGE_BATCH_SIZE", 3000)
PURGE_LEASE_SECONDS = env_int("PURGE_LEASE_SECONDS", 60)  # a silent worker's run may be resumed after this
PURGE_CHECKPOINT_SECONDS = env_float("PURGE_CHECKPOINT_SECONDS", 0.5)  # Postgres progress; Redis keeps exact totals
# Previews nobody confirmed are deleted (with their stored key lists) after this long.
PURGE_PREVIEW_RETENTION_SECONDS = env_int("PURGE_PREVIEW_RETENTION_SECONDS", 86400)
# A purge estimate uses the latest TTL review's counts while it is younger than this; else DBSIZE.
PURGE_ESTIMATE_MAX_AGE_SECONDS = env_int("PURGE_ESTIMATE_MAX_AGE_SECONDS", 3600)
PURGE_TASK_MAX_RETRIES = env_int("PURGE_TASK_MAX_RETRIES", 5)  # while Redis is down, with exponential backoff
# How long a purge or review keeps retrying its checkpoint while Postgres is unreachable
# (a restart, a failover) before it stops as resumable (never failed): dashboard.postgres.
JOB_DB_OUTAGE_SECONDS = env_float("JOB_DB_OUTAGE_SECONDS", 30)

# --- Single sign-on: OpenID Connect (dashboard.sso, README "Single sign-on") -----------------
# On when OIDC_ISSUER is set. The provider's endpoints come from its discovery document
# (OIDC_DISCOVERY_URL, by default the issuer's /.well-known/openid-configuration), whose issuer
# must be OIDC_ISSUER exactly. The client secret: OIDC_CLIENT_SECRET, OIDC_CLIENT_SECRET_FILE,
# or an op:// reference resolved by `op run`; never stored in Postgres, never logged.
OIDC_ISSUER = env_str("OIDC_ISSUER", "")
SSO_ENABLED = bool(OIDC_ISSUER)
OIDC_DISCOVERY_URL = env_str("OIDC_DISCOVERY_URL", "") or (
    f"{OIDC_ISSUER.rstrip('/')}/.well-known/openid-configuration" if SSO_ENABLED else "")
OIDC_RP_CLIENT_ID = env_str("OIDC_CLIENT_ID", None if SSO_ENABLED else "")
OIDC_RP_CLIENT_SECRET = env_secret("OIDC_CLIENT_SECRET", None if SSO_ENABLED else "")
OIDC_RP_SIGN_ALGO = env_str("OIDC_SIGN_ALGORITHM", "RS256")
OIDC_RP_SCOPES = env_str("OIDC_SCOPES", "openid email profile groups")
# The claim holding the person's groups, and which role each group gives ("group=role,…"; a
# person in several groups gets the strongest role; in none, they are refused).
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
OIDC_GROUP_ROLES = env_group_roles("OIDC_GROUP_ROLES", ("viewer", "operator", "admin"))
if SSO_ENABLED and not OIDC_GROUP_ROLES:
    raise ImproperlyConfigured("OIDC_ISSUER is set but OIDC_GROUP_ROLES is empty: nobody could sign in. "
                               "Map the provider's groups to roles, e.g. dashboard-admins=admin,sre=operator.")
# The role is evaluated again (a silent round trip to the provider) this often.
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env_int("OIDC_SESSION_REFRESH_SECONDS", 900)
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", "single sign-on")
# Local accounts stay for break-glass: `all` (default) or `admins` (only admins sign in with a
# password while SSO is on).
SSO_LOCAL_LOGIN = env_str("SSO_LOCAL_LOGIN", "all").strip().lower()
if SSO_LOCAL_LOGIN not in ("all", "admins"):
    raise ImproperlyConfigured(f"SSO_LOCAL_LOGIN must be all or admins, not {SSO_LOCAL_LOGIN!r}.")
OIDC_VERIFY_SSL = env_str("OIDC_CA_FILE", "") or True  # a CA bundle for a private provider
OIDC_TIMEOUT = 10
OIDC_USE_PKCE = True
OIDC_STORE_ACCESS_TOKEN = OIDC_STORE_ID_TOKEN = False  # nothing of a token is kept in the session
OIDC_CALLBACK_CLASS = "dashboard.sso.views.CallbackView"

# --- Auth --------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: a locked-out address signs in no way
    "dashboard.sso.backends.LocalBackend",
    *(["dashboard.sso.backends.OIDCBackend"] if SSO_ENABLED else []),
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_float("AXES_COOLOFF_HOURS", 0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Failed logins from one IP across all usernames before that IP is locked (dashboard.lockout).
AXES_IP_FAILURE_LIMIT = env_int("AXES_IP_FAILURE_LIMIT", 20)
AXES_HANDLER = "dashboard.lockout.LockoutHandler"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Trusted proxies in front of the app that append to X-Forwarded-For (README, Production).
DJANGO_PROXY_COUNT = env_int("DJANGO_PROXY_COUNT", 0)
AXES_CLIENT_IP_CALLABLE = "dashboard.lockout.client_ip"
# A secret typed as a username is never stored in the lockout tables.
AXES_USERNAME_CALLABLE = "dashboard.lockout.lockout_username"
AXES_VERBOSE = False
# Never stored with a failed attempt: a single sign-on callback's code and state.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "code", "state", "session_state"]

# --- Security ----------------------------------------------------------------------------
# HTTPS is assumed everywhere but a local DEBUG run.
HTTPS = env_bool("DJANGO_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
# Load balancers and kubelets probe over plain HTTP inside the network: a 301 fails them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_HOURS", 12) * 3600
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# No inline or eval'd script anywhere (htmx runs with allowEval off; pygal's chart scripts are
# stripped). Inline styles stay allowed: pygal's SVG charts carry their own <style>.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), midi=(), payment=(), usb=(), serial=(), bluetooth=(), clipboard-read=()"
)
# /healthz for anonymous callers: up/down per component only, computed at most this often.
HEALTHZ_CACHE_SECONDS = env_float("HEALTHZ_CACHE_SECONDS", 5.0)

# --- Prometheus: /metrics (dashboard.monitoring) ----------------------------------------
# Never anonymous: the scraper sends METRICS_TOKEN as a bearer token, or scrapes from one of
# METRICS_ALLOWED_NETWORKS (CIDRs; the client address as DJANGO_PROXY_COUNT makes it). Neither
# set: /metrics refuses every caller.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 24 characters (e.g. python -c "
                               "'import secrets; print(secrets.token_urlsafe(32))').")
try:
    METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network(net, strict=False) for net in env_list("METRICS_ALLOWED_NETWORKS", "")]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS must be comma-separated networks (10.0.0.0/8): {exc}") from None
# Scrapers inside the network speak plain HTTP, and a redirect would protect no token: the
# header was already sent.
SECURE_REDIRECT_EXEMPT.append(r"^metrics$")

# --- Static files ------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

# Plain text by default (`make run`); `json` for a log pipeline: one object per line with the
# request id, user, run id and database (dashboard.logs). Every record of every process, in
# either format, goes through the secret scanner first. Celery's worker and beat get the same
# filters and format on their own handlers (dashboard.celery).
LOG_FORMAT = env_str("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "dashboard.logs.ContextFilter"}, "secrets": {"()": "dashboard.logs.SecretFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "json": {"()": "dashboard.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT,
                             "filters": ["context", "secrets"]}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        "axes": {"level": "WARNING"},
        # Django's own handlers (runserver's access lines, the DEBUG console, mail_admins)
        # would bypass the filters: everything goes through the one handler above.
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
        # httpx logs each request's URL at INFO: a source's or REST endpoint's address stays out
        # of the log (the transport counts requests instead).
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# Bulma's notification colours for Django's message levels.
from django.contrib.messages import constants as _messages  # noqa: E402

MESSAGE_TAGS = {_messages.ERROR: "danger", _messages.DEBUG: "light"}
