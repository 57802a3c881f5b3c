"""The runbook, generated from the live records in the reference document's order."""

from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import timezone

from dashboard import failure_plan, roles
from dashboard.models import AccountAccess, AlertChannel, ChecklistItem, EnvVar, PhaseMapping, RedisDatabase, Secret


def dashboard_behaviour():
    """What the dashboard does when a monitored Redis fails, from its own code and settings
    (`failure_plan.dashboard_behaviour`): shown beside every written failure plan."""
    return failure_plan.dashboard_behaviour(channels=list(AlertChannel.objects.enabled().values_list("name", flat=True)))


def runbook_context():
    """Everything the runbook shows, gathered in a fixed number of queries."""
    databases = list(RedisDatabase.objects.prefetch_related("namespaces"))  # by name, then prefix
    return {
        "generated_at": timezone.now(),
        "phases": PhaseMapping.objects.all(),
        "namespaces": [namespace for database in databases for namespace in database.namespaces.all()],
        "stages": ChecklistItem.objects.stages(),
        "accounts": AccountAccess.objects.all(),
        "databases": databases,
        "secrets": Secret.objects.select_related("database").order_by("name"),
        "env_vars": EnvVar.objects.select_related("secret").order_by("name"),
        "behaviour": dashboard_behaviour(),
    }


@roles.role_required(roles.VIEWER)
def runbook(request):
    return render(request, "dashboard/runbook.html", runbook_context())


@roles.role_required(roles.VIEWER)
def runbook_markdown(request):
    text = render_to_string("dashboard/runbook.md", runbook_context(), request=request)
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="lucia-redis-runbook.md"'
    return response
