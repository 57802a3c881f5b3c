"""The key browser: bounded scans under a literal prefix, lookup by id."""

from django.shortcuts import get_object_or_404, render
from django.views.decorators.vary import vary_on_headers

from continuity import keyspace
from continuity.forms import FINDING_CHOICES, BrowseForm, LookupForm
from continuity.models import Namespace
from continuity.policy import Policies
from dashboard import roles
from dashboard.models import RedisDatabase


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def browse(request, database):
    """Keys under a literal prefix (default: the database's key prefix), one bounded
    scan budget per request, continued with the returned cursor (on a cluster, a composite
    cursor over the primaries), optionally only those showing a finding (the same budget).
    A cursor that cannot continue the scan (malformed, altered, another scan's, or issued
    before the cluster's topology changed) answers 400 with the reason and a link that
    starts the scan again."""
    database = get_object_or_404(RedisDatabase, name=database)
    namespaces = list(Namespace.objects.for_database(database))
    query = request.GET.copy()
    if not query:
        query["prefix"] = database.key_prefix
    form = BrowseForm(query)
    result = error = next_query = None
    cursor_error = "" if form.is_valid() else form.state_error()
    if form.is_valid():
        try:
            result = keyspace.scan_keys(database, pattern=form.match(), policies=Policies.of(namespaces),
                                        type_=form.cleaned_data["type"] or None, **form.scan_state())
        except keyspace.CursorError as exc:
            cursor_error = str(exc)
        except keyspace.FAILURES as exc:
            error = keyspace.describe_error(exc)
        else:
            next_query = query.copy()
            for name, value in (("cursor", result.cursor), ("examined", result.examined_total),
                                ("matched", result.matched_total), ("read", result.read_total)):
                next_query.setlist(name, [str(value)])
    restart_query = query.copy()
    for name in BrowseForm.STATE_FIELDS:
        restart_query.pop(name, None)
    prefix = query.get("prefix", "") if not query.get("glob") else ""
    context = {"database": database, "form": form, "result": result, "error": error, "prefix": prefix,
               "query": query.urlencode(), "next_query": next_query.urlencode() if next_query else "",
               "cursor_error": cursor_error, "restart_query": restart_query.urlencode(),
               "tree": keyspace.namespace_tree(namespaces, prefix), "crumbs": keyspace.breadcrumbs(prefix),
               "lookup_form": LookupForm(),
               "finding_label": dict(FINDING_CHOICES).get(query.get("finding", ""), "")}
    template = "continuity/browse.html#results" if request.htmx else "continuity/browse.html"
    return render(request, template, context, status=400 if cursor_error else 200)


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def key_lookup(request, database):
    """Every `<namespace prefix><id>` key across the registered namespaces, one round trip
    (on a cluster, one per primary owning a candidate's slot)."""
    database = get_object_or_404(RedisDatabase, name=database)
    form = LookupForm(request.GET or None)
    lookup = error = None
    if form.is_valid():
        policies = Namespace.objects.for_database(database).policies()
        try:
            lookup = keyspace.lookup_id(database, form.cleaned_data["id"].encode(), policies)
        except keyspace.FAILURES as exc:
            error = keyspace.describe_error(exc)
    template = "continuity/lookup.html#lookup" if request.htmx else "continuity/lookup.html"
    return render(request, template, {"database": database, "lookup_form": form, "lookup": lookup, "error": error})
