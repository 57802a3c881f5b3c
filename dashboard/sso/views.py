"""Sign-in pages: the login page (with the provider's button), the start of a sign-in at the
provider, and the callback with its answers: in, refused (no role), or failed (why)."""

import re

from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, get_next_url

from dashboard.forms import LoginForm
from dashboard.sso import SESSION_KEY, provider

# Errors a provider answers a silent refresh (prompt=none) with when the person must sign in
# there again: their provider session ended. Not a failure: back to the login page.
SAFE_ERROR = re.compile(r"[a-z_]{1,64}")
INTERACTION_NEEDED = ("login_required", "interaction_required", "consent_required", "account_selection_required")


class LoginPage(auth_views.LoginView):
    """Django's login page, with the single sign-on button when SSO is on."""

    authentication_form = LoginForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(sso_enabled=settings.SSO_ENABLED, sso_provider_name=settings.OIDC_PROVIDER_NAME,
                       local_admins_only=settings.SSO_ENABLED and settings.SSO_LOCAL_LOGIN == "admins")
        return context


def failed(request, reason, status=403):
    """The page of a sign-in that did not go through, saying why (never quoting a token)."""
    return render(request, "sso/failed.html", {"reason": reason, "provider_name": settings.OIDC_PROVIDER_NAME},
                  status=status)


@login_not_required
@require_GET
@never_cache
def sso_start(request):
    """Send the browser to the provider to sign in (authorization code + PKCE)."""
    if not settings.SSO_ENABLED:
        raise Http404("Single sign-on is not configured.")
    try:
        url = provider.authorization_url(request, next_url=get_next_url(request, "next"))
    except provider.ProviderUnavailable as exc:
        return failed(request, str(exc), status=503)
    return HttpResponseRedirect(url)


@method_decorator([login_not_required, never_cache], name="dispatch")
class CallbackView(OIDCAuthenticationCallbackView):
    """mozilla-django-oidc's callback (state, nonce and PKCE checked against the session),
    with pages of our own for its other outcomes. Any outcome but success signs the browser's
    user out: a refused session refresh ends the session."""

    @property
    def failure_url(self):
        return reverse("login")

    def get(self, request):
        if not settings.SSO_ENABLED:
            raise Http404("Single sign-on is not configured.")
        request.sso_attempt = True  # not a password guess: dashboard.lockout does not count it
        try:
            return super().get(request)
        except SuspiciousOperation:  # a state this browser never started, or one used already
            self._sign_out()
            return failed(request, "This sign-in answer belongs to no sign-in started in this browser (or it was "
                                   "used already). Start again.", status=400)

    def _sign_out(self):
        if self.request.user.is_authenticated:
            auth.logout(self.request)

    def login_success(self):
        response = super().login_success()
        identity = self.request.session.get(SESSION_KEY)
        link = getattr(self.user, "sso_identity", None)
        if link is not None and (identity or {}).get("sub") != link.subject:
            self.request.session[SESSION_KEY] = {"iss": link.issuer, "sub": link.subject, "email": link.email}
        return response

    def login_failure(self):
        request = self.request
        self._sign_out()
        refusal = getattr(request, "sso_refusal", None)
        if refusal is not None:
            return render(request, "sso/refused.html", {"refusal": refusal,
                                                        "provider_name": settings.OIDC_PROVIDER_NAME}, status=403)
        if getattr(request, "axes_locked_out", False):
            return HttpResponseRedirect(self.failure_url)  # AxesMiddleware answers with the lockout page
        error = request.GET.get("error", "")
        if error in INTERACTION_NEEDED:
            messages.info(request, f"Your {settings.OIDC_PROVIDER_NAME} session has ended: sign in again.")
            return HttpResponseRedirect(self.failure_url)
        if error:
            # An error code is a short token (RFC 6749 4.1.2.1); anything else is not the provider's.
            code = error if SAFE_ERROR.fullmatch(error) else "an unexpected error"
            return failed(request, f"The identity provider answered {code}"
                                   + (": access was denied there." if error == "access_denied" else "."))
        return failed(request, getattr(request, "sso_failure", "") or "The sign-in could not be completed.")
