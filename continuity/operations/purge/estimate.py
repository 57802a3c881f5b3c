"""The instant estimate of a purge target: how many keys the preview will go through,
known before any SCAN.

From the latest succeeded TTL review of the database when it is fresh
(PURGE_ESTIMATE_MAX_AGE_SECONDS): its per-namespace key counts. A target that is a whole
namespace (a prefix equal to a namespace prefix, or that prefix's MATCH pattern) gets that
namespace's count, nested namespaces included: an estimate as of the review. A narrower
prefix or a pattern gets "at most" the count of the namespaces it can reach. Without a
fresh review, or when the review predates a namespace the target reaches, it is
"at most DBSIZE" (one command; on a Redis Cluster, DBSIZE of every primary summed, or
no estimate when one of them refuses or does not answer). Reads Postgres, and otherwise
at most one Redis command per primary.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from continuity import keyspace
from continuity.models import PurgeRun, ReviewNamespaceStat, ReviewRun


@dataclass(frozen=True)
class KeyEstimate:
    keys: int | None  # None: not even DBSIZE answered
    at_most: bool
    source: str  # PurgeRun.ESTIMATE_REVIEW | PurgeRun.ESTIMATE_DBSIZE | ""
    review_id: int | None
    at: datetime | None

    def apply(self, run):
        run.estimate_keys, run.estimate_at_most, run.estimate_source = self.keys, self.at_most, self.source
        run.estimate_review_id, run.estimated_at = self.review_id, self.at


def fresh_review(database, *, now=None):
    """The latest succeeded review of `database` finished within the estimate's maximum age."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.PURGE_ESTIMATE_MAX_AGE_SECONDS)
    return (ReviewRun.objects.for_database(database).succeeded().filter(finished_at__gte=cutoff)
            .order_by("-finished_at", "-id").first())


def _reached(heads, policies):
    """The namespace prefixes whose keys a SCAN of `heads` can return, and whether every
    head is a whole namespace (so their summed counts are the answer, not a bound)."""
    prefixes, whole = set(), True
    for head in heads:
        owner = policies.for_key(head)
        if owner is None:
            continue
        whole = whole and owner.prefix == head
        prefixes.add(owner.prefix)
        prefixes.update(p.prefix for p in policies if p.prefix.startswith(head))
    return prefixes, whole


def _from_review(review, heads, policies, whole_heads):
    prefixes, whole = _reached(heads, policies)
    whole = whole and whole_heads
    counts = {}
    for stat in ReviewNamespaceStat.objects.filter(run=review).select_related("namespace"):
        if stat.namespace is not None:
            counts[stat.namespace.prefix.encode()] = stat.keys
    if not prefixes or any(prefix not in counts for prefix in prefixes):
        return None  # the review predates a namespace the target reaches: it cannot say
    return KeyEstimate(keys=sum(counts[p] for p in prefixes), at_most=not whole, source=PurgeRun.ESTIMATE_REVIEW,
                       review_id=review.pk, at=review.finished_at)


def keys_in(nodes):
    """DBSIZE summed over the nodes (one command each, counted in the keyspace's `spent`), or
    None where one refuses it or does not answer: one node's DBSIZE is not a cluster's."""
    total = 0
    for node in nodes.nodes:
        try:
            size = keyspace.dbsize(node.client)
        except keyspace.NODE_ERRORS:
            return None
        nodes.cost(node.address).add(sent=1, billed=0 if size is None else 1)
        if size is None:
            return None
        total += size
    return total


def estimate_target(database, *, heads, policies, nodes, whole_heads=True, now=None) -> KeyEstimate:
    """A `KeyEstimate` of the keys a SCAN of the literal prefixes `heads` goes through.
    `heads` are the targets' literal heads (a prefix, a pattern's head, or a finding's
    namespace prefixes); a whole namespace is a head equal to its prefix. `whole_heads`
    False: the target is narrower than its heads (a pattern with more after its head)."""
    review = fresh_review(database, now=now)
    if review is not None:
        found = _from_review(review, heads, policies, whole_heads)
        if found is not None:
            return found
    size = keys_in(nodes)
    return KeyEstimate(keys=size, at_most=True, source=PurgeRun.ESTIMATE_DBSIZE if size is not None else "",
                       review_id=None, at=now or timezone.now())
