"""The instant estimate of a purge target: how many keys the preview will go through, how
many of them the action would change, and what the preview and the purge will cost, known
before any SCAN.

From the latest succeeded TTL review of the database when it is fresh
(PURGE_ESTIMATE_MAX_AGE_SECONDS): its per-namespace key and finding counts. A sampled
review's counts are those of its sample: they are scaled to the keyspace (its DBSIZE) with
their 95% interval (`continuity.models.reviews.estimate`, the review's own maths; the
namespaces of a scope are disjoint, so their counts add up before scaling). A target that
is a whole namespace (a prefix equal to a namespace prefix, or that prefix's MATCH
pattern) gets that namespace's count, nested namespaces included unless the scope leaves
them out: an estimate as of the review. A narrower prefix or a pattern gets "at most" the
count of the namespaces it can reach. Without a fresh review, or when the review predates
a namespace the target reaches, it is "at most DBSIZE" (one command; on a Redis Cluster,
DBSIZE of every primary summed, or no estimate when one of them refuses or does not
answer). Reads Postgres, and otherwise at most one Redis command per primary.

The costs (`predicted_costs`) are predicted from those counts with the formulas execution
bills by (`common.estimated_billed`): SCAN pages from the keyspace's size, script calls
and per-key reads from the keys; they are labelled "about". What a run records as billed
is always what Redis reports it did.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from continuity import keyspace
from continuity.models import PurgeRun, ReviewNamespaceStat, ReviewRun
from continuity.models.reviews import estimate as sample_estimate
from continuity.operations.purge.common import CONDITION_FINDINGS, Counted, estimated_billed
from continuity.policy import OVERSIZED, WRONG_TYPE


@dataclass(frozen=True)
class KeyEstimate:
    keys: int | None  # None: not even DBSIZE answered
    at_most: bool
    source: str  # PurgeRun.ESTIMATE_REVIEW | PurgeRun.ESTIMATE_DBSIZE | ""
    review_id: int | None
    at: datetime | None
    low: int | None = None  # the 95% interval of `keys` (a sampled review), else keys itself
    high: int | None = None
    sampled: bool = False
    acting: tuple | None = None  # (value, low, high): keys showing the scope's finding, from the review
    dbsize: int | None = None  # keys in the whole keyspace: what SCAN pages through

    def apply(self, run):
        run.estimate_keys, run.estimate_at_most, run.estimate_source = self.keys, self.at_most, self.source
        run.estimate_review_id, run.estimated_at = self.review_id, self.at
        run.estimate_detail = {**(run.estimate_detail or {}), "low": self.low, "high": self.high,
                               "sampled": self.sampled, "acting": list(self.acting) if self.acting else None,
                               "dbsize": self.dbsize}


def fresh_review(database, *, now=None):
    """The latest succeeded review of `database` finished within the estimate's maximum age."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.PURGE_ESTIMATE_MAX_AGE_SECONDS)
    return (ReviewRun.objects.for_database(database).succeeded().filter(finished_at__gte=cutoff)
            .order_by("-finished_at", "-id").first())


def _reached(heads, policies, reach=None):
    """The namespace prefixes whose keys a SCAN of `heads` can return (only those of `reach`
    when given), and whether every head is a whole namespace (so their summed counts are the
    answer, not a bound)."""
    allowed = None if reach is None else {policy.prefix for policy in reach}
    prefixes, whole = set(), True
    for head in heads:
        owner = policies.for_key(head)
        if owner is None:
            continue
        whole = whole and owner.prefix == head
        found = {owner.prefix} | {p.prefix for p in policies if p.prefix.startswith(head)}
        prefixes.update(found if allowed is None else found & allowed)
    return prefixes, whole


def _scaled(count, review):
    """(value, low, high) of `count` keys of `review`, scaled to the keyspace when it was sampled."""
    if not review.sampled:
        return count, count, count
    found = sample_estimate(count, review.keys_scanned, review.dbsize_before)
    return found.value, found.low, found.high


def _from_review(review, heads, policies, whole_heads, reach, findings):
    prefixes, whole = _reached(heads, policies, reach)
    whole = whole and whole_heads
    counts, found = {}, {}
    for stat in ReviewNamespaceStat.objects.filter(run=review).select_related("namespace"):
        if stat.namespace is not None:
            prefix = stat.namespace.prefix.encode()
            counts[prefix] = stat.keys
            found[prefix] = sum((stat.findings or {}).get(kind, 0) for kind in findings)
    if not prefixes or any(prefix not in counts for prefix in prefixes):
        return None  # the review predates a namespace the target reaches: it cannot say
    keys, low, high = _scaled(sum(counts[p] for p in prefixes), review)
    acting = _scaled(sum(found[p] for p in prefixes), review) if findings else None
    size = review.dbsize_before if review.dbsize_before is not None else review.keys_scanned + review.foreign_keys
    return KeyEstimate(keys=keys, at_most=not whole, source=PurgeRun.ESTIMATE_REVIEW, review_id=review.pk,
                       at=review.finished_at, low=low, high=high, sampled=review.sampled, acting=acting, dbsize=size)


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


def estimate_target(database, *, heads, policies, nodes, whole_heads=True, reach=None, findings=(),
                    now=None) -> KeyEstimate:
    """A `KeyEstimate` of the keys a SCAN of the literal prefixes `heads` goes through.
    `heads` are the targets' literal heads (a prefix, a pattern's head, or a finding's
    namespace prefixes); a whole namespace is a head equal to its prefix. `whole_heads`
    False: the target is narrower than its heads (a pattern with more after its head).
    `reach`: the policies the scope may act on (None: all it reaches); `findings`: the
    findings an acted-on key must show (their review counts become `acting`)."""
    review = fresh_review(database, now=now)
    if review is not None:
        found = _from_review(review, heads, policies, whole_heads, reach, findings)
        if found is not None:
            return found
    size = keys_in(nodes)
    return KeyEstimate(keys=size, at_most=True, source=PurgeRun.ESTIMATE_DBSIZE if size is not None else "",
                       review_id=None, at=now or timezone.now(), low=size, high=size, dbsize=size)


def predicted_costs(run, *, heads, nodes, read_regions=0):
    """{"preview_billed", "execution_billed"}: the billed commands the preview and then the
    purge of `run` will cost, predicted from its instant estimate (None when there is none).

    SCAN goes through the whole keyspace once per head, a page per PURGE batch; a finding's
    preview reads each candidate's metadata (PTTL, and TYPE or MEMORY USAGE where the finding
    needs it) in one script call per page; a re-check reads the same per key; execution is
    `common.estimated_billed` of those counts (a finding's walks its stored list instead)."""
    detail = run.estimate_detail or {}
    keys = run.estimate_keys
    if keys is None:
        return {"preview_billed": None, "execution_billed": None}
    acting = detail.get("acting")
    want = CONDITION_FINDINGS[run.condition]
    changing = keys if not want else (acting[0] if acting else keys)
    size = detail.get("dbsize") or keys
    batch = run.batch_size or settings.PURGE_BATCH_SIZE
    pages = max(len(heads), 1) * max(nodes, math.ceil(size / batch))
    acting_pages = min(pages, keys)
    reads = 1 + (OVERSIZED in want) + (WRONG_TYPE in want)
    if run.target_kind == PurgeRun.FINDING:
        preview = pages + acting_pages + keys * reads
        listed = max(nodes, math.ceil(changing / batch)) if changing else 0
        counted = Counted(pages=listed, acting_pages=listed, acting_keys=changing, actionable=changing,
                          changing_pages=listed)
        scanned = False
    else:
        checks = bool(want) or run.action != PurgeRun.DELETE
        preview = pages + ((acting_pages + keys * reads) if checks else 0)
        counted = Counted(scans=pages, pages=pages, acting_pages=acting_pages, acting_keys=keys, actionable=changing,
                          changing_pages=min(pages, changing))
        scanned = True
    execution = estimated_billed(counted, nodes=nodes, action=run.action, condition=run.condition, scanned=scanned,
                                 unlink_each=nodes > 1, read_regions=read_regions)
    return {"preview_billed": preview, "execution_billed": execution}
