"""Namespaces and their TTL policies: everyone reads them, operators edit them (audited)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.vary import vary_on_headers

from continuity.forms import NamespaceForm
from continuity.models import Namespace
from continuity.operations import configuration, impact
from continuity.policy import Policy
from dashboard import roles
from dashboard.models import RedisDatabase


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def namespace_list(request, database):
    database = get_object_or_404(RedisDatabase, name=database)
    namespaces = Namespace.objects.for_database(database)
    template = "continuity/namespace_list.html#table" if request.htmx else "continuity/namespace_list.html"
    return render(request, template, {"database": database, "namespaces": namespaces})


def _save(request, database, namespace, form=None):
    """Bind and validate a NamespaceForm, then save it (audited); None when invalid."""
    form = form or NamespaceForm(request.POST, instance=namespace, database=database)
    if not form.is_valid():
        return form, None
    try:
        return form, configuration.save_namespace(form=form, actor=request.user, request=request)
    except ValidationError as error:  # the prefix rule, checked again with the records locked
        form.add_error(None, error)
        return form, None


@roles.role_required(roles.OPERATOR)
def namespace_edit(request, database, pk):
    """Edit a namespace's policy. A change that can turn keys into findings (`impact.tightens`)
    first shows how many (from the last review, and a sample read now) and is saved only
    when the operator confirms it."""
    database = get_object_or_404(RedisDatabase, name=database)
    namespace = get_object_or_404(Namespace, database=database, pk=pk)
    stored = Namespace.objects.select_related("database").get(pk=namespace.pk)  # the form changes `namespace`
    form = NamespaceForm(instance=namespace, database=database)
    context = {"database": database, "namespace": stored}
    if request.method == "POST":
        form = NamespaceForm(request.POST, instance=namespace, database=database)
        # Confirmed only for the values whose impact was shown: other values show theirs first.
        if (form.is_valid() and request.POST.get("impact_seen") != impact.fingerprint(form.instance)
                and impact.tightens(stored.policy(), Policy.of(form.instance))):
            context.update(impact=impact.namespace_impact(namespace=stored, after=form.instance),
                           impact_seen=impact.fingerprint(form.instance))
            return render(request, "continuity/namespace_form.html", {**context, "form": form})
        form, saved = _save(request, database, namespace, form)
        if saved:
            messages.success(request, f"Namespace {saved.name} saved.")
            return redirect("continuity:namespace_list", database=database.name)
    return render(request, "continuity/namespace_form.html", {**context, "form": form})


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
