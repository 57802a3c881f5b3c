"""Jobs against a Postgres that goes away for a moment (a restart, a failover).

A purge or review writes a checkpoint to Postgres every fraction of a second while its
real work happens in Redis. `ride_through` lets such a write survive a short outage: it
closes the broken connection and tries again with backoff, for at most
JOB_DB_OUTAGE_SECONDS, then raises `PostgresAway` so the job can stop as resumable
instead of failing. `describe_outage` names Postgres in the message, never "Redis".
"""

import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

# What a lost or refused Postgres connection raises through Django.
GONE = (OperationalError, InterfaceError)
FIRST_DELAY_SECONDS, MAX_DELAY_SECONDS = 0.2, 5.0


class PostgresAway(Exception):
    """Postgres stayed unreachable for longer than the bound; the job must stop."""

    def __init__(self, seconds, cause):
        self.seconds, self.cause = seconds, cause
        super().__init__(f"Postgres was unreachable for more than {seconds:g} s ({_first_line(cause)})")


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def forget_connection():
    """Drop the broken connection, so the next query opens a new one."""
    try:
        connection.close()
    except GONE:  # closing a dead socket may complain; the wrapper is reset all the same
        pass


def ride_through(call, *, bound=None, sleep=time.sleep, clock=time.monotonic):
    """`call()`, retried while Postgres is unreachable: the connection is closed and
    opened again after 0.2 s, 0.4 s, … (at most 5 s apart) until `bound` seconds
    (JOB_DB_OUTAGE_SECONDS) after the first failure; then PostgresAway. `call` must be
    safe to repeat (a conditional UPDATE of the same values is). Inside an outer
    transaction nothing can be retried: the error propagates as it is."""
    bound = settings.JOB_DB_OUTAGE_SECONDS if bound is None else bound
    started, delay = None, FIRST_DELAY_SECONDS
    while True:
        try:
            return call()
        except GONE as exc:
            if connection.in_atomic_block:
                raise
            forget_connection()
            now = clock()
            started = now if started is None else started
            left = bound - (now - started)
            if left <= 0:
                raise PostgresAway(bound, exc) from exc
            sleep(min(delay, left))
            delay = min(delay * 2, MAX_DELAY_SECONDS)


def describe_outage(exc):
    """An operator's message for a Postgres failure, or None when `exc` is not one."""
    if isinstance(exc, PostgresAway):
        return str(exc)
    if isinstance(exc, GONE):
        return f"Postgres is unreachable: {_first_line(exc)}"
    return None


def let_go(release):
    """Call `release()` (hand a job's claim back) when Postgres answers; when it does not,
    the claim's lease lapses by itself and the resume job takes the run then."""
    try:
        return release()
    except GONE:
        forget_connection()
        return False
