"""One live key: bounded preview, capped download, operator actions with audit. Every
value goes through `operations.key_reads`: a sensitive namespace's values only to an
operator who reveals them, each read audited."""

from functools import wraps

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from continuity import key_links, keyspace
from continuity.forms import KeyActionForm
from continuity.operations.key_actions import KeyActionResult, act_on_key
from continuity.operations.key_reads import download_key, read_key, sensitive_namespace
from dashboard import roles
from dashboard.models import RedisDatabase


def _key_or_404(database, token):
    database = get_object_or_404(RedisDatabase, name=database)
    try:
        return database, key_links.key_from_url_token(token, database)
    except ValueError:
        raise Http404("Not a key token.") from None


def _long_key_links(view):
    """A long key's link is a handle kept for a week, for one database record: once it is
    gone, say so (410); under another record's URL, refuse it (404), before any Redis call."""
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except key_links.HandleExpired:
            return render(request, "continuity/key_link_expired.html", {"database": kwargs.get("database")},
                          status=410)
        except key_links.ForeignHandle:
            return render(request, "continuity/key_link_expired.html",
                          {"database": kwargs.get("database"), "foreign": True}, status=404)
    return wrapper


def _detail_context(request, database, key, *, form=None, outcome=None, reveal=False):
    context = {"database": database, "key": key, "token": key_links.url_token(key, database), "form": form or KeyActionForm(),
               "outcome": outcome, "preview": None, "error": None, "namespace": None, "status": None,
               "sensitive": False, "revealed": False}
    try:
        read = read_key(database=database, key=key, user=request.user, reveal=reveal, request=request)
    except keyspace.FAILURES as exc:
        context["error"] = keyspace.describe_error(exc)
        return context
    context.update(preview=read.preview, namespace=read.namespace, status=read.status, sensitive=read.sensitive,
                   revealed=read.revealed)
    return context


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
@_long_key_links
def key_detail(request, database, token):
    database, key = _key_or_404(database, token)
    template = "continuity/key_detail.html#detail" if request.htmx else "continuity/key_detail.html"
    return render(request, template, _detail_context(request, database, key))


@roles.role_required(roles.OPERATOR)
@require_POST
@vary_on_headers("HX-Request")
@_long_key_links
def key_reveal(request, database, token):
    """A sensitive key's value, for an operator, one click away; the read is audited.
    htmx gets the value region, a plain POST the page with the value shown."""
    database, key = _key_or_404(database, token)
    context = _detail_context(request, database, key, reveal=True)
    template = "continuity/key_detail.html#value" if request.htmx else "continuity/key_detail.html"
    return render(request, template, context)


@roles.role_required(roles.OPERATOR)
@require_POST
@_long_key_links
def key_action(request, database, token):
    """Set or extend the TTL, expire now or delete; audited. htmx gets the updated region."""
    database, key = _key_or_404(database, token)
    form = KeyActionForm(request.POST)
    outcome = None
    if form.is_valid():
        try:
            outcome = act_on_key(database=database, key=key, action=form.cleaned_data["action"],
                                 seconds=form.cleaned_data.get("seconds"), reason=form.cleaned_data.get("reason", ""),
                                 request=request)
        except keyspace.FAILURES as exc:
            outcome = KeyActionResult(ok=False, message=keyspace.describe_error(exc))
        if not request.htmx:
            messages.add_message(request, messages.SUCCESS if outcome.ok else messages.ERROR, outcome.message)
            return redirect("continuity:key_detail", database=database.name, token=key_links.url_token(key, database))
        form = KeyActionForm() if outcome.ok else form
    template = "continuity/key_detail.html#detail" if request.htmx else "continuity/key_detail.html"
    return render(request, template, _detail_context(request, database, key, form=form, outcome=outcome))


@roles.role_required(roles.VIEWER)
@_long_key_links
def key_download(request, database, token):
    """The string value as a file, up to KEYSPACE_DOWNLOAD_CAP bytes (GETRANGE). A
    sensitive key's: operators only, by POST (the read is audited)."""
    database, key = _key_or_404(database, token)
    if request.method != "POST" and sensitive_namespace(database, key) is not None:
        return HttpResponse("This key's namespace is sensitive: an operator downloads its value with the Download "
                            "button after revealing it (the read is audited).", status=405,
                            content_type="text/plain; charset=utf-8", headers={"Allow": "POST"})
    try:
        download = download_key(database=database, key=key, user=request.user, request=request)
    except keyspace.FAILURES as exc:
        return HttpResponse(keyspace.describe_error(exc), status=503, content_type="text/plain; charset=utf-8")
    if download is None:
        raise Http404("No string value under this key.")
    response = HttpResponse(download.data, content_type="application/octet-stream")
    suffix = ".partial" if download.truncated else ""
    response["Content-Disposition"] = f'attachment; filename="redis-value{suffix}.bin"'
    response["X-Content-Type-Options"] = "nosniff"
    response["X-Value-Length"] = str(download.length)
    response["X-Value-Truncated"] = "true" if download.truncated else "false"
    return response
