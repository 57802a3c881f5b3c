"""What the demo provider says about a person: a stable subject, email, username, and the
`groups` claim (scope `groups`) the dashboard maps to roles."""

import hashlib

from oidc_provider.lib.claims import ScopeClaims


def subject(user):
    """A subject that stays the same when the provider's database is made anew (`make run`
    starts a fresh one), so the dashboard keeps recognising the person."""
    return hashlib.sha256(f"demo-provider:{user.username}".encode()).hexdigest()[:24]


def userinfo(claims, user):
    claims.update(email=user.email, email_verified=True, preferred_username=user.username,
                  name=user.get_full_name() or user.username)
    return claims


class GroupsClaims(ScopeClaims):
    info_groups = ("Groups", "The groups you are in.")

    def scope_groups(self):
        return {"groups": sorted(self.user.groups.values_list("name", flat=True))}
