"""Login throttling on top of django-axes: its username + IP lockout, plus an IP-wide one,
so one address cannot try many usernames (AXES_FAILURE_LIMIT for each, ten usernames at a
time...) without ever being locked."""

import ipaddress

from django.conf import settings
from django.db.models import Sum

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_failure_limit
from axes.models import AccessAttempt

from dashboard.scanning import find_secrets

# What the lockout tables hold in place of a username that looks like a secret. Brackets are
# not allowed in a username, so it never names a real account; failures under it still count
# for the address.
SECRET_USERNAME = "[secret-like username]"


class LockoutHandler(AxesDatabaseHandler):
    """axes counts failures per lockout parameter and compares the largest with one limit
    (AXES_FAILURE_LIMIT). The failures of one IP across every username are scaled to that
    limit, so the IP is locked after AXES_IP_FAILURE_LIMIT failures in the cool-off time."""

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        """A failed single sign-on (a refused user, a tampered token, a provider error) is no
        password guess: it is not counted, so a person without a role cannot lock out everyone
        behind the same address. An attempt from a locked-out address goes on to axes, which
        answers it with the lockout page."""
        if getattr(request, "sso_attempt", False) and not self.is_locked(request, credentials):
            return
        super().user_login_failed(sender, credentials, request, **kwargs)

    def get_failures(self, request, credentials=None):
        per_username = super().get_failures(request, credentials)  # also drops expired attempts
        ip_address = getattr(request, "axes_ip_address", None)
        if not ip_address:
            return per_username
        from_ip = AccessAttempt.objects.filter(ip_address=ip_address).aggregate(
            total=Sum("failures_since_start"))["total"] or 0
        scaled = from_ip * get_failure_limit(request, credentials) // settings.AXES_IP_FAILURE_LIMIT
        return max(per_username, scaled)


def client_ip(request):
    """The client address the lockout is keyed on (AXES_CLIENT_IP_CALLABLE). With
    DJANGO_PROXY_COUNT = N trusted proxies in front, each appending its peer to
    X-Forwarded-For, the client is the N-th entry from the right; anything left of it was
    written by the client and is ignored. Without proxies, or when the header is shorter
    than promised, REMOTE_ADDR."""
    remote = request.META.get("REMOTE_ADDR")
    count = settings.DJANGO_PROXY_COUNT
    if count <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < count:
        return remote
    candidate = forwarded[-count]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def lockout_username(request, credentials=None):
    """The username axes keys failures on and stores (AXES_USERNAME_CALLABLE): the one typed,
    unless it looks like a secret, which is never stored (SECRET_USERNAME instead)."""
    if credentials:
        name = credentials.get(settings.AXES_USERNAME_FORM_FIELD)
    else:
        name = getattr(request, "data", request.POST).get(settings.AXES_USERNAME_FORM_FIELD)
    if isinstance(name, str) and find_secrets(name):
        return SECRET_USERNAME
    return name
