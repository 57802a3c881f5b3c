"""Account rules: a new user sets their own password at first sign-in, and a deactivated
user's sessions end."""

from django.contrib.auth.signals import user_logged_in
from django.contrib.sessions.models import Session
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from dashboard import audit
from dashboard.models import PasswordChangeRequired

SESSION_FLAG = "must_set_password"


def require_password_change(user):
    """`user` signs in with a password someone else has seen: make them set their own."""
    PasswordChangeRequired.objects.get_or_create(user=user)


@receiver(user_logged_in, dispatch_uid="dashboard.accounts.flag_password_change")
def _flag_session(sender, request, user, **kwargs):
    # Read once at sign-in and kept in the session, so pages cost no extra query.
    if request is not None and hasattr(request, "session"):
        if PasswordChangeRequired.objects.filter(user=user).exists():
            request.session[SESSION_FLAG] = True
        else:
            request.session.pop(SESSION_FLAG, None)


def password_set(request):
    """The signed-in user chose their own password (Django's password change form): no
    longer required, and audited."""
    with transaction.atomic():
        required = PasswordChangeRequired.objects.filter(user=request.user).delete()[0] > 0
        audit.record(request=request, action="user.password_change", target=request.user,
                     after={"first_sign_in": required})
    request.session.pop(SESSION_FLAG, None)


def end_sessions(user):
    """Delete every session signed in as `user`; returns how many. Sessions live in the
    database, keyed by a random id, so each live one is decoded: a few hundred at most for
    an internal dashboard."""
    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if session.get_decoded().get("_auth_user_id") == str(user.pk):
            session.delete()
            ended += 1
    return ended
