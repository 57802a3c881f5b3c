"""The records' sources of truth (README, "Sources of truth"): 1Password Connect, asked for
metadata only, and the Upstash Developer API, read only. Both are optional.

Each is configured by environment variables whose *values* are read when a check runs
(`dashboard.env.env_value`): never kept in settings, stored, logged or shown. With neither
set, nothing checks, and no page shows either.
"""

from dashboard.env import env_value

OP_CONNECT_HOST, OP_CONNECT_TOKEN = "OP_CONNECT_HOST", "OP_CONNECT_TOKEN"
UPSTASH_EMAIL, UPSTASH_API_KEY, UPSTASH_API_URL = "UPSTASH_EMAIL", "UPSTASH_API_KEY", "UPSTASH_API_URL"
UPSTASH_DEFAULT_API = "https://api.upstash.com"
# Seconds a source may take per request: a check runs on the worker, never in a page.
TIMEOUT_SECONDS = 5.0

UNREACHABLE, TIMED_OUT, BAD_TOKEN, FORBIDDEN, RATE_LIMITED, MALFORMED, SERVER_ERROR = (
    "unreachable", "timed_out", "bad_token", "forbidden", "rate_limited", "malformed", "server_error")
# What a page says about a failed ask. Fixed words: never the source's own message.
FAILURES = {
    UNREACHABLE: "could not be reached",
    TIMED_OUT: "did not answer in time",
    BAD_TOKEN: "refused the credentials (401)",
    FORBIDDEN: "refused access (403)",
    RATE_LIMITED: "asked to slow down (429)",
    MALFORMED: "answered something its API does not document",
    SERVER_ERROR: "answered with a server error",
}


class Unavailable(Exception):
    """The source could not give an answer to trust: `kind` is one of FAILURES."""

    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


class NotFound(Exception):
    """The source answered 404: what was asked for does not exist (an answer, not a failure)."""


def failure_for_status(status):
    """The failure an HTTP error status means (404 is NotFound, not a failure)."""
    if status == 401:
        return BAD_TOKEN
    if status == 403:
        return FORBIDDEN
    if status == 429:
        return RATE_LIMITED
    if status >= 500:
        return SERVER_ERROR
    return MALFORMED


def onepassword_configured():
    """True when both OP_CONNECT_HOST and OP_CONNECT_TOKEN are set."""
    return bool(env_value(OP_CONNECT_HOST) and env_value(OP_CONNECT_TOKEN))


def upstash_configured():
    """True when both UPSTASH_EMAIL and UPSTASH_API_KEY are set."""
    return bool(env_value(UPSTASH_EMAIL) and env_value(UPSTASH_API_KEY))


def upstash_api_url():
    return (env_value(UPSTASH_API_URL) or UPSTASH_DEFAULT_API).rstrip("/")
