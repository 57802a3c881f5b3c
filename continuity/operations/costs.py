"""What the jobs cost a month: each beat schedule's runs per month times its last run's
billed commands, per database (the jobs page shows it before anyone enables a schedule)."""

from dataclasses import dataclass

from continuity.billing import estimated_cost_usd
from continuity.models import PurgeRun, ReviewRun


REVIEW_TASK = "continuity.review_all_databases"
MONTH_SECONDS = 30 * 86400
_PERIOD_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1, "microseconds": 1e-6}


def runs_per_month(task):
    """How often a django-celery-beat PeriodicTask fires in 30 days (enabled or not: the
    page shows what enabling it would cost)."""
    if task.interval_id:
        seconds = task.interval.every * _PERIOD_SECONDS[task.interval.period]
        return int(MONTH_SECONDS / seconds) if seconds > 0 else 0
    if task.crontab_id:
        schedule = task.crontab.schedule  # celery's crontab: each field expanded to a set
        per_day = len(schedule.minute) * len(schedule.hour)
        days = 30 * min(len(schedule.day_of_week) / 7, len(schedule.day_of_month) / 31) * len(schedule.month_of_year) / 12
        return int(per_day * days)
    return 0


# The beat tasks whose runs bill monitored-Redis commands, and how to find the cost of one
# run per database: the latest succeeded run's billed commands.
def last_run_cost(task_name, database):
    """Billed commands of the latest comparable run of `task_name` on `database`, or None."""
    if task_name == REVIEW_TASK:
        run = ReviewRun.objects.for_database(database).succeeded().latest_first().first()
        return run.billed_commands if run else None
    if task_name == "continuity.policy_purge":
        runs = PurgeRun.objects.for_database(database).filter(target_kind=PurgeRun.POLICY,
                                                              status=PurgeRun.SUCCEEDED)
        run = runs.order_by("-finished_at").first()
        return run.billed_commands if run else None
    return None


def review_cost(database):
    """(billed commands, estimated USD) of the latest succeeded review of `database`, the
    best guess of what the next one costs; (None, None) before the first."""
    commands = last_run_cost(REVIEW_TASK, database)
    return commands, estimated_cost_usd(commands)


@dataclass(frozen=True)
class Projection:
    database: str
    runs: int
    commands: int | None  # None: no run to project from yet

    @property
    def cost_usd(self):
        return estimated_cost_usd(self.commands)


def project(task, databases):
    """[Projection] of a month of `task` per database, from each database's last run."""
    runs = runs_per_month(task)
    out = []
    for database in databases:
        per_run = last_run_cost(task.task, database)
        if per_run is None and task.task not in (REVIEW_TASK, "continuity.policy_purge"):
            continue
        out.append(Projection(database.name, runs, None if per_run is None else per_run * runs))
    return out
