from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Records"

    def ready(self):
        from dashboard import accounts, roles  # noqa: F401 - accounts connects its sign-in receiver
        from dashboard.sso import checks  # noqa: F401 - registers the deploy check

        post_migrate.connect(roles.ensure_roles_after_migrate, sender=self)
