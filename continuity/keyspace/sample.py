"""A bounded sample of the keyspace for the namespace overview, until TTL reviews fill
the exact per-namespace figures. On a standalone server: one SCAN under the database's key
prefix spending the whole budget (`budget` keys examined), then the metadata of what it
found with DBSIZE, in one more round trip; each sampled key is counted in its
longest-prefix namespace.

On a Redis Cluster every primary serving slots is swept through its own client with an
equal share of the budget (metadata: one pipeline per SCAN page, `meta.node_metadata`);
the sample is complete only when every primary's sweep completed, and a primary that does
not answer is named in the notes (its keys are missing from the sample, never "exact")."""

from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from continuity.keyspace import cluster, primaries
from continuity.keyspace.capabilities import limitations
from continuity.keyspace.connection import KeyspaceError, client_for
from continuity.keynames import match_pattern
from continuity.keyspace.meta import key_metadata_and, scan_page
from continuity.policy import ttl_bucket


@dataclass
class NamespaceFigures:
    keys: int = 0
    memory: int = 0
    without_ttl: int = 0
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
    notes: tuple = ()  # what this server or user refused, and what is degraded for it

    def scale(self):
        """Factor from sampled to estimated key counts (1 when complete)."""
        if self.complete or not self.dbsize or not self.examined:
            return 1.0
        return max(1.0, self.dbsize / self.examined)


def sample_keyspace(database, policies, *, budget=None, client=None):
    """A KeyspaceSample of `database`, each key counted under its namespace of `policies`
    (a `continuity.policy.Policies`; figures keyed by namespace name, "" for none)."""
    budget = budget or settings.KEYSPACE_SCAN_BUDGET
    client = client or client_for(database)
    pattern = match_pattern(database.key_prefix.encode())
    figures = {policy.name: NamespaceFigures() for policy in policies}
    figures[""] = NamespaceFigures()
    if primaries.is_cluster(database, client):
        return _sample_cluster(database, client, policies, figures, pattern, budget)
    # Two round trips: one SCAN spending the whole budget, then the metadata of what it found
    # (one script call per 1,000 keys) with DBSIZE.
    cursor, keys = scan_page(client=client, match=pattern, cursor=0, count=budget)
    metas, (size,) = key_metadata_and(client, list(dict.fromkeys(keys)), [("DBSIZE",)])
    sampled = _tally(policies, figures, metas)
    return KeyspaceSample(figures=figures, examined=budget, sampled=sampled, complete=cursor == 0,
                          dbsize=None if isinstance(size, Exception) else int(size), notes=tuple(limitations(client)))


def _tally(policies, figures, metas):
    """Count each existing key of `metas` into its namespace's `figures`: how many were."""
    sampled = 0
    for meta in metas:
        if not meta.exists:
            continue
        policy = policies.for_key(meta.key)
        fig = figures[policy.name if policy else ""]
        bucket = ttl_bucket(meta.ttl_ms)
        fig.keys += 1
        fig.memory += meta.memory or 0
        fig.without_ttl += meta.ttl_ms is None
        fig.ttl_buckets[bucket] += 1
        if policy and policy.ttl_in_band(meta.ttl_ms):
            fig.in_band[bucket] += 1
        sampled += 1
    return sampled


def _sweep(client, policies, figures, pattern, budget, metadata):
    """One SCAN sweep of `client` from cursor 0 spending at most `budget`, each key's
    metadata (`metadata(keys)`) tallied into `figures`: (examined, sampled, complete)."""
    cursor, examined, sampled, seen = 0, 0, 0, set()
    while True:
        count = min(1000, budget - examined)
        cursor, keys = scan_page(client=client, match=pattern, cursor=cursor, count=count)
        examined += count
        keys = [k for k in keys if k not in seen]
        seen.update(keys)
        sampled += _tally(policies, figures, metadata(keys))
        if cursor == 0 or examined >= budget:
            return examined, sampled, cursor == 0


def _sample_cluster(database, client, policies, figures, pattern, budget):
    nodes = cluster.slot_map(client)
    share = max(1, -(-budget // max(1, len(nodes.addresses))))
    examined = sampled = 0
    complete, notes, missing, silent = bool(nodes.addresses), [], [], []
    for address in nodes.addresses:
        direct = primaries.direct_client(client, address)
        try:
            spent, found, whole = _sweep(direct, policies, figures, pattern, share, lambda keys, a=address:
                                         primaries.metadata_by_node(database, client, {a: keys}))
        except cluster.NODE_ERRORS as exc:
            missing.append(str(primaries.node_unreachable(database, address, exc)))
            silent.append(address)
            complete = False
            continue
        except KeyspaceError as exc:  # a primary that stopped answering mid-sweep
            missing.append(str(exc))
            complete = False
            continue
        examined, sampled, complete = examined + spent, sampled + found, complete and whole
        notes.extend(note for note in limitations(direct) if note not in notes)
    counted = primaries.count_keys(client, nodes.addresses, skip=tuple(silent))
    for message in missing:
        notes.insert(0, f"{message} Its keys are not in this sample.")
    if counted.note:
        notes.append(counted.note)
    return KeyspaceSample(figures=figures, examined=examined, sampled=sampled, complete=complete,
                          dbsize=counted.total, notes=tuple(notes))
