"""The key browser: bounded scans under a literal prefix, lookup by id."""

from django.shortcuts import get_object_or_404, render
from django.views.decorators.vary import vary_on_headers

from continuity import keyspace
from continuity.forms import BrowseForm, LookupForm
from continuity.models import Namespace
from continuity.policy import Policies
from dashboard import roles
from dashboard.models import RedisDatabase


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def browse(request, database):
    """Keys under a literal prefix (default: the database's key prefix), one bounded
    scan budget per request, continued with the returned cursor."""
    database = get_object_or_404(RedisDatabase, name=database)
    namespaces = list(Namespace.objects.for_database(database))
    query = request.GET.copy()
    if not query:
        query["prefix"] = database.key_prefix
    form = BrowseForm(query)
    result = error = next_query = None
    if form.is_valid():
        try:
            result = keyspace.scan_keys(database, pattern=form.match(), policies=Policies.of(namespaces),
                                        type_=form.cleaned_data["type"] or None, **form.scan_state())
        except keyspace.FAILURES as exc:
            error = keyspace.describe(exc)
        else:
            next_query = query.copy()
            for name, value in (("cursor", result.cursor), ("examined", result.examined_total),
                                ("matched", result.matched_total)):
                next_query.setlist(name, [str(value)])
    prefix = query.get("prefix", "") if not query.get("glob") else ""
    context = {"database": database, "form": form, "result": result, "error": error, "prefix": prefix,
               "query": query.urlencode(), "next_query": next_query.urlencode() if next_query else "",
               "tree": keyspace.namespace_tree(namespaces, prefix), "crumbs": keyspace.breadcrumbs(prefix),
               "lookup_form": LookupForm()}
    template = "continuity/browse.html#results" if request.htmx else "continuity/browse.html"
    return render(request, template, context)


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def key_lookup(request, database):
    """Every `<namespace prefix><id>` key across the registered namespaces, one round trip."""
    database = get_object_or_404(RedisDatabase, name=database)
    form = LookupForm(request.GET or None)
    lookup = error = None
    if form.is_valid():
        policies = Namespace.objects.for_database(database).policies()
        try:
            lookup = keyspace.lookup_id(database, form.cleaned_data["id"].encode(), policies)
        except keyspace.FAILURES as exc:
            error = keyspace.describe(exc)
    template = "continuity/lookup.html#lookup" if request.htmx else "continuity/lookup.html"
    return render(request, template, {"database": database, "lookup_form": form, "lookup": lookup, "error": error})
