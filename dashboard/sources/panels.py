"""What the record pages say about the sources of truth: a secret's 1Password panel and a
database record's Upstash panel (None while the source is not configured: no page shows it)."""

from dataclasses import dataclass

from django.conf import settings

from dashboard.models import RedisDatabase, Secret, SecretCheck, UpstashLink
from dashboard.sources import FAILURES, onepassword_configured, upstash_configured
from dashboard.sources import secrets as onepassword_checks


@dataclass(frozen=True)
class SecretPanel:
    """What the secret page says about 1Password."""

    secret: Secret
    check: SecretCheck | None
    grace_hours: float
    error: str = ""

    @property
    def state(self):
        return self.check.state(onepassword_checks.grace()) if self.check else None

    @property
    def label(self):
        return SecretCheck.STATE_LABELS.get(self.state, "")

    @property
    def broken_reason(self):
        return SecretCheck.BROKEN_REASONS.get(self.check.broken, "") if self.check else ""

    @property
    def failure(self):
        return FAILURES.get(self.check.failure, "") if self.check and self.check.unverified_since else ""


@dataclass(frozen=True)
class DatabasePanel:
    """What the database page says about Upstash."""

    database: RedisDatabase
    link: UpstashLink | None
    error: str = ""

    @property
    def drift(self):
        return self.link.drift() if self.link else []

    @property
    def projection(self):
        return self.link.projection(settings.REDIS_PRICE_PER_100K_COMMANDS) if self.link else None

    @property
    def failure(self):
        return FAILURES.get(self.link.failure, "") if self.link and self.link.unverified_since else ""


def secret_panel(secret, error=""):
    """The 1Password panel of a secret's page, or None when 1Password is not configured."""
    if not onepassword_configured():
        return None
    check = SecretCheck.objects.filter(secret=secret).first()
    if check:
        check.secret = secret  # the state compares with this secret's last rotation, as shown
    return SecretPanel(secret, check, settings.ONEPASSWORD_CHANGE_GRACE_HOURS, error)


def database_panel(database, error=""):
    """The Upstash panel of a database record's page, or None when Upstash is not configured."""
    if not upstash_configured():
        return None
    link = UpstashLink.objects.filter(database=database).first()
    if link:
        link.database = database
    return DatabasePanel(database, link, error)
