from continuity.models.namespaces import Namespace, PolicyStatus, classify_key, namespace_for_key  # noqa: F401
