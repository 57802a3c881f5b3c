from continuity.models.namespaces import Namespace  # noqa: F401
from continuity.models.reviews import FINDINGS, ReviewNamespaceStat, ReviewRun, ReviewSample  # noqa: F401
