"""Defaults from the runbook (`shared/reference/upstash-redis-runbook.txt`).

Seeding is idempotent and never overwrites what an operator edited: each record is
created only when its natural key is missing, and each creation is audited.
"""

from django.db import transaction

from dashboard import audit
from dashboard.models import AccountAccess, ChecklistItem, EnvVar, PhaseMapping, RedisDatabase, Secret

ACTOR = "seed_runbook"

DATABASE = {
    "name": "lucia",
    "environment": "production",
    "provider": "Upstash",
    "key_prefix": "lucia:",
    "url_env": "REDIS_URL",
    "notes": "Shared short-lived continuity state for hosted Lucia. Redis is the bridge, not the cathedral.",
}

# The runbook leaves these blank to be filled in; these are the team's starting answers.
FAILURE_PLAN = {
    "if_down": "Continuity reads and writes fail fast (short timeouts); each Lucia instance keeps only its "
               "in-process state until Redis is back.",
    "lucia_should": "Fall back to in-process continuity for the current conversation, log the Redis error, "
                    "retry with backoff, and never block a conversation on Redis.",
    "operator_impact": "Sessions may not survive a redeploy or an instance switch; distress streaks and pending "
                       "follow-ups restart from the durable Postgres records.",
    "alerting_path": "The dashboard's 'Redis unreachable' banner and /healthz (503), plus the alert channels "
                     "configured under Runbook → Alerts.",
    "expiry_fallback": "An expired key means start fresh: rebuild from Postgres where a durable record exists, "
                       "otherwise begin a new session or streak. Expiry is never an error.",
}

ACCOUNT = {"provider": "Upstash", "notes": "Fill in the account email, dashboard URL, team and MFA method."}

# The runbook's "Keys and secrets" table. References are left for the operator to record.
SECRETS = [
    {"name": "lucia-rest-url", "title": "REST URL", "rotation_interval_days": 365,
     "purpose": "Upstash REST endpoint of the lucia database (UPSTASH_REDIS_REST_URL)."},
    {"name": "lucia-rest-token", "title": "REST token", "rotation_interval_days": 90,
     "purpose": "Upstash REST token the Engine uses (UPSTASH_REDIS_REST_TOKEN)."},
    {"name": "lucia-redis-password", "title": "password / auth token", "rotation_interval_days": 90,
     "purpose": "Redis password / auth token, if the TCP protocol is used (REDIS_URL, REDIS_TOKEN)."},
]

# The runbook's "Environment variable tracker".
ENV_VARS = [
    {"name": "UPSTASH_REDIS_REST_URL", "used_in": ["Engine"], "required": True, "secret": "lucia-rest-url"},
    {"name": "UPSTASH_REDIS_REST_TOKEN", "used_in": ["Engine"], "required": True, "secret": "lucia-rest-token"},
    {"name": "REDIS_URL", "used_in": ["Dashboard", "Worker"], "required": False, "secret": "lucia-redis-password",
     "notes": "Optional for the Engine. Upstash URLs carry the password: record a reference, or a URL without it."},
    {"name": "REDIS_TOKEN", "used_in": [], "required": False, "secret": "lucia-redis-password",
     "notes": "Optional."},
]

CHECKLIST = {
    1: ["create Upstash account", "create Redis database", "document region", "document endpoint and token references"],
    2: ["define key naming conventions", "define TTL rules", "move in-memory continuity logic to Redis-backed adapter",
        "test continuity across redeploy/restart", "test fallback behavior if Redis is unavailable"],
    3: ["keep only short-lived state here", "avoid overstuffing payloads", "define purge / TTL review policy"],
}

PHASES = [
    {"number": 1, "title": "account access and secret references"},
    {"number": 6, "title": "add shared short-lived continuity/session state for hosted Lucia"},
]
PRIMARY_PAGE = "08 - Live Transition Runbook"

ROTATION_CHECK = {"name": "rotation check", "task": "dashboard.check_rotations"}

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
    defaults = {**{k: v for k, v in DATABASE.items() if k != "name"}, **FAILURE_PLAN}
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


def seed_failure_plan(database):
    """Fill the failure-plan fields that are still blank; never replaces written text."""
    blank = {name: value for name, value in FAILURE_PLAN.items() if not getattr(database, name)}
    if not blank:
        return 0
    with transaction.atomic():
        before = {name: getattr(database, name) for name in blank}
        for name, value in blank.items():
            setattr(database, name, value)
        database.save(update_fields=[*blank, "updated_at"])
        audit.record(action="redisdatabase.seed", target=database, before=before, after=blank,
                     note="failure plan defaults", actor_label=ACTOR, source="cli")
    return 1


def seed_account():
    if AccountAccess.objects.exists():
        return 0
    return int(create_once(AccountAccess, {"provider": ACCOUNT["provider"]}, {"notes": ACCOUNT["notes"]})[1])


def seed_secrets(database):
    created = 0
    for spec in SECRETS:
        defaults = {k: v for k, v in spec.items() if k != "name"}
        created += create_once(Secret, {"name": spec["name"]}, {**defaults, "database": database})[1]
    return created


def seed_env_vars():
    created = 0
    for spec in ENV_VARS:
        defaults = {k: v for k, v in spec.items() if k not in ("name", "secret")}
        defaults["secret"] = Secret.objects.filter(name=spec["secret"]).first()
        created += create_once(EnvVar, {"name": spec["name"]}, defaults)[1]
    return created


def seed_checklist():
    created = 0
    for stage, texts in CHECKLIST.items():
        for position, text in enumerate(texts, start=1):
            created += create_once(ChecklistItem, {"stage": stage, "text": text}, {"position": position})[1]
    return created


def seed_phases():
    created = 0
    for spec in PHASES:
        created += create_once(PhaseMapping, {"number": spec["number"]},
                               {"title": spec["title"], "primary_page": PRIMARY_PAGE})[1]
    return created


def seed_rotation_check():
    """The daily django-celery-beat schedule for the rotation check, created only if missing."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    if PeriodicTask.objects.filter(name=ROTATION_CHECK["name"]).exists():
        return 0
    crontab, _ = CrontabSchedule.objects.get_or_create(minute="0", hour="7", day_of_week="*", day_of_month="*",
                                                       month_of_year="*", timezone="UTC")
    return create_once(PeriodicTask, {"name": ROTATION_CHECK["name"]},
                       {"task": ROTATION_CHECK["task"], "crontab": crontab, "enabled": True,
                        "description": "Daily: alert once per secret rotation-status change."})[1]


def seed_schedules():
    """The review schedules (django-celery-beat), created only if missing: "ttl review", a
    sampled review every 15 minutes (REVIEW_SAMPLE_SIZE keys: a cost independent of the
    keyspace), and "ttl review (exact)" every night. An install seeded before sampled
    reviews existed has "ttl review" as an exact review every 15 minutes: if nobody edited
    it (no schedule.update in the audit log), it becomes the sampled one; an edited
    schedule is left as the admin set it, and no exact one is added beside it."""
    import json

    from django.conf import settings
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from dashboard.models import AuditEntry

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
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    _, made = create_once(PeriodicTask, {"name": "monitored redis check"},
                          {"task": "continuity.check_monitored_redis", "interval": every_minute, "enabled": True,
                           "description": "Alert once when a monitored Redis stays unreachable, once when back."})
    return int(made)


def seed_all():
    """Every seeder in runbook order. Returns {record type: number created}."""
    from continuity.models import Namespace

    before_db = RedisDatabase.objects.count()
    before_ns = Namespace.objects.count()
    phases = seed_phases()
    database = seed_database()
    seed_namespaces(database)
    checklist = seed_checklist()
    account = seed_account()
    failure_plan = seed_failure_plan(database)
    secrets = seed_secrets(database)
    env_vars = seed_env_vars()
    schedules = seed_rotation_check() + seed_schedules() + seed_health_check() + seed_purge_schedules()
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
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)
    created += create_once(PeriodicTask, {"name": "clean up purge previews"},
                           {"task": "continuity.clean_up_previews", "interval": hourly, "enabled": True,
                            "description": "Delete purge previews nobody confirmed within "
                                           "PURGE_PREVIEW_RETENTION_SECONDS, with their stored key lists."})[1]
    return created
