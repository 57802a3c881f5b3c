"""Namespaces of the monitored keyspace and their TTL policies."""

from dataclasses import dataclass

from django.db import models

from dashboard.models import RedisDatabase


class NamespaceQuerySet(models.QuerySet):
    def for_database(self, database):
        return self.filter(database=database).order_by("prefix")


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
        from continuity.templatetags.continuity import duration

        low = duration(self.min_ttl_seconds) if self.min_ttl_seconds else "0"
        high = duration(self.max_ttl_seconds) if self.max_ttl_seconds else "∞"
        return f"{low} – {high}"

    def ttl_in_band(self, ttl_seconds):
        """True when a TTL (seconds, None for no TTL) meets this policy."""
        if ttl_seconds is None:
            return not self.ttl_required and not self.max_ttl_seconds
        if self.max_ttl_seconds and ttl_seconds > self.max_ttl_seconds:
            return False
        return not (self.min_ttl_seconds and ttl_seconds < self.min_ttl_seconds)

    def classify(self, meta):
        """The PolicyStatus of one `KeyMeta` against this namespace's policy. The worst
        problem wins: no TTL, then TTL above the maximum, oversized, wrong type. A TTL
        below the minimum is not a violation (keys count down towards zero), so it is
        never reported for a live key."""
        if not meta.exists:
            return PolicyStatus(STATUS_GONE, "gone", "is-light", "The key no longer exists.")
        if meta.ttl_ms is None and (self.ttl_required or self.max_ttl_seconds):
            return PolicyStatus(STATUS_NO_TTL, "no TTL", "is-danger", "The policy requires a TTL.")
        if meta.ttl_ms is not None and self.max_ttl_seconds and meta.ttl_ms > self.max_ttl_seconds * 1000:
            return PolicyStatus(STATUS_ABOVE_MAX, "above max", "is-danger",
                                f"TTL is above the policy maximum of {self.ttl_band()}.")
        if meta.memory is not None and meta.memory > self.max_payload_bytes:
            return PolicyStatus(STATUS_OVERSIZED, "oversized", "is-warning",
                                f"MEMORY USAGE {meta.memory} bytes is above the limit of {self.max_payload_bytes}.")
        if self.expected_type and meta.type != self.expected_type:
            return PolicyStatus(STATUS_WRONG_TYPE, "wrong type", "is-warning",
                                f"Expected {self.get_expected_type_display()}, found {meta.type}.")
        return PolicyStatus(STATUS_OK, "ok", "is-success")


@dataclass(frozen=True)
class PolicyStatus:
    """How one key stands against its namespace policy: a code for filters and tests,
    a label and a Bulma colour for the badge."""

    code: str
    label: str
    css: str
    detail: str = ""

    @property
    def ok(self):
        return self.code == "ok"


STATUS_OK = "ok"
STATUS_NO_TTL = "no_ttl"
STATUS_ABOVE_MAX = "above_max"
STATUS_BELOW_MIN = "below_min"
STATUS_OVERSIZED = "oversized"
STATUS_WRONG_TYPE = "wrong_type"
STATUS_UNKNOWN_NAMESPACE = "unknown_namespace"
STATUS_GONE = "gone"


def unknown_namespace_status():
    return PolicyStatus(STATUS_UNKNOWN_NAMESPACE, "unknown namespace", "is-warning",
                        "No registered namespace prefix matches this key.")


def namespace_for_key(namespaces, key):
    """The registered namespace whose literal prefix is the longest prefix of `key`
    (bytes), or None. Prefixes are compared as UTF-8 bytes, never by decoding the key."""
    best, best_len = None, -1
    for namespace in namespaces:
        prefix = namespace.prefix.encode()
        if key.startswith(prefix) and len(prefix) > best_len:
            best, best_len = namespace, len(prefix)
    return best


def classify_key(namespaces, meta):
    """(namespace or None, PolicyStatus) for one KeyMeta."""
    namespace = namespace_for_key(namespaces, meta.key)
    if namespace is None:
        return None, unknown_namespace_status()
    return namespace, namespace.classify(meta)
