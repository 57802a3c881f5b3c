"""Namespaces of the monitored keyspace and their TTL policies."""

from django.db import models

from continuity.humanize import ttl_band
from continuity.policy import Policies, Policy

from dashboard.models import RedisDatabase


class NamespaceQuerySet(models.QuerySet):
    def for_database(self, database):
        return self.filter(database=database).order_by("prefix")

    def policies(self):
        """These namespaces' `continuity.policy.Policies` (each owned by its row)."""
        return Policies.of(self)


class Namespace(models.Model):
    """A literal key prefix (e.g. `lucia:session:`) with the policy its keys must meet."""

    TYPES = [("", "any"), ("string", "string"), ("hash", "hash"), ("list", "list"), ("set", "set"),
             ("zset", "sorted set"), ("stream", "stream"), ("ReJSON-RL", "JSON")]
    REPORT, APPLY_TTL, DELETE = "report", "apply_ttl", "delete"
    ACTIONS = [(REPORT, "Report only"), (APPLY_TTL, "Apply the policy TTL"), (DELETE, "Delete")]

    database = models.ForeignKey(RedisDatabase, on_delete=models.CASCADE, related_name="namespaces")
    name = models.SlugField(max_length=64)
    prefix = models.CharField(max_length=255, help_text="Literal key prefix, e.g. lucia:session:")
    purpose = models.CharField(max_length=255, blank=True)
    expected_type = models.CharField(max_length=16, choices=TYPES, blank=True)
    min_ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    max_ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    ttl_required = models.BooleanField(default=True)
    max_payload_bytes = models.PositiveIntegerField(
        default=16 * 1024, help_text="Largest allowed size as Redis's MEMORY USAGE reports it."
    )
    fallback_note = models.TextField(blank=True, verbose_name="fallback if expired")
    violation_action = models.CharField(max_length=16, choices=ACTIONS, default=REPORT)
    sensitive = models.BooleanField(
        default=False, help_text="Its values are sensitive: viewers see a key's metadata only, and an operator's "
                                 "every read of a value is audited.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = NamespaceQuerySet.as_manager()

    class Meta:
        ordering = ["database__name", "prefix"]
        constraints = [
            models.UniqueConstraint(fields=["database", "prefix"], name="namespace_unique_prefix"),
            models.UniqueConstraint(fields=["database", "name"], name="namespace_unique_name"),
        ]

    def __str__(self):
        return self.prefix

    def ttl_band(self):
        """Human form of the TTL policy, e.g. '15m – 1h'."""
        return ttl_band(self.min_ttl_seconds, self.max_ttl_seconds)

    def policy(self):
        """This namespace's rules as the frozen `continuity.policy.Policy` every consumer uses."""
        return Policy.of(self)

    def classify(self, meta):
        """The PolicyStatus (badge) of one `KeyMeta` against this namespace's policy."""
        return self.policy().status(meta)

    def prefix_problem(self):
        """Why this namespace's prefix may not be saved, or "". A namespace lies strictly
        inside its database's key prefix, and covers neither the key prefix nor another
        namespace of any record on the same Redis keyspace (`RedisDatabase.objects.on_keyspace_of`):
        a purge of it would reach into theirs. It may narrow one (longest prefix wins)."""
        database, prefix = self.database, self.prefix
        if not prefix.startswith(database.key_prefix):
            return f"A namespace prefix must start with the database's key prefix {database.key_prefix!r}."
        if prefix == database.key_prefix:
            return (f"A namespace prefix must be longer than the database's key prefix {database.key_prefix!r}: "
                    "the whole database is not a namespace.")
        records = RedisDatabase.objects.on_keyspace_of(database) or [database]
        for record in records:
            if record.pk != database.pk and record.key_prefix.startswith(prefix):
                return (f"This prefix covers the whole key prefix {record.key_prefix!r} of {record.name}, which "
                        "monitors the same Redis keyspace.")
        others = Namespace.objects.filter(database__in=[r.pk for r in records if r.pk]).exclude(pk=self.pk)
        if others.filter(database=database, prefix=prefix).exists():
            return "Another namespace of this database has that prefix."
        covered = sorted({(o.prefix, o.database_id) for o in others if o.prefix.startswith(prefix) and
                          (o.prefix != prefix)})
        if covered:
            where = "" if covered[0][1] == database.pk else f" of {RedisDatabase.objects.get(pk=covered[0][1]).name}"
            more = f" and {len(covered) - 1} more" if len(covered) > 1 else ""
            return (f"This prefix covers the namespace {covered[0][0]!r}{where}{more}; choose a prefix that does not "
                    "contain another namespace.")
        return ""


def classify_key(namespaces, meta):
    """(namespace or None, PolicyStatus) for one KeyMeta."""
    return Policies.of(namespaces).classify(meta)
