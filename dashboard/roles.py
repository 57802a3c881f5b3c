"""The three roles: viewer (reads everything), operator (changes records and keyspace),
admin (users and roles). Roles are groups holding the permissions of `Access`."""

from functools import wraps

from django.contrib.auth.management import create_permissions
from django.core.exceptions import PermissionDenied

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)
ROLE_PERMISSIONS = {
    VIEWER: ("read",),
    OPERATOR: ("read", "operate"),
    ADMIN: ("read", "operate", "administer"),
}
_PERM = {VIEWER: "dashboard.read", OPERATOR: "dashboard.operate", ADMIN: "dashboard.administer"}


def ensure_roles():
    """Create the role groups with exactly their permissions. Idempotent."""
    from django.apps import apps
    from django.contrib.auth.models import Group, Permission

    create_permissions(apps.get_app_config("dashboard"), verbosity=0)
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = Permission.objects.filter(content_type__app_label="dashboard", codename__in=codenames)
        group.permissions.set(perms)


def ensure_roles_after_migrate(sender, **kwargs):
    ensure_roles()


def has_role(user, role):
    """True when an active user holds `role` or a stronger one."""
    return bool(user and user.is_active and user.has_perm(_PERM[role]))


def role_of(user):
    """The strongest role a user holds, or None."""
    for role in reversed(ROLES):
        if has_role(user, role):
            return role
    return None


def set_role(user, role):
    from django.contrib.auth.models import Group

    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    user.groups.set([Group.objects.get(name=role)])
    # Django caches permissions on the user object.
    for attr in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(attr, None)


def clear_role(user):
    """Take every role from `user` (single sign-on: their groups no longer map to one)."""
    user.groups.clear()
    for attr in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(attr, None)


def require_role(user, role):
    """For commands and tasks: raise PermissionDenied unless `user` holds `role`."""
    if not has_role(user, role):
        name = getattr(user, "username", None) or "anonymous"
        raise PermissionDenied(f"{name} needs the {role} role for this.")


def role_required(role):
    """View decorator: 403 unless the signed-in user holds `role` (login is enforced by
    LoginRequiredMiddleware before this runs)."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            require_role(request.user, role)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
