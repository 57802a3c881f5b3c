"""`manage.py check --deploy`: single sign-on without HTTPS."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def sso_needs_https(app_configs=None, **kwargs):
    """With SSO on, the provider sends the authorization code to the callback URL and the
    session cookie then stands for the person: both travel in clear without HTTPS."""
    if not settings.SSO_ENABLED:
        return []
    problems = []
    if not settings.HTTPS:
        problems.append("DJANGO_HTTPS is off")
    elif not settings.SESSION_COOKIE_SECURE:
        problems.append("the session cookie is not marked Secure")
    elif not settings.SECURE_SSL_REDIRECT:
        problems.append("plain HTTP requests are not redirected to HTTPS")
    if not problems:
        return []
    return [Warning(
        f"Single sign-on is configured (OIDC_ISSUER) without HTTPS: {'; '.join(problems)}.",
        hint="The provider sends the authorization code to the callback over this connection and the session "
             "cookie then stands for the person. Serve the dashboard over HTTPS (DJANGO_HTTPS=1, and "
             "DJANGO_BEHIND_TLS_PROXY=1 behind a TLS proxy).",
        id="dashboard.W001",
    )]
