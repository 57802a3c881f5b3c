"""Records home, Redis databases, account access, setup checklist and phase mapping."""

from datetime import date, datetime

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard import operations, roles
from dashboard.models import (AccountAccess, AuditEntry, ChecklistItem, EnvVar, PhaseMapping, RedisDatabase,
                              Secret)
from dashboard.record_forms import (AccountAccessForm, ChecklistItemForm, ChecklistToggleForm, PhaseMappingForm,
                                    RedisDatabaseForm)
from dashboard.sources.panels import database_panel
from dashboard.templatetags.when import when
from dashboard.views.runbook import dashboard_behaviour

SORTS = {"next_due": "Next due", "-next_due": "Next due (latest first)", "age": "Age (oldest first)",
         "-age": "Age (newest first)"}


def form_page(request, form, *, title, cancel_url, status=200):
    return render(request, "dashboard/record_form.html", {"form": form, "title": title, "cancel_url": cancel_url},
                  status=status)


def edit_record(request, form_class, *, instance=None, action, title, cancel_url):
    """The shared create/edit flow: bind, validate, save with audit, redirect to the record."""
    form = form_class(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        obj = operations.save_record(form=form, action=action, actor=request.user, request=request)
        return redirect(obj.get_absolute_url() if hasattr(obj, "get_absolute_url") else cancel_url)
    return form_page(request, form, title=title, cancel_url=cancel_url)


def field_rows(obj, names):
    """[(label, display value)] for a detail table."""
    rows = []
    for name in names:
        field = obj._meta.get_field(name)
        display = getattr(obj, f"get_{name}_display", None)
        value = display() if display else getattr(obj, name)
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, (date, datetime)):
            value = when(value)
        rows.append((field.verbose_name, value))
    return rows


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def home(request):
    sort = request.GET.get("sort") if request.GET.get("sort") in SORTS else "next_due"
    secrets = [s for s in Secret.objects.sorted_by(sort).select_related("database") if s.needs_attention()]
    context = {"attention": secrets, "sort": sort, "sorts": SORTS}
    if request.htmx:
        return render(request, "dashboard/home.html#attention", context)
    context.update(databases=RedisDatabase.objects.prefetch_related("namespaces"),
                   stages=ChecklistItem.objects.stages(), secret_count=Secret.objects.count(),
                   recent=AuditEntry.objects.select_related("actor")[:10])
    return render(request, "dashboard/home.html", context)


# --- Redis databases ----------------------------------------------------------------------
@roles.role_required(roles.VIEWER)
def database_list(request):
    databases = RedisDatabase.objects.prefetch_related("namespaces", "secrets")
    return render(request, "dashboard/database_list.html", {"databases": databases})


def database_context(database):
    """The record page's context, without the live topology (`continuity.views.overview.database_topology`)."""
    env_vars = EnvVar.objects.filter(name__in=[database.url_env, database.readonly_url_env]).select_related("secret")
    rows = field_rows(database, ["environment", "provider", "region", "rest_url", "tcp_endpoint", "read_regions",
                                 "key_prefix", "url_env", "readonly_url_env", "cluster_mode", "notes"])
    plan = field_rows(database, RedisDatabase.FAILURE_PLAN_FIELDS)
    return {"database": database, "rows": rows, "plan": plan, "env_vars": env_vars, "behaviour": dashboard_behaviour(),
            "namespaces": database.namespaces.all(), "secrets": database.secrets.all(),
            "upstash": database_panel(database)}


@roles.role_required(roles.VIEWER)
def database_detail(request, name):
    """The record; its live topology loads into its own region (`database_topology`)."""
    database = get_object_or_404(RedisDatabase, name=name)
    return render(request, "dashboard/database_detail.html", database_context(database))


def _save_database(request, *, instance=None, title, cancel_url):
    """The database form: only an admin creates a record or changes its key prefix or URL
    variables, with a reason (`operations.save_database`)."""
    form = RedisDatabaseForm(request.POST or None, instance=instance, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            database = operations.save_database(form=form, actor=request.user, reason=form.cleaned_data["reason"],
                                                request=request)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            return redirect(database.get_absolute_url())
    return form_page(request, form, title=title, cancel_url=cancel_url)


@roles.role_required(roles.ADMIN)
def database_create(request):
    return _save_database(request, title="New Redis database", cancel_url=reverse("dashboard:database_list"))


@roles.role_required(roles.OPERATOR)
def database_edit(request, name):
    database = get_object_or_404(RedisDatabase, name=name)
    return _save_database(request, instance=database, title=f"Edit database {database.name}",
                          cancel_url=database.get_absolute_url())


# --- Account access -------------------------------------------------------------------------
ACCOUNT_FIELDS = ["provider", "account_email", "dashboard_url", "team", "mfa_method", "mfa_last_verified", "notes"]


@roles.role_required(roles.VIEWER)
def account_list(request):
    return render(request, "dashboard/account_list.html", {"accounts": AccountAccess.objects.all()})


@roles.role_required(roles.VIEWER)
def account_detail(request, pk):
    account = get_object_or_404(AccountAccess, pk=pk)
    return render(request, "dashboard/record_detail.html", {
        "object": account, "title": str(account), "rows": field_rows(account, ACCOUNT_FIELDS),
        "edit_url": "dashboard:account_edit", "list_url": "dashboard:account_list"})


@roles.role_required(roles.OPERATOR)
def account_create(request):
    return edit_record(request, AccountAccessForm, action="account.create", title="New account access",
                       cancel_url=reverse("dashboard:account_list"))


@roles.role_required(roles.OPERATOR)
def account_edit(request, pk):
    account = get_object_or_404(AccountAccess, pk=pk)
    return edit_record(request, AccountAccessForm, instance=account, action="account.edit",
                       title=f"Edit {account}", cancel_url=account.get_absolute_url())


# --- Setup checklist --------------------------------------------------------------------------
@roles.role_required(roles.VIEWER)
def checklist(request):
    return render(request, "dashboard/checklist.html", {"stages": ChecklistItem.objects.stages()})


@roles.role_required(roles.OPERATOR)
@require_POST
def checklist_toggle(request, pk):
    item = get_object_or_404(ChecklistItem.objects.select_related("done_by"), pk=pk)
    form = ChecklistToggleForm(request.POST)
    if form.is_valid():
        item = operations.set_checklist_item(item=item, done=form.cleaned_data["done"], note=form.cleaned_data["note"],
                                             actor=request.user, request=request)
    template = "dashboard/checklist.html#item" if request.htmx else None
    if template is None:
        return redirect("dashboard:checklist")
    return render(request, template, {"item": item, "form": form, "can_operate": True})


@roles.role_required(roles.OPERATOR)
def checklist_create(request):
    return edit_record(request, ChecklistItemForm, action="checklist.create", title="New checklist item",
                       cancel_url=reverse("dashboard:checklist"))


@roles.role_required(roles.OPERATOR)
def checklist_edit(request, pk):
    item = get_object_or_404(ChecklistItem, pk=pk)
    return edit_record(request, ChecklistItemForm, instance=item, action="checklist.edit",
                       title="Edit checklist item", cancel_url=reverse("dashboard:checklist"))


# --- Phase mapping ---------------------------------------------------------------------------
@roles.role_required(roles.VIEWER)
def phase_list(request):
    return render(request, "dashboard/phase_list.html", {"phases": PhaseMapping.objects.all()})


@roles.role_required(roles.OPERATOR)
def phase_create(request):
    return edit_record(request, PhaseMappingForm, action="phase.create", title="New phase", cancel_url=reverse("dashboard:phase_list"))


@roles.role_required(roles.OPERATOR)
def phase_edit(request, pk):
    phase = get_object_or_404(PhaseMapping, pk=pk)
    return edit_record(request, PhaseMappingForm, instance=phase, action="phase.edit",
                       title=f"Edit phase {phase.number}", cancel_url=reverse("dashboard:phase_list"))
