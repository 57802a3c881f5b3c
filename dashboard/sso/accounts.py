"""A sign-in through the provider, after its tokens were verified: which dashboard user it is,
with which role, or why not. Every outcome is audited, naming the provider's subject and email."""

import hashlib
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from dashboard import audit, roles
from dashboard.models import SsoIdentity
from dashboard.sso import provider

AUDIT_SOURCE = "sso"


@dataclass(frozen=True)
class Refusal:
    """Why a verified user was not let in, for the refusal page."""

    email: str
    reason: str  # "no_role" or "deactivated"
    groups_with_a_role: list = field(default_factory=list)


def _identity(claims):
    return {"iss": claims["iss"], "sub": str(claims["sub"]), "email": (claims.get("email") or "").strip().lower()}


def _username_for(identity, claims):
    """The email (what people recognise in the audit log), else the preferred username; when
    that is taken (a local account, another subject), a suffix from the subject."""
    base = identity["email"] or str(claims.get("preferred_username") or "") or "sso-user"
    base = base[:130]
    users = get_user_model().objects
    if not users.filter(username__iexact=base).exists():
        return base
    return f"{base}-{hashlib.sha256(identity['sub'].encode()).hexdigest()[:8]}"


def _audit(request, action, user, identity, **after):
    """An audit entry about `user` (None: a person refused before they had an account here),
    naming the provider's issuer, subject and email."""
    details = {"issuer": identity["iss"], "subject": identity["sub"], "email": identity["email"], **after}
    if user is not None:
        audit.record(request=request, action=action, actor=user, target=user, after=details, source=AUDIT_SOURCE)
    else:
        audit.record(request=request, action=action, actor_label=f"sso:{identity['email'] or identity['sub']}"[:150],
                     target_type="sso.identity", target_id=identity["sub"], target_label=identity["email"],
                     after=details, source=AUDIT_SOURCE)


def sign_in(request, claims):
    """The dashboard user for verified `claims` (the ID token's, merged with the userinfo's),
    created at the first sign-in and found by issuer and subject after that, with the role
    their groups give now; or None, with `request.sso_refusal` saying why, when no group maps
    to a role (a user who had one loses it) or the user was deactivated in the dashboard.

    A session refresh (the same user signed in again silently) re-evaluates the role like a
    sign-in; it is audited only when the role changes or the user is refused."""
    identity = _identity(claims)
    groups = provider.groups_of(claims)
    role = provider.role_for(groups)
    mapped = sorted(group for group in groups if group in settings.OIDC_GROUP_ROLES)
    current = getattr(request, "user", None)
    with transaction.atomic():
        linked = (SsoIdentity.objects.select_for_update().select_related("user")
                  .filter(issuer=identity["iss"], subject=identity["sub"]).first())
        user = linked.user if linked else None
        refreshing = bool(user and current is not None and current.is_authenticated and current.pk == user.pk)
        if role is None:
            had = roles.role_of(user) if user else None
            if had:
                roles.clear_role(user)
            _audit(request, "sso.refused", user, identity, reason="no_role", role_before=had,
                   groups=sorted(groups)[:50])
            request.sso_refusal = Refusal(identity["email"], "no_role", sorted(settings.OIDC_GROUP_ROLES))
            return None
        if user is None:
            user = get_user_model().objects.create_user(_username_for(identity, claims), email=identity["email"])
            user.set_unusable_password()  # a provider's user never signs in with a password here
            user.save(update_fields=["password"])
            linked = SsoIdentity.objects.create(user=user, issuer=identity["iss"], subject=identity["sub"],
                                                email=identity["email"])
            _audit(request, "user.create", user, identity, role=role)
        elif not user.is_active:
            _audit(request, "sso.refused", user, identity, reason="deactivated")
            request.sso_refusal = Refusal(identity["email"], "deactivated")
            return None
        before = roles.role_of(user)
        if before != role:
            roles.set_role(user, role)
            _audit(request, "user.role", user, identity, role=role, role_before=before, groups=mapped)
        if not refreshing:
            _audit(request, "sso.sign_in", user, identity, role=role, groups=mapped)
        if user.email != identity["email"]:
            user.email = identity["email"]
            user.save(update_fields=["email"])
        linked.email, linked.last_sign_in = identity["email"], timezone.now()
        linked.save(update_fields=["email", "last_sign_in"])
    return user
