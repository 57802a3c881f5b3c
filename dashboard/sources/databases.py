"""Database records against the Upstash account: the check (hourly beat job, "check now",
`manage.py check_sources`), adopting Upstash's value of a drifted setting, and the budget alert.

Each record linked to an Upstash database id (`UpstashLink`) is read with the database's
settings (credentials hidden) and its stats (this month's commands). The record page shows a
drift badge for every compared setting where the record and Upstash disagree; one click adopts
Upstash's value, audited. A failed ask keeps the last answer, marked unverified since the first
failure. When this month's commands, at the pace so far, would cost more than the database's
budget, the admins' channels hear it once per crossing.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from dashboard import alerts, audit, jobs, operations, roles
from dashboard.env import env_value
from dashboard.models import RedisDatabase, UpstashLink
from dashboard.sources import UPSTASH_API_KEY, UPSTASH_EMAIL, NotFound, Unavailable, upstash_api_url, upstash_configured
from dashboard.sources.upstash import DeveloperApi

CHECK_TASK = "dashboard.check_upstash"  # dashboard.tasks.check_upstash_task
# What adopting may write: the compared settings, never what bounds the keyspace (issue 15:
# RedisDatabase.GUARDED_FIELDS are an admin's, with a reason, through operations.save_database;
# test_source_records holds the two sets apart).
COMPARED = dict(UpstashLink.COMPARED)


@dataclass
class DatabasesChecked:
    configured: bool = True
    failure: str = ""
    found: dict = field(default_factory=dict)  # database name: True, False (no such id) or "unverified"
    alerts: list = field(default_factory=list)  # database names whose budget alert went out
    queued: int = 0


def check_databases(*, databases=None, now=None, timeout=None):
    """Check every linked database record (or those of the queryset `databases`) against
    Upstash. Nothing happens when Upstash is not configured."""
    if not upstash_configured():
        return DatabasesChecked(configured=False)
    result = DatabasesChecked()
    links = UpstashLink.objects.select_related("database").exclude(upstash_id="").order_by("database__name")
    if databases is not None:
        links = links.filter(database__in=databases)
    extra = {"timeout": timeout} if timeout else {}
    api = DeveloperApi(upstash_api_url(), env_value(UPSTASH_EMAIL), env_value(UPSTASH_API_KEY), **extra)
    try:
        for link in links:
            name = link.database.name
            answer = stats = None
            if not result.failure:
                try:
                    answer = api.database(link.upstash_id)
                    stats = api.stats(link.upstash_id)
                except NotFound:
                    pass  # no such database (or no stats for it): an answer
                except Unavailable as error:
                    result.failure = error.kind  # the rest would fail alike: stop asking
            at = now or timezone.now()
            if result.failure:
                UpstashLink.objects.filter(pk=link.pk).update(failure=result.failure, failed_at=at)
                UpstashLink.objects.filter(pk=link.pk, unverified_since__isnull=True).update(unverified_since=at)
                result.found[name] = "unverified"
                continue
            _answered(link, answer, stats, at)
            result.found[name] = answer is not None
            _alert_budget(link, result)
    finally:
        api.close()
    return result


def _answered(link, answer, stats, at):
    values = {"found": answer is not None, "checked_at": at, "unverified_since": None, "failure": ""}
    if answer is None:
        values.update(observed={}, observed_name="", anomalies=[], monthly_commands=None, stats_at=None)
    else:
        values.update(observed=answer.values, observed_name=answer.name,
                      anomalies=answer.anomalies + (stats.anomalies if stats else []),
                      monthly_commands=stats.monthly_commands if stats else None, stats_at=at if stats else None)
    UpstashLink.objects.filter(pk=link.pk).update(**values)
    link.refresh_from_db()


def _alert_budget(link, result):
    """Alert once when the month's projected commands pass the budget; re-arm when they no longer do."""
    projection = link.projection(settings.REDIS_PRICE_PER_100K_COMMANDS)
    over = bool(projection and projection.over)
    if over == link.budget_alerted:
        return
    with transaction.atomic():
        if not UpstashLink.objects.filter(pk=link.pk, budget_alerted=link.budget_alerted).update(budget_alerted=over):
            return
        if not over:
            return
        name = link.database.name
        result.alerts.append(name)
        base = getattr(settings, "DASHBOARD_BASE_URL", "").rstrip("/")
        result.queued += alerts.notify(
            event="upstash.budget", title=f"Upstash budget: {name}",
            text=(f"Database {name}: this month's commands at the pace so far ({projection.commands:,}) would cost "
                  f"about ${projection.cost_usd:,.2f}, over its ${projection.budget_usd:,} monthly budget."),
            severity="warning", link=f"{base}{link.database.get_absolute_url()}")


def request_check(*, database, actor):
    """"Check now": queue a check of one database record on the worker (operators). A record
    not linked to an Upstash database has nothing to check: nothing is queued."""
    roles.require_role(actor, roles.OPERATOR)
    with transaction.atomic():
        link, _ = UpstashLink.objects.get_or_create(database=database)
        if not link.upstash_id:
            return link
        UpstashLink.objects.filter(pk=link.pk).update(requested_at=timezone.now())
        jobs.enqueue_on_commit(CHECK_TASK, database.pk)
    link.refresh_from_db()
    return link


def save_link(*, form, actor, request=None, source="web"):
    """Save the Upstash side of a record (its Upstash id and recorded settings), audited. A new
    id is another database: what the last check said about the old one is dropped."""
    if "upstash_id" in form.changed_data:
        for name, value in {"found": None, "observed": {}, "observed_name": "", "anomalies": [],
                            "monthly_commands": None, "stats_at": None, "checked_at": None,
                            "unverified_since": None, "failure": "", "budget_alerted": False}.items():
            setattr(form.instance, name, value)
    return operations.save_record(form=form, action="upstash_link.edit", actor=actor, request=request, source=source)


def adopt(*, database, field_name, actor, request=None, source="web"):
    """Set the record's value of one compared setting to what Upstash last answered, audited
    as database.adopt_upstash. Operators and admins, as any record edit."""
    roles.require_role(actor, roles.OPERATOR)
    if field_name not in COMPARED:
        raise ValidationError("Only a compared setting can be adopted from Upstash.")
    with transaction.atomic():
        locked = RedisDatabase.objects.select_for_update().get(pk=database.pk)
        link = UpstashLink.objects.select_for_update().filter(database=locked).first()
        if link is None or not link.found or field_name not in link.observed:
            raise ValidationError("Upstash's value is not known: check the database first.")
        value = link.observed[field_name]
        target = locked if field_name in UpstashLink.ON_DATABASE else link
        before = getattr(target, field_name)
        setattr(target, field_name, value)
        target.save(update_fields=[field_name, "updated_at"] if target is locked else [field_name])
        audit.record(action="database.adopt_upstash", target=locked, before={field_name: before},
                     after={field_name: value},
                     note=f"Adopted Upstash's {COMPARED[field_name]} (checked {link.checked_at:%Y-%m-%d %H:%M} UTC).",
                     **operations.actor_kwargs(request, actor, source))
    return locked
