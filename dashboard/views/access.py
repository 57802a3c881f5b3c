from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import trigger_client_event

from dashboard import operations, roles
from dashboard.forms import AuditFilterForm, RoleForm, UserCreateForm
from dashboard.models import AuditEntry


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def audit_list(request):
    form = AuditFilterForm(request.GET or None)
    entries = AuditEntry.objects.all()
    if form.is_valid():
        entries = entries.filtered(**form.cleaned_data)
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    template = "dashboard/audit_list.html#results" if request.htmx else "dashboard/audit_list.html"
    return render(request, template, {"form": form, "page": page})


@roles.role_required(roles.VIEWER)
def audit_detail(request, pk):
    entry = get_object_or_404(AuditEntry, pk=pk)
    related = AuditEntry.objects.filter(request_id=entry.request_id).exclude(pk=pk) if entry.request_id else []
    return render(request, "dashboard/audit_detail.html", {"entry": entry, "related": related})


@roles.role_required(roles.ADMIN)
@vary_on_headers("HX-Request")
def user_list(request):
    users = get_user_model().objects.prefetch_related("groups").order_by("username")
    rows = [(user, roles.role_of(user)) for user in users]
    if request.htmx:  # the table alone, after a user was added (`user_create`'s users-changed)
        return render(request, "dashboard/user_list.html#users", {"rows": rows})
    return render(request, "dashboard/user_list.html", {"rows": rows, "form": UserCreateForm()})


@roles.role_required(roles.ADMIN)
@require_POST
def user_create(request):
    form = UserCreateForm(request.POST)
    created = None
    if form.is_valid():
        new = operations.create_user(username=form.cleaned_data["username"], email=form.cleaned_data["email"],
                                     role=form.cleaned_data["role"], actor=request.user, request=request)
        created = {"user": new.user, "password": new.password}
        form = UserCreateForm()
    response = render(request, "dashboard/user_list.html#create", {"form": form, "created": created})
    return trigger_client_event(response, "users-changed") if created else response


@roles.role_required(roles.ADMIN)
@require_POST
def user_role(request, pk):
    user = get_object_or_404(get_user_model(), pk=pk)
    form = RoleForm(request.POST)
    error = ""
    if not form.is_valid():
        error = "Choose a role."
    else:
        try:
            operations.change_user_role(user=user, role=form.cleaned_data["role"],
                                        is_active=form.cleaned_data["is_active"], actor=request.user, request=request)
        except ValidationError as exc:
            error = " ".join(exc.messages)
    return render(request, "dashboard/user_list.html#row",
                  {"row": (user, roles.role_of(user)), "error": error, "saved": not error})
