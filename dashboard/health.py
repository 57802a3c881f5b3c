"""Health checks behind /healthz: each role of Postgres and Redis, with latency."""

import time

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from continuity import keyspace


def _timed(check):
    started = time.perf_counter()
    try:
        detail = check() or {}
    except Exception as exc:  # noqa: BLE001 - every failure is reported, never raised
        return {"ok": False, "error": keyspace.describe(exc) if isinstance(exc, redis.RedisError) else str(exc)}
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
        status = "down"
    elif all(c["ok"] for c in flat):
        status = "ok"
    else:
        status = "degraded"
    return status, checks
