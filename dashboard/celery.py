"""The Celery application: worker and beat both start from here."""

import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _log_handlers(logger=None, **kwargs):
    from django.conf import settings

    from dashboard import logs

    logs.configure_celery_handlers(logger, settings.LOG_FORMAT)


# Celery sets up the worker's and beat's logging itself (root and task logger): the secret
# scanner and, with LOG_FORMAT=json, the JSON lines go onto the handlers it installs.
after_setup_logger.connect(_log_handlers, weak=False)
after_setup_task_logger.connect(_log_handlers, weak=False)
