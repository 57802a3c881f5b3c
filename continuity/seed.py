"""The runbook's defaults for the keyspace side: the five namespaces of `lucia` and the
schedules of the continuity jobs. `seed_all` loads them with the records' own defaults
(`dashboard.seed`): `manage.py seed_runbook`. Idempotent; never overwrites what an operator
edited.
"""

import json

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from continuity.models import Namespace
from dashboard import audit
from dashboard import seed as records
from dashboard.models import AuditEntry, RedisDatabase
from dashboard.failure_plan import WATCH_TASK
from dashboard.seed import ACTOR, create_once

MINUTE, HOUR = 60, 3600
NAMESPACES = [
    {"name": "session", "purpose": "Operator session continuity", "sensitive": True,
     "min_ttl_seconds": 15 * MINUTE, "max_ttl_seconds": 60 * MINUTE,
     "fallback_note": "Operator starts a fresh session; no durable data is lost."},
    {"name": "distress", "purpose": "Distress streak + stage", "max_ttl_seconds": 6 * HOUR, "sensitive": True,
     "fallback_note": "Streak restarts at stage 0; the durable record lives in Postgres."},
    {"name": "focus", "purpose": "Pending follow-up context", "max_ttl_seconds": 24 * HOUR,
     "fallback_note": "Follow-up context is rebuilt from Postgres on next contact."},
    {"name": "action", "purpose": "Temporary action coordination", "max_ttl_seconds": HOUR,
     "fallback_note": "Coordination lock lapses; the action may be retried once."},
    {"name": "rate", "purpose": "Optional lightweight rate controls", "max_ttl_seconds": HOUR,
     "fallback_note": "Rate window resets; limits apply again from zero."},
]
MAX_PAYLOAD_BYTES = 16 * 1024


def seed_all():
    """Every seeder in runbook order. Returns {record type: number created}."""
    before_db = RedisDatabase.objects.count()
    before_ns = Namespace.objects.count()
    phases = records.seed_phases()
    database = records.seed_database()
    seed_namespaces(database)
    checklist = records.seed_checklist()
    account = records.seed_account()
    failure_plan = records.seed_failure_plan(database)
    secrets = records.seed_secrets(database)
    env_vars = records.seed_env_vars()
    schedules = (records.seed_rotation_check() + seed_schedules() + seed_health_check() + seed_keyspace_watch()
                 + seed_purge_schedules() + records.seed_source_checks())
    return {
        "databases": RedisDatabase.objects.count() - before_db,
        "namespaces": Namespace.objects.count() - before_ns,
        "phases": phases,
        "checklist items": checklist,
        "accounts": account,
        "failure plans": failure_plan,
        "secrets": secrets,
        "env vars": env_vars,
        "schedules": schedules,
    }


def seed_namespaces(database):
    created = 0
    for spec in NAMESPACES:
        prefix = f"{database.key_prefix}{spec['name']}:"
        defaults = {"prefix": prefix, "ttl_required": True, "max_payload_bytes": MAX_PAYLOAD_BYTES,
                    **{k: v for k, v in spec.items() if k != "name"}}
        _, made = create_once(Namespace, {"database": database, "name": spec["name"]}, defaults, label=prefix)
        created += made
    return created


def seed_schedules():
    """The review schedules (django-celery-beat), created only if missing: "ttl review", a
    sampled review every 15 minutes (REVIEW_SAMPLE_SIZE keys: a cost independent of the
    keyspace), and "ttl review (exact)" every night. An install seeded before sampled
    reviews existed has "ttl review" as an exact review every 15 minutes: if nobody edited
    it (no schedule.update in the audit log), it becomes the sampled one; an edited
    schedule is left as the admin set it, and no exact one is added beside it."""
    sampled_kwargs = json.dumps({"sample": settings.REVIEW_SAMPLE_SIZE})
    every_15, _ = IntervalSchedule.objects.get_or_create(every=15, period=IntervalSchedule.MINUTES)
    existing = PeriodicTask.objects.filter(name="ttl review").first()
    made = 0
    if existing is None:
        made += create_once(PeriodicTask, {"name": "ttl review"},
                            {"task": "continuity.review_all_databases", "interval": every_15, "enabled": True,
                             "kwargs": sampled_kwargs,
                             "description": "Sampled review of every database: estimates with 95% intervals."})[1]
    else:
        edited = AuditEntry.objects.filter(action="schedule.update", target_id=str(existing.pk)).exists()
        if edited:
            return made
        if json.loads(existing.kwargs or "{}").get("sample") is None:
            with transaction.atomic():
                before = audit.snapshot(existing)
                existing.kwargs = sampled_kwargs
                existing.description = "Sampled review of every database: estimates with 95% intervals."
                existing.save()
                audit.record(action="periodictask.seed", target=existing, target_label=existing.name, before=before,
                             after=audit.snapshot(existing), actor_label=ACTOR, source="cli",
                             note="The frequent review is sampled now; an exact one runs nightly.")
    nightly, _ = CrontabSchedule.objects.get_or_create(minute="15", hour="2", day_of_week="*", day_of_month="*",
                                                       month_of_year="*", timezone="UTC")
    made += create_once(PeriodicTask, {"name": "ttl review (exact)"},
                        {"task": "continuity.review_all_databases", "crontab": nightly, "enabled": True,
                         "description": "Exact review of every key of every database, nightly."})[1]
    return int(made)


def seed_health_check():
    """Every minute: ping each monitored Redis and alert when one stays unreachable."""
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    _, made = create_once(PeriodicTask, {"name": "monitored redis check"},
                          {"task": "continuity.check_monitored_redis", "interval": every_minute, "enabled": True,
                           "description": "Alert once when a monitored Redis stays unreachable, once when back."})
    return int(made)


def seed_keyspace_watch():
    """Every minute: look at each monitored Redis and alert once when it lost keys or restarted."""
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    _, made = create_once(PeriodicTask, {"name": "keyspace watch"},
                          {"task": WATCH_TASK, "interval": every_minute, "enabled": True,
                           "description": "Alert once when a monitored Redis loses keys (more than "
                                          "ALERT_KEYSPACE_LOSS_SHARE between checks) or restarts."})
    return int(made)


def seed_purge_schedules():
    """Purge schedules, created only if missing: the policy purge OFF until an admin enables
    it; the resume check (finishes purges whose worker died) every minute."""
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
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)
    created += create_once(PeriodicTask, {"name": "clean up purge previews"},
                           {"task": "continuity.clean_up_previews", "interval": hourly, "enabled": True,
                            "description": "Delete purge previews nobody confirmed within "
                                           "PURGE_PREVIEW_RETENTION_SECONDS, with their stored key lists."})[1]
    return created
