"""One live key: bounded preview, capped download, operator actions with audit."""

from functools import wraps

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from continuity import key_links, keyspace
from continuity.forms import KeyActionForm
from continuity.models import Namespace, classify_key
from continuity.operations.key_actions import KeyActionResult, act_on_key
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


def _detail_context(database, key, *, form=None, outcome=None):
    context = {"database": database, "key": key, "token": key_links.url_token(key, database), "form": form or KeyActionForm(),
               "outcome": outcome, "preview": None, "error": None, "namespace": None, "status": None}
    try:
        preview = keyspace.preview_key(database, key)
    except keyspace.FAILURES as exc:
        context["error"] = keyspace.describe_error(exc)
        return context
    namespace, status = classify_key(list(Namespace.objects.for_database(database)), preview.meta)
    context.update(preview=preview, namespace=namespace, status=status)
    return context


@roles.role_required(roles.VIEWER)
@vary_on_headers("HX-Request")
@_long_key_links
def key_detail(request, database, token):
    database, key = _key_or_404(database, token)
    template = "continuity/key_detail.html#detail" if request.htmx else "continuity/key_detail.html"
    return render(request, template, _detail_context(database, key))


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
    return render(request, template, _detail_context(database, key, form=form, outcome=outcome))


@roles.role_required(roles.VIEWER)
@_long_key_links
def key_download(request, database, token):
    """The string value as a file, up to KEYSPACE_DOWNLOAD_CAP bytes (GETRANGE)."""
    database, key = _key_or_404(database, token)
    try:
        download = keyspace.download_value(database, key)
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
