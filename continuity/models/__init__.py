from continuity.models.namespaces import Namespace  # noqa: F401
