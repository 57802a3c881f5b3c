"""Namespaces and their TTL policies: everyone reads them, operators edit them (audited)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.vary import vary_on_headers

from continuity.forms import NamespaceForm
from continuity.models import Namespace
from continuity.operations import configuration
from dashboard import roles
from dashboard.models import RedisDatabase


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def namespace_list(request, database):
    database = get_object_or_404(RedisDatabase, name=database)
    namespaces = Namespace.objects.for_database(database)
    template = "continuity/namespace_list.html#table" if request.htmx else "continuity/namespace_list.html"
    return render(request, template, {"database": database, "namespaces": namespaces})


def _save(request, database, namespace):
    """Bind and validate a NamespaceForm, then save it (audited); None when invalid."""
    form = NamespaceForm(request.POST, instance=namespace, database=database)
    if not form.is_valid():
        return form, None
    try:
        return form, configuration.save_namespace(form=form, actor=request.user, request=request)
    except ValidationError as error:  # the prefix rule, checked again with the records locked
        form.add_error(None, error)
        return form, None


@roles.role_required(roles.OPERATOR)
def namespace_edit(request, database, pk):
    database = get_object_or_404(RedisDatabase, name=database)
    namespace = get_object_or_404(Namespace, database=database, pk=pk)
    form = NamespaceForm(instance=namespace, database=database)
    if request.method == "POST":
        form, saved = _save(request, database, namespace)
        if saved:
            messages.success(request, f"Namespace {saved.name} saved.")
            return redirect("continuity:namespace_list", database=database.name)
    return render(request, "continuity/namespace_form.html", {"database": database, "form": form,
                                                              "namespace": namespace})


@roles.role_required(roles.OPERATOR)
def namespace_create(request, database):
    database = get_object_or_404(RedisDatabase, name=database)
    form = NamespaceForm(initial={"prefix": database.key_prefix}, database=database)
    if request.method == "POST":
        form, saved = _save(request, database, Namespace(database=database))
        if saved:
            messages.success(request, f"Namespace {saved.name} created.")
            return redirect("continuity:namespace_list", database=database.name)
    return render(request, "continuity/namespace_form.html", {"database": database, "form": form, "namespace": None})
