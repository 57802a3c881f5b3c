"""Authentication backends: the provider's (OIDCBackend) and the local passwords' (LocalBackend)."""

import logging

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from dashboard import roles
from dashboard.sso import accounts, provider

log = logging.getLogger(__name__)

OIDC_BACKEND = "dashboard.sso.backends.OIDCBackend"


class SignInFailed(Exception):
    """A sign-in through the provider that cannot be trusted; the message is for the page."""


class OIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's authorization-code flow, with what it leaves to the application:

    - endpoints from the provider's discovery document (`provider.setting`), read when a
      sign-in needs them, never at start-up;
    - the ID token's issuer must be OIDC_ISSUER and its audience our client id (the library
      checks the signature, the algorithm, the expiry and the nonce, not these);
    - the userinfo's subject must be the ID token's;
    - users are found by issuer and subject, and get the role their groups give
      (`accounts.sign_in`), never matched by email.

    A failure leaves its reason in `request.sso_failure` for the callback's page and returns
    None; nothing of a token is logged."""

    get_settings = staticmethod(provider.setting)

    def __init__(self, *args, **kwargs):
        # The library reads the endpoints here; Django builds a backend for every
        # authenticate() and session lookup, so they are read when used instead.
        self.UserModel = get_user_model()

    OIDC_RP_IDP_SIGN_KEY = None
    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: provider.setting("OIDC_OP_TOKEN_ENDPOINT"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: provider.setting("OIDC_OP_USER_ENDPOINT"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: provider.setting("OIDC_OP_JWKS_ENDPOINT"))
    OIDC_RP_CLIENT_ID = property(lambda self: settings.OIDC_RP_CLIENT_ID)
    OIDC_RP_CLIENT_SECRET = property(lambda self: settings.OIDC_RP_CLIENT_SECRET)
    OIDC_RP_SIGN_ALGO = property(lambda self: settings.OIDC_RP_SIGN_ALGO)

    def authenticate(self, request, **kwargs):
        # Only the callback view signs in through here (it passes the nonce); a password
        # sign-in reaches this backend too and is none of its business.
        if request is None or not settings.SSO_ENABLED or "nonce" not in kwargs:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except SignInFailed as exc:
            reason = str(exc)
        except (SuspiciousOperation, jwt.InvalidTokenError) as exc:
            reason = f"The identity provider's answer did not verify ({describe(exc)})."
        except provider.ProviderUnavailable as exc:
            reason = str(exc)
        except requests.RequestException as exc:
            reason = f"The identity provider could not be reached ({exc.__class__.__name__})."
        log.warning("Single sign-on refused: %s", reason)
        request.sso_failure = reason
        return None

    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)
        if payload.get("iss") != settings.OIDC_ISSUER:
            raise SignInFailed(f"The ID token was issued by {payload.get('iss')!r}, not by OIDC_ISSUER "
                               f"{settings.OIDC_ISSUER!r}.")
        audience = payload.get("aud")
        audience = [audience] if isinstance(audience, str) else list(audience or [])
        if settings.OIDC_RP_CLIENT_ID not in audience or (len(audience) > 1 and
                                                          payload.get("azp") != settings.OIDC_RP_CLIENT_ID):
            raise SignInFailed("The ID token was not issued to this dashboard (its audience is another client).")
        return payload

    def get_or_create_user(self, access_token, id_token, payload):
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if str(userinfo.get("sub")) != str(payload.get("sub")):
            raise SignInFailed("The provider's userinfo names another subject than its ID token.")
        return accounts.sign_in(self.request, {**userinfo, "iss": payload["iss"], "sub": payload["sub"],
                                               **{k: v for k, v in payload.items() if k not in userinfo}})

    def get_user(self, user_id):
        # The library's get_user would keep a deactivated user's session.
        return ModelBackend.get_user(self, user_id)

    def user_can_authenticate(self, user):
        return user.is_active


def describe(exc):
    """What went wrong with a token, in words, never quoting it."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the ID token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the ID token is not valid yet"
    if isinstance(exc, (jwt.InvalidSignatureError, jwt.DecodeError)):
        return "the ID token's signature does not verify"
    text = str(exc)
    if "Nonce" in text:
        return "the ID token's nonce is not this sign-in's"
    if "verification failed" in text:
        return "the ID token's signature does not verify"
    if "JWKS" in text:
        return "no key of the provider matches the ID token"
    if "algorithm" in text:
        return "the ID token is signed with another algorithm than OIDC_SIGN_ALGORITHM"
    return exc.__class__.__name__


class LocalBackend(ModelBackend):
    """Local accounts and their passwords: the break-glass way in. With single sign-on on and
    SSO_LOCAL_LOGIN=admins, only admins may use it (their sessions included: a non-admin's
    local session ends when the setting is turned on)."""

    def user_can_authenticate(self, user):
        if not super().user_can_authenticate(user):
            return False
        if settings.SSO_ENABLED and settings.SSO_LOCAL_LOGIN == "admins":
            return roles.has_role(user, roles.ADMIN)
        return True
