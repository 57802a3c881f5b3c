"""The sources-of-truth panels: a secret against 1Password, a database record against Upstash.

Each URL here answers 404 while its source is not configured: then no page shows it.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from dashboard import roles
from dashboard.models import RedisDatabase, Secret, UpstashLink
from dashboard.sources import onepassword_configured, upstash_configured
from dashboard.sources import databases as upstash_checks
from dashboard.sources import secrets as onepassword_checks
from dashboard.sources.forms import UpstashLinkForm
from dashboard.sources.panels import database_panel, secret_panel
from dashboard.views.records import form_page

SECRET_PANEL = "dashboard/secret_source.html#panel"
DATABASE_PANEL = "dashboard/database_source.html#panel"


def _secret(name):
    if not onepassword_configured():
        raise Http404("1Password is not configured.")
    return get_object_or_404(Secret, name=name)


def _database(name):
    if not upstash_configured():
        raise Http404("Upstash is not configured.")
    return get_object_or_404(RedisDatabase, name=name)


def _answer(request, template, context, record, error="", refresh=False):
    """For htmx: the refreshed panel (409 with a refusal), or the whole page reloaded when the
    change shows beyond the panel (`refresh`). Otherwise back to the record page."""
    if request.htmx:
        if refresh and not error:
            return HttpResponseClientRefresh()
        return render(request, template, context, status=409 if error else 200)
    if error:
        messages.error(request, error)
    return redirect(record)


@roles.role_required(roles.VIEWER)
def secret_source(request, name):
    """The 1Password panel alone (a pending "check now" polls it)."""
    secret = _secret(name)
    return render(request, SECRET_PANEL, {"source": secret_panel(secret), "secret": secret})


@roles.role_required(roles.OPERATOR)
@require_POST
def secret_source_check(request, name):
    secret = _secret(name)
    onepassword_checks.request_check(secret=secret, actor=request.user)
    return _answer(request, SECRET_PANEL, {"source": secret_panel(secret), "secret": secret}, secret)


@roles.role_required(roles.OPERATOR)
@require_POST
def secret_source_record(request, name):
    """One click: record the rotation 1Password shows, at its change time."""
    secret = _secret(name)
    error = ""
    try:
        onepassword_checks.record_changed_rotation(secret=secret, version=request.POST.get("version", ""),
                                                   actor=request.user, request=request)
    except ValidationError as refusal:
        error = " ".join(refusal.messages)
    secret.refresh_from_db()
    return _answer(request, SECRET_PANEL, {"source": secret_panel(secret, error), "secret": secret}, secret, error,
                   refresh=True)


@roles.role_required(roles.VIEWER)
def database_source(request, name):
    """The Upstash panel alone (a pending "check now" polls it)."""
    database = _database(name)
    return render(request, DATABASE_PANEL, {"upstash": database_panel(database), "database": database})


@roles.role_required(roles.OPERATOR)
@require_POST
def database_source_check(request, name):
    database = _database(name)
    upstash_checks.request_check(database=database, actor=request.user)
    return _answer(request, DATABASE_PANEL, {"upstash": database_panel(database), "database": database}, database)


@roles.role_required(roles.OPERATOR)
@require_POST
def database_source_adopt(request, name):
    """One click: the record takes Upstash's value of one drifted setting."""
    database = _database(name)
    error = ""
    try:
        upstash_checks.adopt(database=database, field_name=request.POST.get("field", ""), actor=request.user,
                             request=request)
    except ValidationError as refusal:
        error = " ".join(refusal.messages)
    database.refresh_from_db()
    return _answer(request, DATABASE_PANEL, {"upstash": database_panel(database, error), "database": database},
                   database, error, refresh=True)


@roles.role_required(roles.OPERATOR)
def database_source_link(request, name):
    """Which Upstash database the record is (by id), and the settings the team recorded for it."""
    database = _database(name)
    link = UpstashLink.objects.filter(database=database).first() or UpstashLink(database=database)
    form = UpstashLinkForm(request.POST or None, instance=link)
    if request.method == "POST" and form.is_valid():
        upstash_checks.save_link(form=form, actor=request.user, request=request)
        return redirect(database)
    return form_page(request, form, title=f"Upstash side of {database.name}", cancel_url=database.get_absolute_url())
