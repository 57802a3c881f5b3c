from continuity.models.namespaces import Namespace  # noqa: F401
from continuity.models.purges import PurgeRun  # noqa: F401
