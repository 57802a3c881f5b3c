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
