"""What the jobs cost a month: each beat schedule's runs per month times its last run's
billed commands, per database (the jobs page shows it before anyone enables a schedule); and,
where the Upstash account is read, this month's commands as Upstash counted them beside what
the dashboard's own jobs billed."""

import json
from dataclasses import dataclass
from datetime import timezone as dt_timezone

from django.db import models

from continuity import crontabs
from continuity.billing import estimated_cost_usd
from continuity.models import PolicyReport, PurgeRun, ReviewRun
from dashboard.models import UpstashLink


SCHEDULED_REVIEW_TASK = "continuity.review_all_databases"
MONTH_SECONDS = 30 * 86400
_PERIOD_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1, "microseconds": 1e-6}


def runs_per_month(task):
    """How often a django-celery-beat PeriodicTask fires in 30 days (enabled or not: the
    page shows what enabling it would cost); None for a stored crontab that does not parse."""
    return runs_per_month_of(interval=task.interval if task.interval_id else None,
                             crontab=task.crontab if task.crontab_id else None)


def runs_per_month_of(*, interval=None, crontab=None):
    """`runs_per_month` of a schedule that need not be saved: an IntervalSchedule or a
    CrontabSchedule (the schedule form prices what is typed before it is saved)."""
    if interval is not None:
        seconds = interval.every * _PERIOD_SECONDS[interval.period]
        return int(MONTH_SECONDS / seconds) if seconds > 0 else 0
    if crontab is not None:
        schedule = crontabs.parse(crontab)  # celery's crontab: each field expanded to a set
        if schedule is None:
            return None
        per_day = len(schedule.minute) * len(schedule.hour)
        days = 30 * min(len(schedule.day_of_week) / 7, len(schedule.day_of_month) / 31) * len(schedule.month_of_year) / 12
        return int(per_day * days)
    return 0


def review_kind(task):
    """("sampled", its sample size) or ("exact", None) for a review schedule (by its `sample`
    kwarg), None for any other task: every page names which of the two a schedule runs."""
    if task.task != SCHEDULED_REVIEW_TASK:
        return None
    try:
        sample = json.loads(task.kwargs or "{}").get("sample")
    except (ValueError, AttributeError):
        sample = None
    return ("sampled", sample) if sample else ("exact", None)


POLICY_TASK = "continuity.policy_purge"
COSTED_TASKS = (SCHEDULED_REVIEW_TASK, POLICY_TASK)


def last_run_costs(databases):
    """{(task name, database pk): billed commands of the latest succeeded run} for the
    reviews and policy purges of `databases`: two queries, whatever their number. Reviews
    are keyed (SCHEDULED_REVIEW_TASK, pk, sampled): a sampled review costs about its sample, an
    exact one about two commands per key, so neither predicts the other."""
    ids = [database.pk for database in databases]
    out = {}
    reviews = (ReviewRun.objects.filter(database_id__in=ids, status=ReviewRun.SUCCEEDED)
               .order_by("database_id", "sampled", "-finished_at").distinct("database_id", "sampled")
               .values_list("database_id", "sampled", "billed_commands"))
    out.update({(SCHEDULED_REVIEW_TASK, pk, sampled): billed for pk, sampled, billed in reviews})
    purges = (PurgeRun.objects.filter(database_id__in=ids, status=PurgeRun.SUCCEEDED, target_kind=PurgeRun.POLICY)
              .order_by("database_id", "-finished_at").distinct("database_id")
              .values_list("database_id", "billed_commands"))
    out.update({(POLICY_TASK, pk): billed for pk, billed in purges})
    # What the policy purge spends counting its report-only namespaces, beside its runs.
    reports = (PolicyReport.objects.filter(database_id__in=ids).order_by("database_id", "-created_at")
               .distinct("database_id").values_list("database_id", "billed_commands"))
    for pk, billed in reports:
        out[(POLICY_TASK, pk)] = out.get((POLICY_TASK, pk), 0) + billed
    return out


def review_cost(database, last):
    """(billed commands, estimated USD) of the latest succeeded exact review of `database`
    (from `last_run_costs`), the best guess of what "Run review now" (exact) costs next;
    (None, None) before the first."""
    commands = last.get((SCHEDULED_REVIEW_TASK, database.pk, False))
    return commands, estimated_cost_usd(commands)


def _cost_key(task, database):
    """The `last_run_costs` key a run of the beat `task` is priced from: a review schedule
    with a `sample` kwarg by the last sampled review, any other by the last exact one."""
    kind = review_kind(task)
    if kind is None:
        return (task.task, database.pk)
    return (SCHEDULED_REVIEW_TASK, database.pk, kind[0] == "sampled")


@dataclass(frozen=True)
class Projection:
    database: str
    runs: int
    commands: int | None  # None: no run to project from yet
    basis: str = "run"  # projected from the last "run", "sampled review" or "exact review"

    @property
    def cost_usd(self):
        return estimated_cost_usd(self.commands)


def project(task, databases, last, *, runs=None):
    """[Projection] of a month of `task` per database, from each database's last run
    (`last_run_costs`); [] for a task that bills no monitored-Redis command worth counting,
    or whose stored crontab does not parse (the page marks it invalid). `runs`: runs a month
    of a schedule being edited (`runs_per_month_of`), instead of the stored one's."""
    if task.task not in COSTED_TASKS:
        return []
    runs = runs_per_month(task) if runs is None else runs
    if runs is None:
        return []
    out = []
    for database in databases:
        key = _cost_key(task, database)
        per_run = last.get(key)
        basis = "run" if len(key) == 2 else ("sampled review" if key[2] else "exact review")
        out.append(Projection(database.name, runs, None if per_run is None else per_run * runs, basis))
    return out


# --- Upstash's own count beside the dashboard's ----------------------------------------------
@dataclass(frozen=True)
class MonthOnUpstash:
    database: object
    upstash_commands: int  # this month, as Upstash counted them (at `counted_at`)
    counted_at: object
    dashboard_commands: int  # what the dashboard's jobs billed from the month's start to `counted_at`

    @property
    def share(self):
        """The dashboard jobs' share of the month's commands, in %; None when Upstash counted none."""
        return 100 * self.dashboard_commands / self.upstash_commands if self.upstash_commands else None


def billed_between(database, start, end):
    """The billed commands of `database`'s reviews, purges (preview and execution) and policy
    reports created in [start, end)."""
    total = 0
    for queryset, when, fields in (
            (ReviewRun.objects, "created_at", ("billed_commands",)),
            (PurgeRun.objects, "previewed_at", ("billed_commands", "preview_billed_commands")),
            (PolicyReport.objects, "created_at", ("billed_commands",))):
        rows = queryset.filter(database=database, **{f"{when}__gte": start, f"{when}__lt": end})
        sums = rows.aggregate(**{name: models.Sum(name) for name in fields})
        total += sum(value or 0 for value in sums.values())
    return total


def month_on_upstash(databases):
    """[MonthOnUpstash] for each of `databases` whose Upstash stats are known
    (dashboard.sources: the hourly Upstash check keeps them on the record's `UpstashLink`)."""
    out = []
    links = UpstashLink.objects.filter(database__in=databases, found=True, monthly_commands__isnull=False,
                                       stats_at__isnull=False).select_related("database").order_by("database__name")
    for link in links:
        counted_at = link.stats_at.astimezone(dt_timezone.utc)
        start = counted_at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        out.append(MonthOnUpstash(database=link.database, upstash_commands=link.monthly_commands,
                                  counted_at=link.stats_at,
                                  dashboard_commands=billed_between(link.database, start, link.stats_at)))
    return out
