"""The records' defaults from the runbook (`shared/reference/upstash-redis-runbook.txt`):
the `lucia` database and its failure plan, account, secrets, env vars, checklist, phases and
the rotation check's schedule. `continuity.seed.seed_all` loads them with the namespaces and
the continuity schedules (`manage.py seed_runbook`).

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
    "rest_url_env": "UPSTASH_REDIS_REST_URL",
    "rest_token_env": "UPSTASH_REDIS_REST_TOKEN",
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
    "alerting_path": "The alert channels under Runbook → Alerts. What the dashboard sends them, and when, is "
                     "listed beside this plan (generated from the dashboard's own code and settings).",
    "expiry_fallback": "An expired key means start fresh: rebuild from Postgres where a durable record exists, "
                       "otherwise begin a new session or streak. Expiry is never an error.",
}

# Defaults seeded by earlier versions that turned out wrong: replaced like a blank field (an
# operator's own text is never touched). /healthz answers 200 "degraded" with Redis down, not 503.
REPLACED_DEFAULTS = {
    "alerting_path": ("The dashboard's 'Redis unreachable' banner and /healthz (503), plus the alert channels "
                      "configured under Runbook → Alerts.",),
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


def seed_failure_plan(database):
    """Fill the failure-plan fields that are still blank, or still hold a default of an earlier
    version that was wrong (REPLACED_DEFAULTS); never replaces an operator's text."""
    blank = {name: value for name, value in FAILURE_PLAN.items()
             if not getattr(database, name) or getattr(database, name) in REPLACED_DEFAULTS.get(name, ())}
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


def seed_source_checks():
    """The beat schedules of the sources-of-truth checks (dashboard.sources), each created only
    if missing and only once its source is configured, so that an install without 1Password or
    Upstash shows no schedule for them: the daily 1Password check, the hourly Upstash check."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from dashboard.sources import onepassword_configured, upstash_configured

    created = 0
    if onepassword_configured():
        daily, _ = CrontabSchedule.objects.get_or_create(minute="45", hour="6", day_of_week="*", day_of_month="*",
                                                         month_of_year="*", timezone="UTC")
        created += create_once(PeriodicTask, {"name": "1password check"},
                               {"task": "dashboard.check_onepassword", "crontab": daily, "enabled": True,
                                "description": "Daily: each secret's reference against 1Password (metadata only)."})[1]
    if upstash_configured():
        hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)
        created += create_once(PeriodicTask, {"name": "upstash check"},
                               {"task": "dashboard.check_upstash", "interval": hourly, "enabled": True,
                                "description": "Hourly: each linked database record against the Upstash account "
                                               "(read only), and this month's commands."})[1]
    return created
