"""Secrets (by 1Password reference), the record-rotation flow, and the env var tracker."""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from dashboard import operations, roles
from dashboard.models import EnvVar, Secret
from dashboard.record_forms import EnvVarForm, RotationForm, SecretForm
from dashboard.sources.panels import secret_panel
from dashboard.views.records import SORTS, edit_record, field_rows


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def secret_list(request):
    sort = request.GET.get("sort") if request.GET.get("sort") in SORTS else "next_due"
    secrets = Secret.objects.sorted_by(sort).select_related("database")
    template = "dashboard/secret_list.html#table" if request.htmx else "dashboard/secret_list.html"
    return render(request, template, {"secrets": secrets, "sort": sort, "sorts": SORTS})


def _rotation_context(secret, form=None, confirm=False, done=None):
    env_vars, databases = secret.blast_radius()
    return {"secret": secret, "rotations": secret.rotations.select_related("recorded_by")[:50],
            "form": form, "confirm": confirm, "done": done, "env_vars": env_vars, "databases": databases}


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def secret_detail(request, name):
    """The secret's page; to htmx, its details table alone (refreshed after a rotation)."""
    secret = get_object_or_404(Secret.objects.select_related("database"), name=name)
    rows = field_rows(secret, ["title", "purpose", "database", "owner", "rotation_interval_days", "due_soon_days", "notes"])
    if request.htmx:
        return render(request, "dashboard/secret_detail.html#details", {"secret": secret, "rows": rows})
    return render(request, "dashboard/secret_detail.html",
                  {**_rotation_context(secret), "rows": rows, "source": secret_panel(secret)})


@roles.role_required(roles.OPERATOR)
@vary_on_headers("HX-Request")
def secret_rotate(request, name):
    """GET: the rotation form (fragment). POST: validate and show the confirmation; POST with
    `confirm`: record the rotation and return the refreshed rotation panel."""
    secret = get_object_or_404(Secret, name=name)
    form = RotationForm(request.POST or None, secret=secret)
    template = "dashboard/secret_detail.html#rotation" if request.htmx else "dashboard/secret_rotate.html"
    if request.method != "POST" or not form.is_valid():
        return render(request, template, _rotation_context(secret, form=form))
    if not request.POST.get("confirm"):
        return render(request, template, _rotation_context(secret, form=form, confirm=True))
    try:
        result = operations.record_rotation(secret=secret, actor=request.user, request=request, **form.cleaned_data)
    except ValidationError as error:
        for field, messages in error.message_dict.items():
            form.add_error(field if field in form.fields else None, messages)
        return render(request, template, _rotation_context(secret, form=form))
    if not request.htmx:
        return redirect(secret)
    response = render(request, "dashboard/secret_detail.html#rotation", _rotation_context(result.secret, done=result))
    return trigger_client_event(response, "secret-changed")  # the details table shows the new reference


@roles.role_required(roles.OPERATOR)
@require_POST
def secret_exposed(request, name):
    secret = get_object_or_404(Secret, name=name)
    note = request.POST.get("note", "")
    try:
        operations.mark_exposed(secret=secret, actor=request.user, request=request, note=note)
    except ValidationError as error:
        message = " ".join(error.messages)
        if request.htmx:  # swapped in place of the form (400 is swapped: see base.html's htmx-config)
            return render(request, "dashboard/secret_detail.html#exposed", {"secret": secret, "exposed_error": message},
                          status=400)
        return render(request, "403.html", {"message": message}, status=400)
    if request.htmx:
        return HttpResponseClientRedirect(secret.get_absolute_url())
    return redirect(secret)


@roles.role_required(roles.OPERATOR)
def secret_create(request):
    return edit_record(request, SecretForm, action="secret.create", title="New secret",
                       cancel_url=reverse("dashboard:secret_list"))


@roles.role_required(roles.OPERATOR)
def secret_edit(request, name):
    secret = get_object_or_404(Secret, name=name)
    return edit_record(request, SecretForm, instance=secret, action="secret.edit", title=f"Edit secret {secret.name}",
                       cancel_url=secret.get_absolute_url())


# --- Env var tracker ------------------------------------------------------------------------
@roles.role_required(roles.VIEWER)
def envvar_list(request):
    env_vars = EnvVar.objects.select_related("secret")
    return render(request, "dashboard/envvar_list.html", {"env_vars": env_vars})


@roles.role_required(roles.VIEWER)
def envvar_detail(request, name):
    env_var = get_object_or_404(EnvVar.objects.select_related("secret"), name=name)
    rows = field_rows(env_var, ["value_or_reference", "used_in", "required", "secret", "notes"])
    return render(request, "dashboard/record_detail.html", {
        "object": env_var, "title": env_var.name, "rows": rows, "reference": env_var if env_var.reference else None,
        "edit_url": "dashboard:envvar_edit", "edit_arg": env_var.name, "list_url": "dashboard:envvar_list"})


@roles.role_required(roles.OPERATOR)
def envvar_create(request):
    return edit_record(request, EnvVarForm, action="envvar.create", title="New environment variable",
                       cancel_url=reverse("dashboard:envvar_list"))


@roles.role_required(roles.OPERATOR)
def envvar_edit(request, name):
    env_var = get_object_or_404(EnvVar, name=name)
    return edit_record(request, EnvVarForm, instance=env_var, action="envvar.edit", title=f"Edit {env_var.name}",
                       cancel_url=env_var.get_absolute_url())
