"""Health checks behind /healthz: each role of Postgres and Redis, with latency."""

import threading
import time

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from continuity import keyspace
from dashboard import failure_plan, roles


def _timed(check):
    started = time.perf_counter()
    try:
        detail = check() or {}
    except Exception as exc:  # noqa: BLE001 - every failure is reported, never raised
        return {"ok": False, "error": keyspace.describe_error(exc) if isinstance(exc, redis.RedisError) else str(exc)}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2), **detail}


def _postgres():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _broker():
    client = keyspace.make_client(settings.CELERY_BROKER_URL)
    try:
        client.ping()
        return {"queued": client.llen("celery")}
    finally:
        client.close()


def _cache():
    cache.set("healthz", "1", timeout=10)
    if cache.get("healthz") != "1":
        raise RuntimeError("cache did not return what was written")


def _celery():
    from dashboard.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=0, timeout=settings.REDIS_CONNECT_TIMEOUT)


def run_checks():
    """All checks; `postgres_ok` decides the HTTP status, the rest is reported."""
    checks = {"postgres": _timed(_postgres)}
    if checks["postgres"]["ok"]:
        from dashboard.models import RedisDatabase

        monitored = {}
        for database in RedisDatabase.objects.all():
            health = keyspace.ping(database)
            monitored[database.name] = (
                {"ok": True, "latency_ms": health.latency_ms} if health.ok else {"ok": False, "error": health.error}
            )
        checks["monitored"] = monitored
    else:
        checks["monitored"] = {}
    checks["broker"] = _timed(_broker)
    checks["cache"] = _timed(_cache)
    checks["celery"] = _timed(_celery)
    flat = [checks["postgres"], checks["broker"], checks["cache"], checks["celery"], *checks["monitored"].values()]
    if not checks["postgres"]["ok"]:
        status = failure_plan.DOWN
    elif all(c["ok"] for c in flat):
        status = failure_plan.OK
    else:
        status = failure_plan.DEGRADED
    return status, checks


_public = {"at": None, "result": None}
_public_lock = threading.Lock()


def _word(check):
    return "up" if check["ok"] else "down"


def public_checks():
    """(status, up/down per component) for anonymous callers: no record names, variable
    names, errors or queue lengths, and computed at most every HEALTHZ_CACHE_SECONDS so an
    unauthenticated caller cannot make the dashboard hammer every Redis it knows."""
    now = time.monotonic()
    with _public_lock:
        if _public["at"] is not None and now - _public["at"] < settings.HEALTHZ_CACHE_SECONDS:
            return _public["result"]
    status, checks = run_checks()
    summary = {role: _word(checks[role]) for role in ("postgres", "broker", "cache", "celery")}
    summary["monitored"] = "up" if all(c["ok"] for c in checks["monitored"].values()) else "down"
    result = (status, summary)
    with _public_lock:
        _public.update(at=now, result=result)
    return result


def forget_public_checks():
    with _public_lock:
        _public.update(at=None, result=None)


@login_not_required
@require_GET
@never_cache
def healthz(request):
    """/healthz: every check with details for signed-in staff, up/down for anyone else; the
    HTTP code of its status from `failure_plan.HEALTHZ_CODES` (503 only when Postgres is down),
    which the runbook's failure plan quotes."""
    try:
        staff = roles.has_role(request.user, roles.VIEWER)
    except DatabaseError:  # Postgres down: a signed-in caller's session cannot be read
        staff = False
    status, checks = run_checks() if staff else public_checks()
    return JsonResponse({"status": status, "checks": checks}, status=failure_plan.HEALTHZ_CODES[status])
