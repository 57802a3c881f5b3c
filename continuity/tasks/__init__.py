"""Celery tasks of the keyspace side, one module per operation. Importing the submodules
here lets `app.autodiscover_tasks()` (which imports `continuity.tasks`) register them."""

from continuity.tasks import review  # noqa: F401
from continuity.tasks import health  # noqa: F401
from continuity.tasks import purge  # noqa: F401
from continuity.tasks import log_context  # noqa: F401
from continuity.tasks import watch  # noqa: F401
