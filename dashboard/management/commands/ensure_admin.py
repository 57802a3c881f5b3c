import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils.crypto import get_random_string

from dashboard import audit, roles
from dashboard.command_scanning import RefuseSecretArguments


class Command(RefuseSecretArguments, BaseCommand):
    help = (
        "Create the first admin account when no admin exists. The password comes from "
        "DASHBOARD_ADMIN_PASSWORD, or is generated and printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DASHBOARD_ADMIN_USERNAME", "admin"))

    def handle(self, *args, username, **options):
        User = get_user_model()
        if any(roles.has_role(u, roles.ADMIN) for u in User.objects.filter(is_active=True)):
            self.stdout.write("ensure_admin: an admin account exists; nothing to do.")
            return
        password = os.environ.get("DASHBOARD_ADMIN_PASSWORD") or get_random_string(20)
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_active = True
            user.save()
            roles.set_role(user, roles.ADMIN)
            if not os.environ.get("DASHBOARD_ADMIN_PASSWORD"):
                from dashboard import accounts

                accounts.require_password_change(user)  # the printed password is for the first sign-in only
            audit.record(action="user.create" if created else "user.role", target=user,
                         after={"username": username, "role": roles.ADMIN}, actor_label="ensure_admin", source="cli")
        if os.environ.get("DASHBOARD_ADMIN_PASSWORD"):
            self.stdout.write(f"ensure_admin: created admin '{username}' with the password from DASHBOARD_ADMIN_PASSWORD.")
        else:
            self.stdout.write(f"ensure_admin: created admin '{username}' with password: {password}  (shown once; "
                              "it asks for a new password at the first sign-in)")
