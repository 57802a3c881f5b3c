import re
import uuid

from django.conf import settings

from dashboard import errors
from dashboard.audit import current_client_request_id, current_request_id
from dashboard.scanning import find_secrets

# fullmatch: `$` would let a trailing newline through into the audit log.
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def client_request_id(value):
    """A client's (or a proxy's) X-Request-ID as it may be stored beside the audit entry: the
    value when it has a sane shape (8 to 64 of `A-Z a-z 0-9 . _ -`) and names no credential,
    else "". The entropy detectors are not asked: random ids are what proxies send."""
    if not _SAFE_ID.fullmatch(value):
        return ""
    if any("High Entropy" not in kind for kind in find_secrets(value)):
        return ""
    return value


class RequestIdMiddleware:
    """Gives every request an id of its own, made here, that the audit log records so the
    entries of one request can be grouped, and that the response's X-Request-ID returns.

    A client's X-Request-ID is never that id: any client could send another request's id and
    join its audit group. It is kept apart (`request.client_request_id`, the audit entry's
    `client_request_id`) to find a proxy's log lines."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = uuid.uuid4().hex
        request.client_request_id = client_request_id(request.headers.get("X-Request-ID", ""))
        token = current_request_id.set(request.request_id)
        client_token = current_client_request_id.set(request.client_request_id)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
            current_client_request_id.reset(client_token)
        response["X-Request-ID"] = request.request_id
        return response


class PostgresUnavailableMiddleware:
    """A request that failed because Postgres is unreachable (in a view, a middleware's
    session or user lookup, or a template) gets the plain 503 page instead of a 500 or,
    under DEBUG, a traceback. Sits above every middleware that may touch the database."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if getattr(request, "postgres_unavailable", False):
            return errors.postgres_unavailable(request)
        return response


class SecurityHeadersMiddleware:
    """The same security headers on every response: Content-Security-Policy and
    Permissions-Policy (Django 5.2 has neither), nosniff, Referrer-Policy and X-Frame-Options.

    First in MIDDLEWARE, so it also sees the responses that the middlewares below make
    themselves and that never reach a view or their own header step: SecurityMiddleware's
    HTTP→HTTPS 301, WhiteNoise's static files, the Postgres 503. A header a response already
    carries is kept (a view's own, stricter or exempted, choice)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        headers = {"Content-Security-Policy": settings.CONTENT_SECURITY_POLICY,
                   "Permissions-Policy": settings.PERMISSIONS_POLICY,
                   "X-Content-Type-Options": "nosniff" if settings.SECURE_CONTENT_TYPE_NOSNIFF else "",
                   "Referrer-Policy": settings.SECURE_REFERRER_POLICY or ""}
        if not getattr(response, "xframe_options_exempt", False):
            headers["X-Frame-Options"] = settings.X_FRAME_OPTIONS
        for name, value in headers.items():
            if value:
                response.headers.setdefault(name, value)
        return response


class PasswordChangeRequiredMiddleware:
    """A user signed in with a one-time password reaches only the password change form (and
    sign-out) until they set their own (dashboard.accounts)."""

    ALLOWED = ("password_change", "password_change_done", "logout", "healthz")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.urls import resolve, reverse
        from django.urls.exceptions import Resolver404

        from dashboard.accounts import SESSION_FLAG

        if request.session.get(SESSION_FLAG) and request.user.is_authenticated:
            try:
                name = resolve(request.path_info).url_name
            except Resolver404:
                name = None
            if name not in self.ALLOWED and not request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
                from django.http import HttpResponseRedirect
                from django_htmx.http import HttpResponseClientRedirect

                target = reverse("password_change")
                return HttpResponseClientRedirect(target) if request.headers.get("HX-Request") else HttpResponseRedirect(target)
        return self.get_response(request)


class LogContextMiddleware:
    """Puts the signed-in user, and the database and job run a URL names, on every log line of
    the request (dashboard.logs; the request id comes from RequestIdMiddleware). After
    LoginRequiredMiddleware: `process_view` reads the user it has already loaded."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from dashboard import logs

        token = logs.set_context()
        try:
            return self.get_response(request)
        finally:
            logs.reset_context(token)

    def process_view(self, request, view_func, view_args, view_kwargs):
        from dashboard import logs

        logs.set_context(**logs.request_context(request))
        return None
