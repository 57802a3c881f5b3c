"""Small environment helpers that fail loudly on bad values."""

import ipaddress
import os
from urllib.parse import parse_qs, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name):
    """The value of NAME, or the contents of the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read: {exc.strerror}") from exc
    return os.environ.get(name)


def env_str(name, default=None):
    value = _raw(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"Set the environment variable {name} (see .env.example).")
        return default
    return value


def env_value(name):
    """The value of NAME (or of the file NAME_FILE names), "" when unset or unreadable. For
    credentials read when they are used: never kept in settings, stored, logged or shown."""
    try:
        return (_raw(name) or "").strip()
    except ImproperlyConfigured:
        return ""


def env_bool(name, default):
    value = _raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0, true/false, yes/no or on/off, not {value!r}.")


def env_int(name, default):
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


def env_float(name, default):
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.") from None


def env_list(name, default):
    value = env_str(name, default) if default != "" else (_raw(name) or "")
    return [item.strip() for item in value.split(",") if item.strip()]


REDIS_SCHEMES = ("redis", "rediss", "unix")

# Variables a monitored Redis URL may never be read from: the dashboard's own connections
# and settings. Anything else must end in _URL (REDIS_URL, UPSTASH_REDIS_URL, KV_URL, ...).
OWN_VARIABLES = frozenset({"DATABASE_URL", "DATABASE_OWNER_URL", "CELERY_BROKER_URL", "CACHE_URL",
                           "DASHBOARD_BASE_URL"})
OWN_PREFIXES = ("DJANGO_", "DATABASE_", "CELERY_", "DASHBOARD_", "AXES_", "ALERT_")


def redis_url_problem(url):
    """Why `url` is not a usable Redis URL, or "". Never quotes any part of the value:
    a variable named by an operator may hold any secret."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "its value is not a valid URL"
    if parts.scheme not in REDIS_SCHEMES:
        return "its value is not a Redis URL (redis://, rediss:// or unix://)"
    return ""


def redis_url_env_problem(name):
    """Why the environment variable `name` may not hold a monitored Redis URL, or "".
    Checks the name, and the value's scheme when it is set (never echoing the value)."""
    return _url_env_problem(name, "a monitored Redis URL", "the Redis URL (e.g. REDIS_URL)", redis_url_problem)


def _url_env_problem(name, what, holds, value_problem):
    """Why the variable `name` may not hold `what`: one of the dashboard's own, not named
    *_URL, or set to a value `value_problem` refuses (never echoed); "" when it may."""
    if _own(name):
        return f"{name} is one of the dashboard's own settings, not {what}"
    if not name.endswith("_URL"):
        return f"{name} does not end in _URL; name the variable that holds {holds}"
    value = os.environ.get(name)
    problem = value_problem(value) if value else ""
    return f"{name} is set, but {problem}" if problem else ""


REST_SCHEMES = ("https", "http")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def rest_url_problem(url):
    """Why `url` cannot be an Upstash REST endpoint, or "" (never quoting the value). Plain
    http:// is refused except on loopback (the local bridge): the token travels in every request."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "its value is not a valid URL"
    if parts.scheme not in REST_SCHEMES or not parts.hostname:
        return "its value is not an https:// URL"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "its value carries credentials or a query; the token belongs in the token variable"
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_NAMES:
        return "its value is a plain http:// URL off this machine, where the token would travel unencrypted"
    return ""


def _own(name):
    return name in OWN_VARIABLES or name.startswith(OWN_PREFIXES)


def rest_url_env_problem(name):
    """Why the environment variable `name` may not hold a REST URL, or "" (value checked, never echoed)."""
    return _url_env_problem(name, "a REST URL", "the REST URL (e.g. UPSTASH_REDIS_REST_URL)", rest_url_problem)


def rest_token_env_problem(name):
    """Why the environment variable `name` may not hold a REST token, or "" (never echoing it)."""
    if _own(name):
        return f"{name} is one of the dashboard's own settings, not a REST token"
    if not name.endswith("_TOKEN"):
        return f"{name} does not end in _TOKEN; name the variable that holds the REST token (e.g. UPSTASH_REDIS_REST_TOKEN)"
    value = os.environ.get(name)
    if value and (value != value.strip() or any(ch.isspace() for ch in value)):
        return f"{name} is set, but its value contains whitespace"
    return ""


def rest_target(url):
    """What a REST URL reaches, spelled one way: ("rest", canonical host, port, path)."""
    if rest_url_problem(url):
        raise ImproperlyConfigured("Not a REST URL.")
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return ("rest", _canonical_host(parts.hostname), port, parts.path.rstrip("/"))


UPSTASH_DOMAIN = ".upstash.io"


def upstash_database(url):
    """The host of an Upstash database named by a TCP or REST URL, or None: Upstash serves one
    database's TCP and REST endpoints on one host name, so two URLs on it reach the same keys."""
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return None
    return host if host.endswith(UPSTASH_DOMAIN) else None


def redis_target(url):
    """(host, port, db) of a Redis URL: what must differ between the three roles."""
    problem = redis_url_problem(url)
    if problem:
        raise ImproperlyConfigured(f"Not a Redis URL: {problem}.")
    parts = urlsplit(url)
    db = (parts.path or "/0").strip("/") or "0"
    return (parts.hostname or parts.path, parts.port or 6379, db)


def _canonical_host(host):
    """One spelling per host: lower case, no trailing dot, IP addresses in their compressed
    form (an IPv4-mapped IPv6 address as its IPv4), and every loopback or unspecified address
    (localhost, 127.0.0.0/8, ::1, 0.0.0.0) as "loopback": they all reach this machine."""
    host = (host or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return "loopback" if address.is_loopback or address.is_unspecified else address.compressed


def keyspace_target(url):
    """What a Redis URL reaches, spelled one way: (host, port, db) with the host canonical
    (`_canonical_host`), or ("unix", real socket path, db). Two URLs with the same target
    name the same keys, whatever their scheme, user or password. No DNS lookup: a hosted
    provider serves many databases behind one address."""
    if redis_url_problem(url):
        raise ImproperlyConfigured("Not a Redis URL.")
    parts = urlsplit(url)
    if parts.scheme == "unix":
        db = (parse_qs(parts.query).get("db") or ["0"])[0]
        return ("unix", os.path.realpath(parts.path), db)
    db = (parts.path or "/0").strip("/") or "0"
    return (_canonical_host(parts.hostname), parts.port or 6379, db)


def env_secret(name, default=None):
    """A secret from NAME or NAME_FILE. A 1Password reference (op://…) left unresolved is
    refused: `op run -- …` resolves the references in the environment before the process
    starts, so one seen here means the dashboard was started without it."""
    value = env_str(name, default)
    if value and value.strip().startswith("op://"):
        raise ImproperlyConfigured(
            f"{name} holds a 1Password reference, not the secret: start the process under `op run` "
            f"(it resolves op:// references in the environment), or put the secret in a file named by {name}_FILE.")
    return value


def env_group_roles(name, roles):
    """A `group=role` list (NAME): `;`-separated, or `,`-separated when no `;` is used (use `;`
    when a group name holds a comma, as LDAP DNs do). Returns {group: role}; every role must be
    one of `roles`."""
    value = (_raw(name) or "").strip()
    mapping = {}
    for item in value.split(";" if ";" in value else ","):
        item = item.strip()
        if not item:
            continue
        group, sep, role = item.rpartition("=")
        group, role = group.strip(), role.strip().lower()
        if not sep or not group:
            raise ImproperlyConfigured(f"{name}: write each entry as group=role (e.g. dashboard-admins=admin), "
                                       f"not {item!r}.")
        if role not in roles:
            raise ImproperlyConfigured(f"{name}: {role!r} is not a role; use one of {', '.join(roles)}.")
        mapping[group] = role
    return mapping
