"""The namespace policy, in one place.

A `Policy` is a frozen snapshot of one namespace's rules. `Policy.findings(ttl_ms, type,
memory)` is the only statement of what a key breaks: the key browser's badge, the TTL
review, the purge's re-check (its Lua takes `Policy.script_rule()` as parameters and is
held to the same answers by a table-driven test), the continuity store's write check and
the overview charts all ask it. `Policies` finds a key's namespace: the longest registered
prefix the key starts with, compared as bytes.

The rules (TTL in milliseconds, None for a key without expiry):
- `no_ttl`: the key has no TTL and the policy requires one (`ttl_required`). A namespace
  that does not require a TTL accepts keys without one, whatever its maximum: the maximum
  then bounds only the TTLs that are set.
- `ttl_above_max`: the key has a TTL above the policy maximum.
- `oversized`: MEMORY USAGE above `max_payload_bytes` (0 or None: no limit; unknown
  memory is never a finding).
- `wrong_type`: the namespace expects a type and the key has another (unknown type is
  never a finding).
A TTL below the minimum is not a finding: live keys count down towards zero. Only a
write (`write_problems`) is held to the minimum.

Pure Python: no Django, no Redis, so every layer may import it.
"""

import math
from dataclasses import dataclass, field

from continuity.humanize import duration, ttl_band

NO_TTL, TTL_ABOVE_MAX, OVERSIZED, WRONG_TYPE, UNKNOWN_NAMESPACE = (
    "no_ttl", "ttl_above_max", "oversized", "wrong_type", "unknown_namespace")
# Every finding a review reports, in the order pages list them.
FINDINGS = (NO_TTL, TTL_ABOVE_MAX, OVERSIZED, WRONG_TYPE, UNKNOWN_NAMESPACE)
# What a namespace's policy can say of one of its keys, worst first.
KEY_FINDINGS = (NO_TTL, TTL_ABOVE_MAX, OVERSIZED, WRONG_TYPE)
TTL_FINDINGS = frozenset((NO_TTL, TTL_ABOVE_MAX))
# The purge script's finding bits (see `continuity.keyspace.purge`).
FINDING_BITS = {NO_TTL: 1, TTL_ABOVE_MAX: 2, OVERSIZED: 4, WRONG_TYPE: 8}

# TTL histogram buckets by key count: (name, upper bound in seconds, exclusive). Reviews
# store their histograms under these names, and the overview charts use the same ones.
NO_TTL_BUCKET = "no TTL"
TTL_BUCKETS = (("< 1m", 60), ("1m–15m", 900), ("15m–1h", 3600), ("1h–6h", 6 * 3600),
               ("6h–1d", 86400), ("1d–7d", 7 * 86400), ("≥ 7d", None))
BUCKET_NAMES = (NO_TTL_BUCKET,) + tuple(name for name, _ in TTL_BUCKETS)
# bisect_right(BUCKET_BOUNDS_MS, pttl) is the index in BUCKET_NAMES of a TTL in ms, with
# Redis's -1 (no expiry) at 0.
BUCKET_BOUNDS_MS = (0,) + tuple(bound * 1000 for _, bound in TTL_BUCKETS[:-1])


def ttl_bucket(ttl_ms):
    """The BUCKET_NAMES entry of a TTL in ms (None: no expiry)."""
    if ttl_ms is None:
        return NO_TTL_BUCKET
    for name, bound in TTL_BUCKETS:
        if bound is None or ttl_ms < bound * 1000:
            return name
    return TTL_BUCKETS[-1][0]


@dataclass(frozen=True)
class PolicyStatus:
    """How one key stands against its namespace policy: a code for filters and tests,
    a label and a Bulma colour for the badge, and a sentence for its title."""

    code: str
    label: str
    css: str
    detail: str = ""

    @property
    def ok(self):
        return self.code == "ok"


STATUS_OK = PolicyStatus("ok", "ok", "is-success")
STATUS_GONE = PolicyStatus("gone", "gone", "is-light", "The key no longer exists.")
STATUS_UNKNOWN = PolicyStatus(UNKNOWN_NAMESPACE, "unknown namespace", "is-warning",
                              "No registered namespace prefix matches this key.")


@dataclass(frozen=True)
class Policy:
    """One namespace's rules. `ident` names it in review aggregates (the namespace id)."""

    prefix: bytes
    name: str = ""
    ident: str = ""
    ttl_required: bool = True
    min_ttl_seconds: int | None = None
    max_ttl_seconds: int | None = None
    max_payload_bytes: int | None = None
    expected_type: str = ""
    # Derived, for the hot paths: TYPE replies may come as bytes or str.
    _types: tuple = field(init=False, repr=False, compare=False)
    _max_ttl_ms: int = field(init=False, repr=False, compare=False)
    _ttl_limit: float = field(init=False, repr=False, compare=False)  # inf: no maximum
    _size_limit: float = field(init=False, repr=False, compare=False)  # inf: no limit
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        expected = self.expected_type or ""
        object.__setattr__(self, "_types", (expected, expected.encode()) if expected else ())
        object.__setattr__(self, "_max_ttl_ms", (self.max_ttl_seconds or 0) * 1000)
        object.__setattr__(self, "_ttl_limit", self._max_ttl_ms or math.inf)
        object.__setattr__(self, "_size_limit", self.max_payload_bytes or math.inf)
        object.__setattr__(self, "_hash", hash((self.prefix, self.name, self.ident, self.ttl_required,
                                                self.min_ttl_seconds, self.max_ttl_seconds,
                                                self.max_payload_bytes, self.expected_type)))

    def __hash__(self):
        # Computed once: a purge batch looks a policy up once per key (hundreds of thousands).
        return self._hash

    @classmethod
    def of(cls, namespace):
        """The policy of a `continuity.models.Namespace` (or anything with its fields)."""
        return cls(prefix=namespace.prefix.encode(), name=namespace.name,
                   ident=str(namespace.pk) if namespace.pk else namespace.prefix,
                   ttl_required=namespace.ttl_required, min_ttl_seconds=namespace.min_ttl_seconds or None,
                   max_ttl_seconds=namespace.max_ttl_seconds or None,
                   max_payload_bytes=namespace.max_payload_bytes or None,
                   expected_type=namespace.expected_type or "")

    def findings(self, ttl_ms, type=None, memory=None):  # noqa: A002 - Redis calls it TYPE
        """The findings (a tuple, worst first, empty when the key complies) of a key with
        TTL `ttl_ms` (None: no expiry), TYPE `type` (str or bytes; None: not read) and
        MEMORY USAGE `memory` (None: not read or refused)."""
        # The review calls this for every key: the common answer () costs a few comparisons.
        if ttl_ms is None:
            found = (NO_TTL,) if self.ttl_required else ()
        elif ttl_ms > self._ttl_limit:
            found = (TTL_ABOVE_MAX,)
        else:
            found = ()
        if memory is not None and memory > self._size_limit:
            found += (OVERSIZED,)
        if self._types and type is not None and type not in self._types:
            found += (WRONG_TYPE,)
        return found

    def status(self, meta):
        """The badge of a `KeyMeta` (its worst finding, or ok / gone)."""
        if not meta.exists:
            return STATUS_GONE
        found = self.findings(meta.ttl_ms, meta.type, meta.memory)
        if not found:
            return STATUS_OK
        worst = found[0]
        if worst == NO_TTL:
            return PolicyStatus(NO_TTL, "no TTL", "is-danger", "The policy requires a TTL.")
        if worst == TTL_ABOVE_MAX:
            return PolicyStatus(TTL_ABOVE_MAX, "above max", "is-danger",
                                f"TTL is above the policy maximum of {duration(self.max_ttl_seconds)}.")
        if worst == OVERSIZED:
            return PolicyStatus(OVERSIZED, "oversized", "is-warning",
                                f"MEMORY USAGE {meta.memory} bytes is above the limit of {self.max_payload_bytes}.")
        return PolicyStatus(WRONG_TYPE, "wrong type", "is-warning",
                            f"Expected {self.expected_type}, found {meta.type}.")

    @property
    def has_ttl_rule(self):
        """False when no TTL can break this policy (none required, no maximum)."""
        return self.ttl_required or bool(self.max_ttl_seconds)

    def ttl_band(self):
        return ttl_band(self.min_ttl_seconds, self.max_ttl_seconds)

    def ttl_in_band(self, ttl_ms):
        """True when a TTL breaks none of the TTL rules (the overview's 'inside policy band')."""
        return not TTL_FINDINGS.intersection(self.findings(ttl_ms))

    def write_problems(self, ttl_seconds, type, size):  # noqa: A002
        """Why a write of `size` bytes of `type` with `ttl_seconds` (None: no expiry) may
        not happen, as sentences; empty when it may. The findings, plus the minimum."""
        problems = []
        if ttl_seconds is not None and ttl_seconds <= 0:
            return [f"{self.name}: the TTL must be positive."]
        found = self.findings(None if ttl_seconds is None else ttl_seconds * 1000, type, size)
        if NO_TTL in found:
            problems.append(f"{self.name}: a TTL is required and the policy has no maximum to default to.")
        if TTL_ABOVE_MAX in found:
            problems.append(f"{self.name}: TTL {ttl_seconds}s is above the maximum of {self.max_ttl_seconds}s.")
        if ttl_seconds is not None and self.min_ttl_seconds and ttl_seconds < self.min_ttl_seconds:
            problems.append(f"{self.name}: TTL {ttl_seconds}s is below the minimum of {self.min_ttl_seconds}s.")
        if OVERSIZED in found:
            problems.append(f"{self.name}: payload of {size} bytes is above the limit of "
                            f"{self.max_payload_bytes} bytes.")
        if WRONG_TYPE in found:
            problems.append(f"{self.name}: expects {self.expected_type}, not {type}.")
        return problems

    def script_rule(self):
        """This policy as the purge script's four parameters: TTL required (1/0), max TTL
        in ms (0: none), max bytes (0: none), expected type ('' : any)."""
        return (1 if self.ttl_required else 0, self._max_ttl_ms, self.max_payload_bytes or 0, self.expected_type)


class Policies:
    """The policies of one database's namespaces, for finding a key's namespace: the
    longest registered prefix the key starts with (bytes, never decoded). Each policy
    keeps the object it was made from (`owner_of`), e.g. the Namespace row for a page."""

    def __init__(self, pairs=()):
        # Longest prefix first: the first match is the longest.
        self._pairs = sorted(((policy, owner) for policy, owner in pairs), key=lambda p: len(p[0].prefix),
                             reverse=True)
        self._owners = {policy.prefix: owner for policy, owner in self._pairs}

    @classmethod
    def of(cls, namespaces):
        return cls((Policy.of(ns), ns) for ns in namespaces)

    def __iter__(self):
        return (policy for policy, _ in self._pairs)

    def __len__(self):
        return len(self._pairs)

    def owner_of(self, policy):
        return None if policy is None else self._owners.get(policy.prefix)

    def has_nested(self, policy):
        """True when another namespace's prefix lies under `policy`'s (its keys are not all its own)."""
        return any(other.prefix != policy.prefix and other.prefix.startswith(policy.prefix)
                   for other, _ in self._pairs)

    def for_key(self, key):
        """The Policy of `key` (bytes), or None when no namespace covers it."""
        for policy, _ in self._pairs:
            if key.startswith(policy.prefix):
                return policy
        return None

    def classify(self, meta):
        """(owner of the key's namespace or None, PolicyStatus) for a KeyMeta."""
        policy = self.for_key(meta.key)
        if policy is None:
            return None, STATUS_UNKNOWN
        return self.owner_of(policy), policy.status(meta)
