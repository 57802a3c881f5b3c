"""Account state that Django's user model does not keep."""

from django.conf import settings
from django.db import models


class PasswordChangeRequired(models.Model):
    """Present while a user still signs in with the one-time password an admin (or
    `ensure_admin`) was shown: until they set their own, every page sends them to the
    password change form."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="password_change_required")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.user} must set a password"


class SsoIdentity(models.Model):
    """The identity provider's account behind a dashboard user: its issuer and subject (the
    provider's stable id for the person), and the email it last gave. A sign-in finds the user
    by issuer and subject only, never by email: an email can be reassigned or edited at the
    provider, and matching on it would hand someone a local account."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_sign_in = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="one_user_per_sso_subject")]
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"

    def __str__(self):
        return f"{self.subject} at {self.issuer}"
