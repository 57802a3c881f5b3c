"""Jobs: TTL review runs (start, progress, detail, trend) and the beat schedules."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from continuity import charts, crontabs
from continuity.keyspace.capabilities import MEMORY_REFUSED
from continuity.forms import ScheduleForm
from continuity.models import FINDINGS, ReviewRun
from continuity.models.reviews import FINDING_LABELS
from continuity.operations import configuration, costs
from continuity.operations.review_requests import request_review, retry_review
from dashboard import jobs, roles
from dashboard.models import RedisDatabase
from dashboard.sources import upstash_configured


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def job_list(request):
    from django_celery_beat.models import PeriodicTask
    from django_celery_results.models import TaskResult

    runs = ReviewRun.objects.select_related("database", "actor").latest_first()[:30]
    context = {"runs": runs, "any_active": any(run.is_active for run in runs)}
    if request.htmx:
        return render(request, "continuity/job_list.html#runs", context)
    databases = list(RedisDatabase.objects.all())
    schedules = list(PeriodicTask.objects.select_related("interval", "crontab").order_by("name"))
    last = costs.last_run_costs(databases)
    context.update(
        databases=[(database, *costs.review_cost(database, last)) for database in databases],
        schedules=[(task, crontabs.in_words(task.crontab) if task.crontab_id else None,
                    costs.project(task, databases, last), costs.review_kind(task)) for task in schedules],
        results=TaskResult.objects.order_by("-date_created")[:20],
        upstash_month=costs.month_on_upstash(databases) if upstash_configured() else None,
    )
    return render(request, "continuity/job_list.html", context)


@roles.role_required(roles.OPERATOR)
@require_POST
def review_start(request, database):
    """'Run review now': queue a review (or find the one already active) and show it. When
    the broker refuses the task, the run is recorded failed and the page says why (503)."""
    database = get_object_or_404(RedisDatabase, name=database)
    try:
        run, _ = request_review(database=database, actor=request.user, triggered_by=ReviewRun.WEB)
    except jobs.EnqueueRefused as exc:
        return _refused(request, str(exc))
    if request.htmx:
        return HttpResponseClientRedirect(run_url(run))
    return redirect(run_url(run))


def _refused(request, message):
    """The broker refused a task: the message (the run is recorded failed), never a 500."""
    if request.htmx:  # the jobs page shows it, with the failed run in its list
        messages.error(request, message)
        return HttpResponseClientRedirect(reverse("continuity:job_list"))
    return render(request, "continuity/job_refused.html", {"message": message}, status=503)


@roles.role_required(roles.OPERATOR)
@require_POST
def review_retry(request, pk):
    """Send again the task of a review that never started (queued past JOB_NEVER_STARTED_SECONDS)."""
    run = get_object_or_404(ReviewRun.objects.select_related("database"), pk=pk)
    try:
        retry_review(run=run, actor=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    except jobs.EnqueueRefused as exc:
        return _refused(request, str(exc))
    return HttpResponseClientRedirect(run_url(run)) if request.htmx else redirect(run_url(run))


def run_url(run):
    return reverse("continuity:review_detail", args=[run.pk])


@roles.role_required(roles.OPERATOR)
@require_POST
def review_cancel(request, pk):
    run = get_object_or_404(ReviewRun, pk=pk)
    run.cancel()
    return HttpResponseClientRefresh() if request.htmx else redirect(run_url(run))


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def review_detail(request, pk):
    """A review: live progress while it runs, then namespaces, findings and samples."""
    run = get_object_or_404(ReviewRun.objects.select_related("database", "actor"), pk=pk)
    if request.htmx:
        if request.GET.get("poll") and not run.is_active:
            return HttpResponseClientRefresh()  # finished: show the full results
        return render(request, "continuity/review_detail.html#progress", {"run": run})
    stats = run.namespace_stats.all()
    samples = {kind: [] for kind in FINDINGS}
    for sample in run.samples.all():
        samples[sample.finding].append(sample)
    estimates = run.estimates()
    findings = [(kind, FINDING_LABELS[kind], estimates.get(kind), samples[kind]) for kind in FINDINGS]
    notes = [MEMORY_REFUSED] if run.sizes_unknown() else []
    nodes = list(run.node_runs.all())
    cluster = [node for node in nodes if node.slots]  # a standalone server's one part needs no table
    return render(request, "continuity/review_detail.html",
                  {"run": run, "stats": stats, "findings": findings, "database": run.database, "notes": notes,
                   "nodes": cluster, "topology_billed": run.topology_billed(nodes) if cluster else 0})


@roles.role_required(roles.VIEWER)
def review_trend(request, database):
    """Keys and findings per namespace over the last reviews, one pygal chart each."""
    database = get_object_or_404(RedisDatabase, name=database)
    trends = charts.namespace_trends(database)
    svgs = [(label, charts.trend_svg(label, points)) for label, points in trends.items()]
    return render(request, "continuity/review_trend.html", {"database": database, "charts": svgs})


def _schedule_task(pk):
    from django_celery_beat.models import PeriodicTask

    return get_object_or_404(PeriodicTask.objects.select_related("interval", "crontab"), pk=pk)


def _projections(task, form):
    """What a month of `task` would cost on the schedule `form` holds (None: not valid yet)."""
    if not form.is_valid():
        return None
    databases = list(RedisDatabase.objects.all())
    runs = costs.runs_per_month_of(**form.unsaved())
    return {"runs": runs, "projections": costs.project(task, databases, costs.last_run_costs(databases), runs=runs)}


@roles.role_required(roles.ADMIN)
def schedule_edit(request, pk):
    """Admins change a beat schedule's interval/crontab and switch it on or off. Audited.
    The page prices the schedule as it is typed (`schedule_cost`)."""
    task = _schedule_task(pk)
    form = ScheduleForm.for_task(task, data=request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        configuration.update_schedule(task=task, **form.schedule(), actor=request.user, request=request)
        return redirect("continuity:job_list")
    shown = form if form.is_bound else ScheduleForm.for_task(task, data=ScheduleForm.for_task(task).initial_data())
    return render(request, "continuity/schedule_form.html",
                  {"task": task, "form": form, "kind": costs.review_kind(task), "cost": _projections(task, shown)})


@roles.role_required(roles.ADMIN)
@vary_on_headers("HX-Request")
def schedule_cost(request, pk):
    """The cost region of the schedule form, for the schedule typed so far (GET, nothing saved)."""
    task = _schedule_task(pk)
    form = ScheduleForm.for_task(task, data=request.GET)
    return render(request, "continuity/schedule_form.html#cost",
                  {"task": task, "kind": costs.review_kind(task), "cost": _projections(task, form)})
