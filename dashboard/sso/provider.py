"""The OpenID provider as the dashboard sees it: its discovery document, the authorization
request, and which role a user's groups give."""

import threading
import time
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.urls import reverse
from django.utils.crypto import get_random_string
from mozilla_django_oidc.utils import (absolutify, add_state_and_verifier_and_nonce_to_session,
                                       generate_code_challenge, import_from_settings)

from dashboard import roles

# mozilla-django-oidc's endpoint settings, read from the discovery document instead.
ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
DISCOVERY_CACHE_SECONDS = 3600

_cache = {}
_lock = threading.Lock()


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be read, or does not fit OIDC_ISSUER."""


def discovery():
    """The provider's discovery document, fetched once an hour per process. Its `issuer` must
    be OIDC_ISSUER exactly (OpenID Connect Discovery 1.0, section 4.3): a document that names
    another issuer is refused, so a wrong discovery URL cannot hand out another provider's
    tokens."""
    url, issuer = settings.OIDC_DISCOVERY_URL, settings.OIDC_ISSUER
    now = time.monotonic()
    with _lock:
        hit = _cache.get((url, issuer))
        if hit and now - hit[0] < DISCOVERY_CACHE_SECONDS:
            return hit[1]
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"The identity provider's discovery document ({url}) could not be read: "
                                  f"{exc.__class__.__name__}.") from exc
    if document.get("issuer") != issuer:
        raise ProviderUnavailable(f"The identity provider at {url} names its issuer {document.get('issuer')!r}, "
                                  f"but OIDC_ISSUER is {issuer!r}: tokens from it are not accepted.")
    missing = [key for key in ENDPOINTS.values() if not document.get(key)]
    if missing:
        raise ProviderUnavailable(f"The identity provider's discovery document has no {', '.join(missing)}.")
    with _lock:
        _cache[(url, issuer)] = (now, document)
    return document


def forget():
    """Drop the cached discovery documents (tests; a provider that moved)."""
    with _lock:
        _cache.clear()


def setting(name, *default):
    """mozilla-django-oidc's `get_settings`: endpoints from the discovery document, the
    rest from Django's settings."""
    if name in ENDPOINTS:
        return discovery()[ENDPOINTS[name]]
    return import_from_settings(name, *default)


def authorization_url(request, *, next_url=None, prompt=None):
    """The provider's authorization URL for an authorization-code flow with PKCE, a state and a
    nonce kept in the session (mozilla-django-oidc's callback checks them); `prompt="none"`
    for a silent session refresh. Where to go after the callback: `next_url`."""
    state, nonce = get_random_string(32), get_random_string(32)
    verifier = get_random_string(64)
    params = {
        "response_type": "code",
        "scope": settings.OIDC_RP_SCOPES,
        "client_id": settings.OIDC_RP_CLIENT_ID,
        "redirect_uri": absolutify(request, reverse("oidc_authentication_callback")),
        "state": state,
        "nonce": nonce,
        "code_challenge": generate_code_challenge(verifier, "S256"),
        "code_challenge_method": "S256",
    }
    if prompt:
        params["prompt"] = prompt
    endpoint = setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
    add_state_and_verifier_and_nonce_to_session(request, state, params, verifier)
    request.session["oidc_login_next"] = next_url
    return f"{endpoint}?{urlencode(params)}"


def groups_of(claims):
    """The groups claim (OIDC_GROUPS_CLAIM) as a list of strings: a list, or one string."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    return [str(group) for group in value if isinstance(group, (str, int))]


def role_for(groups, mapping=None):
    """The strongest role any of `groups` maps to in OIDC_GROUP_ROLES, or None."""
    mapping = settings.OIDC_GROUP_ROLES if mapping is None else mapping
    found = {mapping[group] for group in groups if group in mapping}
    for role in reversed(roles.ROLES):
        if role in found:
            return role
    return None
