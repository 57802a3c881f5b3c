from continuity.models.namespaces import Namespace, classify_key  # noqa: F401
from continuity.models.reviews import FINDINGS, ReviewNamespaceStat, ReviewNodeRun, ReviewRun, ReviewSample  # noqa: F401
from continuity.models.purges import PolicyReport, PurgeRun, PurgeTargetKey  # noqa: F401
from continuity.models.watch import KeyspaceCheck  # noqa: F401
