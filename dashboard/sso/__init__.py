"""Single sign-on with OpenID Connect (mozilla-django-oidc), beside the local accounts.

- `provider`: the provider's discovery document (OIDC_ISSUER), the authorization request,
  the groups claim → role mapping (OIDC_GROUP_ROLES).
- `accounts`: a sign-in's verified claims → the dashboard user (by issuer and subject, never by
  email), its role, the refusal of a user whose groups map to no role, the audit entries.
- `backends`: the OIDC backend (the checks mozilla-django-oidc leaves out: issuer, audience)
  and the local password backend (break-glass; admins only with SSO_LOCAL_LOGIN=admins).
- `views`, `middleware`: sign-in, the callback's pages, and the session refresh that
  re-evaluates the role every OIDC_SESSION_REFRESH_SECONDS.
- `checks`: `manage.py check --deploy` warns when SSO is on without HTTPS.
"""

# The provider's issuer, subject and email of the signed-in user, kept in the session at
# sign-in: every audit entry the user's requests write names them (dashboard.audit).
SESSION_KEY = "sso_identity"


def actor_label(username, identity):
    """The audit log's name for a user signed in through the provider: the username with the
    provider's subject and email, within the 150 characters of the column."""
    subject, email = identity.get("sub", ""), identity.get("email", "")
    label = f"{username} (sso sub={subject}" + (f" email={email}" if email and email != username else "") + ")"
    return label if len(label) <= 150 else label[:149] + "…"
