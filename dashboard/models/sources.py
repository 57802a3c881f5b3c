"""What the records' sources of truth last said about them: 1Password (a secret's item,
metadata only) and the Upstash account (a database's settings and this month's commands).

Only values the dashboard validated are kept here (dashboard.sources): a version, a time, a
region code, a number. Nothing a source answers is stored as it came.
"""

from dataclasses import dataclass
from datetime import timedelta
from datetime import timezone as dt_timezone

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone


class SourceCheck(models.Model):
    """When a source was last asked, and how that went. A failed ask (unreachable, bad token,
    rate limited…) keeps the last known answer and marks it unverified since the first failure."""

    checked_at = models.DateTimeField(null=True, blank=True, editable=False, help_text="Last answer from the source.")
    unverified_since = models.DateTimeField(null=True, blank=True, editable=False)
    failure = models.CharField(max_length=16, blank=True, editable=False)
    failed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # "Check now": pending while no attempt came after it.
    requested_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True

    def attempted_at(self):
        times = [t for t in (self.checked_at, self.failed_at) if t]
        return max(times) if times else None

    def check_pending(self, now=None, wait=timedelta(minutes=2)):
        """True while a "check now" waits for its first attempt (for at most `wait`: after that
        the page says no worker took it, and stops asking)."""
        if not self.requested_at:
            return False
        attempted = self.attempted_at()
        if attempted and attempted >= self.requested_at:
            return False
        return (now or timezone.now()) - self.requested_at < wait

    def check_stalled(self, now=None):
        attempted = self.attempted_at()
        return bool(self.requested_at and not (attempted and attempted >= self.requested_at)
                    and not self.check_pending(now))


class SecretCheck(SourceCheck):
    """The 1Password item a secret's reference names, as the last check found it: only its
    version and its last change time (list calls only; no field is ever read)."""

    BROKEN, CHANGED, CHECKED = "broken", "changed", "checked"
    STATE_LABELS = {BROKEN: "reference broken", CHANGED: "changed, not recorded", CHECKED: "checked"}
    NO_VAULT, NO_ITEM, VAULTS, ITEMS = "no_vault", "no_item", "vaults", "items"
    BROKEN_REASONS = {
        NO_VAULT: "1Password has no vault by this name or id: it was renamed or deleted, or the Connect token "
                  "may not read it.",
        NO_ITEM: "The vault has no item by this title or id: it was renamed or deleted.",
        VAULTS: "Several vaults have this name: 1Password cannot tell which one the reference means.",
        ITEMS: "Several items in the vault have this title: 1Password cannot tell which one the reference means.",
    }

    secret = models.OneToOneField("dashboard.Secret", on_delete=models.CASCADE, related_name="source_check")
    broken = models.CharField(max_length=16, blank=True, editable=False, help_text="Why the reference is broken.")
    item_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    item_changed_at = models.DateTimeField(null=True, blank=True, editable=False,
                                           help_text="The item's updatedAt in 1Password.")
    # The last state an alert went out for: alerts fire once per transition.
    alerted_state = models.CharField(max_length=16, blank=True, editable=False)

    def __str__(self):
        return f"1Password check of {self.secret}"

    def state(self, grace):
        """broken, changed or checked (None before the first answer). Changed: the item changed
        in 1Password later than the last recorded rotation plus `grace` (or it never was)."""
        if self.broken:
            return self.BROKEN
        if self.item_changed_at is None:
            return None
        rotated = self.secret.last_rotated
        if rotated is None or self.item_changed_at > rotated + grace:
            return self.CHANGED
        return self.CHECKED


upstash_id = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$",
                            "Use the database id Upstash shows (letters, digits and dashes), e.g. "
                            "96ad0856-03b1-4ee7-9666-e81abd0349e1.")


@dataclass(frozen=True)
class Drift:
    field: str
    label: str
    recorded: object
    upstash: object

    @property
    def unrecorded(self):
        return self.recorded in (None, "", [])


@dataclass(frozen=True)
class Projection:
    commands: int  # this month's commands at the month's pace
    cost_usd: float
    budget_usd: int
    over: bool  # the projected cost passes the budget


class UpstashLink(SourceCheck):
    """A database record's Upstash side: which Upstash database it is (by id), the settings the
    team recorded for it, and what the Upstash Developer API last said (read only)."""

    # (field, label): compared with Upstash's answer. region and read_regions live on the
    # database record; the others here.
    COMPARED = (("region", "region"), ("read_regions", "read regions"), ("tls", "TLS"), ("eviction", "eviction"),
                ("budget", "budget"), ("max_request_size", "max request size"),
                ("max_entry_size", "max entry size"))
    ON_DATABASE = ("region", "read_regions")

    database = models.OneToOneField("dashboard.RedisDatabase", on_delete=models.CASCADE, related_name="upstash")
    upstash_id = models.CharField(max_length=64, blank=True, validators=[upstash_id], verbose_name="Upstash database id",
                                  help_text="From the Upstash console (the database's details). Never a password "
                                            "or token.")
    tls = models.BooleanField(null=True, blank=True, verbose_name="TLS")
    eviction = models.BooleanField(null=True, blank=True)
    budget = models.PositiveIntegerField(null=True, blank=True, verbose_name="monthly budget (USD)")
    max_request_size = models.PositiveBigIntegerField(null=True, blank=True, verbose_name="max request size (bytes)")
    max_entry_size = models.PositiveBigIntegerField(null=True, blank=True, verbose_name="max entry size (bytes)")

    found = models.BooleanField(null=True, blank=True, editable=False, help_text="False: Upstash has no such id.")
    observed = models.JSONField(default=dict, blank=True, editable=False,
                                help_text="Upstash's values of the compared settings, validated.")
    observed_name = models.CharField(max_length=200, blank=True, editable=False)
    anomalies = models.JSONField(default=list, blank=True, editable=False,
                                 help_text="Settings Upstash answered with an unexpected value (not kept).")
    monthly_commands = models.BigIntegerField(null=True, blank=True, editable=False,
                                              help_text="total_monthly_requests as Upstash counted them.")
    stats_at = models.DateTimeField(null=True, blank=True, editable=False)
    budget_alerted = models.BooleanField(default=False, editable=False)

    class Meta:
        verbose_name = "Upstash link"

    def __str__(self):
        return f"Upstash link of {self.database}"

    def recorded(self, field):
        return getattr(self.database if field in self.ON_DATABASE else self, field)

    def drift(self):
        """[Drift] for each compared setting where Upstash's value differs from the record's,
        or the record has none yet; [] before a successful check."""
        if not self.found:
            return []
        out = []
        for field, label in self.COMPARED:
            if field not in self.observed:
                continue
            upstash, recorded = self.observed[field], self.recorded(field)
            if field == "read_regions":
                same = sorted(upstash) == sorted(recorded or [])
            elif field == "region":
                same = (recorded or "").strip().lower() == upstash
            else:
                same = recorded == upstash
            if not same:
                out.append(Drift(field, label, recorded, upstash))
        return out

    def budget_usd(self):
        """The budget a projection is held to: the record's, else Upstash's."""
        return self.budget if self.budget is not None else self.observed.get("budget")

    def projection(self, price_per_100k):
        """This month's commands at the pace so far (from the stats' time; at least a day counts
        as gone, so a month's first hours project nothing wild), priced; None when unknown."""
        budget = self.budget_usd()
        if self.monthly_commands is None or self.stats_at is None or budget is None:
            return None
        at = self.stats_at.astimezone(dt_timezone.utc)  # Upstash bills calendar months (UTC)
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        elapsed = max(at - start, timedelta(days=1))
        commands = round(self.monthly_commands * ((end - start) / elapsed))
        cost = round(commands * price_per_100k / 100_000, 6)  # to the micro-dollar: no float noise at the line
        return Projection(commands=commands, cost_usd=cost, budget_usd=budget, over=cost > budget)
