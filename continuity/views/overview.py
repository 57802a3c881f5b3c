import redis
from django.shortcuts import get_object_or_404, render
from django.views.decorators.vary import vary_on_headers

from continuity import charts, keyspace
from continuity.models import Namespace
from continuity.policy import Policies
from dashboard import roles
from dashboard.models import RedisDatabase
from dashboard.views.records import database_context


@roles.role_required(roles.VIEWER)
def overview(request):
    databases = RedisDatabase.objects.all()
    namespaces = Namespace.objects.select_related("database")
    return render(request, "continuity/overview.html", {"databases": databases, "namespaces": namespaces})


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def database_summary(request, database):
    """The live header figures of one database, loaded as an htmx region so a slow or
    down Redis never holds up the page around it."""
    database = get_object_or_404(RedisDatabase, name=database)
    summary, error = None, ""
    try:
        summary = keyspace.server_summary(database)
    except (redis.RedisError, keyspace.KeyspaceError) as exc:
        error = keyspace.describe_error(exc)
    return render(request, "continuity/overview.html#summary",
                  {"database": database, "summary": summary, "error": error})


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def database_topology(request, name):
    """The topology region of a database record's page: standalone, or each cluster node
    with its slots, keys, role and whether it answered. Bounded by the Redis timeouts; a
    failure is a message in the region."""
    database = get_object_or_404(RedisDatabase, name=name)
    topology = error = None
    try:
        topology = keyspace.topology(database)
    except keyspace.FAILURES as exc:
        error = keyspace.describe_error(exc)
    context = {"database": database, "topology": topology, "topology_error": error, "topology_loaded": True}
    if request.htmx:
        return render(request, "dashboard/database_detail.html#topology", context)
    return render(request, "dashboard/database_detail.html", {**database_context(database), **context})


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
def namespace_stats(request, database):
    """Per-namespace charts from a bounded, labelled sample (an htmx region of the overview)."""
    database = get_object_or_404(RedisDatabase, name=database)
    namespaces = list(Namespace.objects.for_database(database))
    context = {"database": database, "sample": None, "error": ""}
    try:
        sample = keyspace.sample_keyspace(database, Policies.of(namespaces))
    except keyspace.FAILURES as exc:
        context["error"] = keyspace.describe_error(exc)
    else:
        context.update(sample=sample, charts=charts.namespace_charts(sample, namespaces),
                       ttl_charts=[(ns, charts.ttl_distribution_chart(ns, sample.figures[ns.name]))
                                   for ns in namespaces])
    template = "continuity/overview.html#stats" if request.htmx else "continuity/namespace_stats.html"
    return render(request, template, context)
