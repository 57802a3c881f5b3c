"""Records kept in Postgres: the durable, auditable side of the runbook."""

from dashboard.models.core import Access, AuditEntry, RedisDatabase, env_var_name
from dashboard.models.runbook import AccountAccess, ChecklistItem, PhaseMapping
from dashboard.models.secrets import EnvVar, Rotation, Secret
from dashboard.models.alerts import AlertChannel, AlertDelivery
from dashboard.models.accounts import PasswordChangeRequired, SsoIdentity
from dashboard.models.sources import SecretCheck, UpstashLink

__all__ = [
    "Access", "AuditEntry", "RedisDatabase", "env_var_name",
    "AccountAccess", "ChecklistItem", "PhaseMapping",
    "Secret", "Rotation", "EnvVar",
    "AlertChannel", "AlertDelivery",
    "PasswordChangeRequired", "SsoIdentity",
    "SecretCheck", "UpstashLink",
]
