"""The run id and database of a job task on every log line it writes (dashboard.logs): bound
when the task starts, dropped when it ends. One query per job task, by its run's id."""

from celery.signals import task_postrun, task_prerun

from continuity.models import PurgeRun, ReviewNodeRun, ReviewRun
from continuity.operations import purge, review
from continuity.operations.review_requests import REVIEW_TASK
from dashboard import logs

# Task name -> (the argument holding the id: name and position, and the rows it names).
RUN_ARGUMENTS = {
    REVIEW_TASK: ("run_id", 0, ReviewRun),
    review.FINISH_TASK: ("run_id", 1, ReviewRun),
    review.REVIEW_NODE_TASK: ("node_id", 0, ReviewNodeRun),
    purge.PURGE_TASK: ("run_id", 0, PurgeRun),
    purge.PREVIEW_TASK: ("run_id", 0, PurgeRun),
}
_tokens = {}  # task id -> context token, for task_postrun


def run_context(task, args, kwargs):
    """{run_id, database} of a job task's call, or {} (not a job task, or no such run)."""
    if task.name not in RUN_ARGUMENTS:
        return {}
    argument, position, model = RUN_ARGUMENTS[task.name]
    value = kwargs.get(argument)
    if value is None and position < len(args):
        value = args[position]
    if value is None:
        return {}
    if model is ReviewNodeRun:
        row = ReviewNodeRun.objects.filter(pk=value).values_list("run_id", "run__database__name").first()
    else:
        row = model.objects.filter(pk=value).values_list("pk", "database__name").first()
    return {"run_id": row[0], "database": row[1]} if row else {}


@task_prerun.connect(weak=False, dispatch_uid="continuity.log_context.bind")
def _bind(task_id=None, task=None, args=(), kwargs=None, **_):
    try:
        context = run_context(task, args or (), kwargs or {})
    except Exception:  # noqa: BLE001 - Postgres away: the task itself says so; log without context
        context = {}
    _tokens[task_id] = logs.set_context(**context)


@task_postrun.connect(weak=False, dispatch_uid="continuity.log_context.unbind")
def _unbind(task_id=None, **_):
    token = _tokens.pop(task_id, None)
    if token is not None:
        try:
            logs.reset_context(token)
        except ValueError:  # set in another context (an eager task inside another): drop
            pass
