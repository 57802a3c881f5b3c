"""Defaults from the runbook (`shared/reference/upstash-redis-runbook.txt`).

Seeding is idempotent and never overwrites what an operator edited: each record is
created only when its natural key is missing, and each creation is audited.
"""

from django.db import transaction

from dashboard import audit
from dashboard.models import RedisDatabase

ACTOR = "seed_runbook"

DATABASE = {
    "name": "lucia",
    "environment": "production",
    "provider": "Upstash",
    "key_prefix": "lucia:",
    "url_env": "REDIS_URL",
    "notes": "Shared short-lived continuity state for hosted Lucia. Redis is the bridge, not the cathedral.",
}

MINUTE, HOUR = 60, 3600
NAMESPACES = [
    {"name": "session", "purpose": "Operator session continuity",
     "min_ttl_seconds": 15 * MINUTE, "max_ttl_seconds": 60 * MINUTE,
     "fallback_note": "Operator starts a fresh session; no durable data is lost."},
    {"name": "distress", "purpose": "Distress streak + stage", "max_ttl_seconds": 6 * HOUR,
     "fallback_note": "Streak restarts at stage 0; the durable record lives in Postgres."},
    {"name": "focus", "purpose": "Pending follow-up context", "max_ttl_seconds": 24 * HOUR,
     "fallback_note": "Follow-up context is rebuilt from Postgres on next contact."},
    {"name": "action", "purpose": "Temporary action coordination", "max_ttl_seconds": HOUR,
     "fallback_note": "Coordination lock lapses; the action may be retried once."},
    {"name": "rate", "purpose": "Optional lightweight rate controls", "max_ttl_seconds": HOUR,
     "fallback_note": "Rate window resets; limits apply again from zero."},
]
MAX_PAYLOAD_BYTES = 16 * 1024


def create_once(model, lookup, defaults, label=None):
    """Create `model(**lookup, **defaults)` unless a row matches `lookup`. Audited."""
    if model.objects.filter(**lookup).exists():
        return None, False
    with transaction.atomic():
        obj = model.objects.create(**lookup, **defaults)
        audit.record(action=f"{model._meta.model_name}.seed", target=obj, target_label=label or str(obj),
                     after=audit.snapshot(obj), actor_label=ACTOR, source="cli")
    return obj, True


def seed_database():
    lookup = {"name": DATABASE["name"]}
    defaults = {k: v for k, v in DATABASE.items() if k != "name"}
    create_once(RedisDatabase, lookup, defaults)
    return RedisDatabase.objects.get(**lookup)


def seed_namespaces(database):
    from continuity.models import Namespace

    created = 0
    for spec in NAMESPACES:
        prefix = f"{database.key_prefix}{spec['name']}:"
        defaults = {"prefix": prefix, "ttl_required": True, "max_payload_bytes": MAX_PAYLOAD_BYTES,
                    **{k: v for k, v in spec.items() if k != "name"}}
        _, made = create_once(Namespace, {"database": database, "name": spec["name"]}, defaults, label=prefix)
        created += made
    return created


def seed_all():
    """Every seeder in runbook order. Returns {record type: number created}."""
    seed_purge_schedules()
    from continuity.models import Namespace

    before_db = RedisDatabase.objects.count()
    before_ns = Namespace.objects.count()
    database = seed_database()
    seed_namespaces(database)
    return {
        "databases": RedisDatabase.objects.count() - before_db,
        "namespaces": Namespace.objects.count() - before_ns,
    }


def seed_purge_schedules():
    """Purge schedules, created only if missing: the policy purge OFF until an admin enables
    it; the resume check (finishes purges whose worker died) every minute."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    nightly, _ = CrontabSchedule.objects.get_or_create(minute="30", hour="3", day_of_week="*", day_of_month="*",
                                                       month_of_year="*", timezone="UTC")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    created = create_once(PeriodicTask, {"name": "policy purge"},
                          {"task": "continuity.policy_purge", "crontab": nightly, "enabled": False,
                           "description": "Apply each namespace's violation action to keys without TTL or "
                                          "above the max TTL. Off until an admin enables it."})[1]
    created += create_once(PeriodicTask, {"name": "resume stalled purges"},
                           {"task": "continuity.resume_purges", "interval": every_minute, "enabled": True,
                            "description": "Finish purges whose worker died mid-run, from their checkpoint."})[1]
    return created
