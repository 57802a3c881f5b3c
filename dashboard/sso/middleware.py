"""The session refresh: a session signed in through the provider is sent back to it every
OIDC_SESSION_REFRESH_SECONDS (silently, prompt=none), so the role is evaluated again and a
person removed from the group loses access within that interval."""

import time

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, logout
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect

from dashboard.sso import provider
from dashboard.sso.backends import OIDC_BACKEND

EXPIRY_KEY = "oidc_id_token_expiration"  # set by mozilla-django-oidc's callback at each sign-in


class SessionRefreshMiddleware:
    """After AuthenticationMiddleware. Every request of an expired SSO session is refused and
    sent to the provider, whatever its method: a page load is redirected (and comes back to the
    same page), an htmx request gets HX-Redirect, a form post is redirected to the provider and
    then to the page it was posted from (the post is not replayed: the person submits it again,
    with the role they have now). mozilla-django-oidc's own SessionRefresh refreshes GET page
    loads only and would let an htmx or POST request through with the old role.

    The provider unreachable: the session ends (the role cannot be confirmed) and the failure
    page says so; a local break-glass admin can still sign in."""

    EXEMPT = ("oidc_authentication_init", "oidc_authentication_callback", "logout", "login", "healthz", "metrics")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.SSO_ENABLED and self._expired(request):
            return self._refresh(request)
        return self.get_response(request)

    def _expired(self, request):
        if request.session.get(BACKEND_SESSION_KEY) != OIDC_BACKEND or not request.user.is_authenticated:
            return False
        if request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
            return False
        if request.path_info in {reverse(name) for name in self.EXEMPT}:
            return False
        return request.session.get(EXPIRY_KEY, 0) <= time.time()

    def _refresh(self, request):
        from dashboard.sso.views import failed

        try:
            url = provider.authorization_url(request, next_url=self._back_to(request), prompt="none")
        except provider.ProviderUnavailable as exc:
            logout(request)
            return failed(request, f"{exc} Your session could not be renewed and has ended.", status=503)
        if request.headers.get("HX-Request"):
            return HttpResponseClientRedirect(url)
        return HttpResponseRedirect(url, status=302 if request.method in ("GET", "HEAD") else 303)

    @staticmethod
    def _back_to(request):
        """Where the browser returns after the refresh: this page for a page load; for htmx and
        form posts the page the person was on (HX-Current-URL, Referer) when it is ours."""
        if request.method in ("GET", "HEAD") and not request.headers.get("HX-Request"):
            return request.get_full_path()
        for candidate in (request.headers.get("HX-Current-URL"), request.headers.get("Referer")):
            if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                            require_https=request.is_secure()):
                return candidate
        return None
