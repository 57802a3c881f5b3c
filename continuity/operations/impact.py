"""Impact before harm: how many keys a namespace policy change would turn into findings,
shown before it is saved.

Two figures, each labelled with where it comes from:
- from the last succeeded TTL review of the database: the namespace's TTL histogram gives
  the keys that would break the new TTL rules — a range, since a histogram bucket can
  straddle the new maximum — beside those that break the current ones (a sampled review's
  counts scaled to the keyspace, as its own page does). Sizes and types are not in a
  histogram: the review cannot say for those rules;
- a sample read now: one bounded scan of the namespace's prefix (the key browser's scan
  budget and page), each key's findings under the current and the new policy compared.
"""

from dataclasses import dataclass

from django.conf import settings

from continuity import keyspace
from continuity.models import Namespace, ReviewNamespaceStat, ReviewRun
from continuity.policy import BUCKET_NAMES, NO_TTL_BUCKET, TTL_BUCKETS, TTL_FINDINGS, Policies, Policy

SAMPLE_KEYS = 500  # keys read now, at most


@dataclass(frozen=True)
class FromReview:
    review: ReviewRun
    low: int  # keys that would break the new TTL rules, at least
    high: int  # … at most
    now: int  # keys breaking the current TTL rules
    sampled: bool


@dataclass(frozen=True)
class FromSample:
    examined: int  # keys SCAN looked at (COUNT hints), of about `dbsize`
    read: int  # keys of this namespace read
    newly: int  # of them: keys the new policy finds something in that the current one does not
    after: int  # … with any finding under the new policy
    dbsize: int | None


@dataclass(frozen=True)
class Impact:
    review: FromReview | None = None
    sample: FromSample | None = None
    error: str = ""  # why the sample could not be read (Redis)


def tightens(before: Policy, after: Policy):
    """True when `after` can find something in a key that `before` accepts: a lower (or new)
    maximum TTL, a TTL now required, a smaller (or new) size limit, a new expected type, a
    changed prefix. Loosening a policy needs no impact step."""
    def lower(old, new):
        return bool(new) and (not old or new < old)
    return (lower(before.max_ttl_seconds, after.max_ttl_seconds) or (after.ttl_required and not before.ttl_required)
            or lower(before.max_payload_bytes, after.max_payload_bytes)
            or bool(after.expected_type and after.expected_type != before.expected_type)
            or after.prefix != before.prefix)


def fingerprint(namespace):
    """The policy values an impact was shown for: a save confirms only those."""
    policy = Policy.of(namespace)
    return "|".join(str(value) for value in (policy.prefix.decode("utf-8", "backslashreplace"), policy.ttl_required,
                                             policy.max_ttl_seconds, policy.max_payload_bytes, policy.expected_type))


def _bounds():
    """(name, lower bound s, upper bound s or None) of each TTL bucket but 'no TTL'."""
    lower, out = 0, []
    for name, upper in TTL_BUCKETS:
        out.append((name, lower, upper))
        lower = upper
    return out


def _from_review(namespace, after):
    review = (ReviewRun.objects.for_database(namespace.database).succeeded().order_by("-finished_at", "-id")
              .first())
    stat = ReviewNamespaceStat.objects.filter(run=review, namespace=namespace).first() if review else None
    if stat is None:
        return None
    histogram = {name: stat.ttl_histogram.get(name, 0) for name in BUCKET_NAMES}
    low = high = histogram[NO_TTL_BUCKET] if after.ttl_required else 0
    limit = after.max_ttl_seconds
    for name, lower, upper in _bounds():
        if not limit:
            break
        if lower > limit:
            low += histogram[name]
        if upper is None or upper > limit:
            high += histogram[name]
    now = sum((stat.findings or {}).get(kind, 0) for kind in TTL_FINDINGS)
    scale = review.scale()
    return FromReview(review=review, low=round(low * scale), high=round(high * scale), now=round(now * scale),
                      sampled=review.sampled)


def _from_sample(namespace, before, after, policies):
    result = keyspace.scan_keys(namespace.database, pattern=keyspace.match_pattern(after.prefix), policies=policies,
                                page_size=SAMPLE_KEYS, budget=settings.KEYSPACE_SCAN_BUDGET)
    read = newly = found = 0
    for row in result.rows:
        meta = row.meta
        owner = policies.for_key(meta.key)
        if owner is None or owner.prefix != after.prefix:
            continue  # a nested namespace's key: its own policy decides
        read += 1
        old = set(before.findings(meta.ttl_ms, meta.type, meta.memory)) if meta.key.startswith(before.prefix) else set()
        new = set(after.findings(meta.ttl_ms, meta.type, meta.memory))
        found += bool(new)
        newly += bool(new - old)
    return FromSample(examined=result.examined_shown, read=read, newly=newly, after=found, dbsize=result.dbsize)


def namespace_impact(*, namespace: Namespace, after: Namespace) -> Impact:
    """The `Impact` of replacing the saved `namespace`'s policy by `after`'s (an unsaved
    instance with the form's values). Reads Postgres (the last review) and, for the sample,
    at most the key browser's scan budget of the monitored Redis."""
    before_policy, after_policy = namespace.policy(), Policy.of(after)
    others = [ns for ns in Namespace.objects.for_database(namespace.database) if ns.pk != namespace.pk]
    policies = Policies([(Policy.of(ns), ns) for ns in others] + [(after_policy, after)])
    review = _from_review(namespace, after_policy)
    try:
        sample = _from_sample(namespace, before_policy, after_policy, policies)
    except keyspace.FAILURES as exc:
        return Impact(review=review, error=keyspace.describe_error(exc))
    return Impact(review=review, sample=sample)
