"""A bounded sample of the keyspace for the namespace overview, until TTL reviews fill
the exact per-namespace figures. One SCAN sweep under the database's key prefix, at most
`budget` keys examined, metadata in one `key_metadata` call per SCAN page; each sampled
key is counted in its longest-prefix namespace."""

from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from continuity.keyspace.browse import dbsize
from continuity.keyspace.connection import client_for
from continuity.keyspace.keys import match_pattern
from continuity.keyspace.meta import key_metadata, scan_page

# TTL buckets by key count: (label, upper bound in seconds, exclusive).
TTL_BUCKETS = [("<1m", 60), ("1–5m", 300), ("5–15m", 900), ("15m–1h", 3600), ("1–6h", 6 * 3600),
               ("6–24h", 24 * 3600), ("1–7d", 7 * 86400), (">7d", None)]
NO_TTL = "no TTL"


def ttl_bucket(ttl_ms):
    if ttl_ms is None:
        return NO_TTL
    seconds = ttl_ms / 1000
    for label, upper in TTL_BUCKETS:
        if upper is None or seconds < upper:
            return label
    return TTL_BUCKETS[-1][0]


@dataclass
class NamespaceFigures:
    keys: int = 0
    memory: int = 0
    without_ttl: int = 0
    violations: int = 0
    ttl_buckets: Counter = field(default_factory=Counter)
    in_band: Counter = field(default_factory=Counter)  # per bucket: keys whose TTL meets the policy

    @property
    def share_without_ttl(self):
        return self.without_ttl / self.keys if self.keys else 0.0


@dataclass
class KeyspaceSample:
    """`complete` means the sweep saw the whole prefix: the figures are exact counts."""

    figures: dict  # namespace name (or "" for unknown) → NamespaceFigures
    examined: int
    sampled: int
    complete: bool
    dbsize: int | None

    def scale(self):
        """Factor from sampled to estimated key counts (1 when complete)."""
        if self.complete or not self.dbsize or not self.examined:
            return 1.0
        return max(1.0, self.dbsize / self.examined)


def sample_keyspace(database, namespaces, *, budget=None, client=None):
    from continuity.models import classify_key

    budget = budget or settings.KEYSPACE_SCAN_BUDGET
    client = client or client_for(database)
    pattern = match_pattern(database.key_prefix.encode())
    figures = {ns.name: NamespaceFigures() for ns in namespaces}
    figures[""] = NamespaceFigures()
    cursor, examined, sampled, seen = 0, 0, 0, set()
    while True:
        count = min(1000, budget - examined)
        cursor, keys = scan_page(client=client, match=pattern, cursor=cursor, count=count)
        examined += count
        keys = [k for k in keys if k not in seen]
        seen.update(keys)
        for meta in key_metadata(keys=keys, client=client):
            if not meta.exists:
                continue
            namespace, status = classify_key(namespaces, meta)
            fig = figures[namespace.name if namespace else ""]
            bucket = ttl_bucket(meta.ttl_ms)
            fig.keys += 1
            fig.memory += meta.memory or 0
            fig.without_ttl += meta.ttl_ms is None
            fig.violations += not status.ok
            fig.ttl_buckets[bucket] += 1
            if namespace and namespace.ttl_in_band(meta.ttl_seconds):
                fig.in_band[bucket] += 1
            sampled += 1
        if cursor == 0 or examined >= budget:
            break
    return KeyspaceSample(figures=figures, examined=examined, sampled=sampled, complete=cursor == 0,
                          dbsize=dbsize(client))
