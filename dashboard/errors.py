import sys

from django.core.signals import got_request_exception
from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string

from dashboard import postgres


def forbidden(request, exception=None):
    message = str(exception) if exception and str(exception) else "Your role does not allow this."
    return render(request, "403.html", {"message": message}, status=403)


def postgres_unavailable(request=None):
    """503 for a request that met an unreachable Postgres: a plain page rendered without
    the request (context processors, the session and the user would all need Postgres)."""
    response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = "10"
    return response


def _note_postgres_failure(sender, request=None, **kwargs):
    """Every uncaught exception passes here (Django's got_request_exception, sent inside
    its except block): mark the request when it was Postgres that failed."""
    if request is not None and isinstance(sys.exc_info()[1], postgres.GONE):
        request.postgres_unavailable = True


got_request_exception.connect(_note_postgres_failure, dispatch_uid="dashboard.errors.postgres")
