"""The one retry policy of the keyspace side's tasks.

A refusal (an ACL, an unknown command, a record that contradicts its server) is final:
retrying bills the same refusal again. A passing failure (Redis unreachable, slow, busy,
over its quota; Postgres away) is retried with `backoff` until the task's last retry.
"""


def backoff(retries):
    """Seconds before retry number `retries` + 1: 5, 10, 20, … capped at 5 minutes."""
    return min(5 * 2**retries, 300)


def retry_or_give_up(task, exc, *, transient, limit, give_up):
    """Retry `task` after `backoff` when `exc` is `transient` and retries are left (raises
    Celery's Retry); else return `give_up(final)` where `final` says whether retries ran
    out (False: a refusal, given up at once)."""
    if transient and task.request.retries < limit:
        raise task.retry(countdown=backoff(task.request.retries), exc=exc) from None
    return give_up(transient)
