"""Review-finding purge targets: "the offending keys of review R, finding F".

A TTL review keeps at most 100 sample keys per finding, so it cannot list every offender.
The preview finds them again: it SCANs the prefixes of the namespaces that had the finding
in the review (their per-namespace figures are stored with the review), checks the
finding's condition on every candidate with one metadata command per batch
(`keyspace.key_metadata`: PTTL, TYPE and MEMORY USAGE in one script call), and writes the
current offenders, in order, to Postgres (`PurgeTargetKey`, one INSERT per batch; memory
stays bounded). Execution walks that stored list by position — a checkpoint is a position,
stable across a resume — and re-checks each key inside the acting script: `no_ttl` still
without TTL, `ttl_above_max` still above the maximum, `oversized` / `wrong_type` still
there.

Refused before any Redis command: a review of another database, a review that did not
succeed, an unknown finding, `unknown_namespace` (those keys are in no namespace), a
finding the review did not report, and `expire` for any finding but `no_ttl` (applying
the policy TTL with EXPIRE NX repairs only keys that have no TTL).
"""

from continuity import keyspace
from continuity.keyspace import purge as redis_purge
from continuity.models import ReviewNamespaceStat, ReviewRun
from continuity.models.purges import PurgeRun, store_target_keys


def phrase(review_id, finding):
    """What the operator retypes to confirm a finding purge."""
    return f"review {review_id} {finding}"


def check_target(*, database, review_id, finding, action, refused):
    """The review's namespace figures that had `finding`, or `refused(message)` raised.
    Reads Postgres only."""
    if action == PurgeRun.EXPIRE and finding != "no_ttl":
        raise refused(f"Applying the policy TTL cannot repair {finding} keys: EXPIRE NX only gives a TTL to keys "
                      "that have none. Choose delete, or fix these keys where they are written.")
    review = ReviewRun.objects.select_related("database").filter(pk=review_id).first() if review_id else None
    if review is None:
        raise refused(f"There is no TTL review #{review_id}.")
    if review.database_id != database.pk:
        raise refused(f"Review #{review.pk} reviewed {review.database.name}, not {database.name}.")
    if review.status != ReviewRun.SUCCEEDED:
        raise refused(f"Review #{review.pk} is {review.status}; only a succeeded review's findings can be purged.")
    if not (review.findings or {}).get(finding):
        raise refused(f"Review #{review.pk} found no {finding} keys: there is nothing to purge.")
    stats = [stat for stat in ReviewNamespaceStat.objects.filter(run=review).select_related("namespace")
             if (stat.findings or {}).get(finding) and stat.namespace and stat.namespace.database_id == database.pk]
    if not stats:
        raise refused(f"The namespaces where review #{review.pk} found {finding} keys are no longer registered.")
    return stats


def scan_prefixes(stats):
    """The namespace prefixes to SCAN, leaving out any that a shorter one already covers
    (`lucia:session:` covers `lucia:session:admin:`), so no key is read twice."""
    prefixes = sorted({stat.namespace.prefix.encode() for stat in stats}, key=len)
    kept = []
    for prefix in prefixes:
        if not any(prefix.startswith(shorter) for shorter in kept):
            kept.append(prefix)
    return kept


def match_text(stats):
    """The MATCH patterns a finding preview sends, as one line of escaped text."""
    return b" ".join(keyspace.match_pattern(prefix) for prefix in scan_prefixes(stats))


def still_offends(finding, ns, key_meta):
    """The review's rule for `finding`, against the namespace's current policy."""
    if not key_meta.exists:
        return False
    if finding == "no_ttl":
        return key_meta.ttl_ms is None and ns.ttl_required
    if finding == "ttl_above_max":
        return key_meta.ttl_ms is not None and bool(ns.max_ttl_seconds) and key_meta.ttl_ms > ns.max_ttl_seconds * 1000
    if finding == "oversized":
        return bool(ns.max_payload_bytes) and key_meta.memory is not None and key_meta.memory > ns.max_payload_bytes
    if finding == "wrong_type":
        return bool(ns.expected_type) and key_meta.type != ns.expected_type
    return False


def _metadata_cost(client, keys):
    caps = getattr(client, "_continuity_caps", None) or {}
    if caps.get("script"):
        return 1
    return len(keys) * (2 if caps.get("memory") is False else 3)


def offender_pages(client, *, stats, finding, classify, batch_size):
    """Yield (offending keys, Redis commands, keys scanned) per SCAN page over the finding's
    namespaces. `classify(key)` is the key's namespace (longest registered prefix)."""
    wanted = {stat.namespace.pk for stat in stats}
    for prefix in scan_prefixes(stats):
        pattern, cursor = keyspace.match_pattern(prefix), 0
        while True:
            cursor, page = keyspace.scan_page(match=pattern, cursor=cursor, count=batch_size, client=client)
            candidates = [(key, ns) for key in page if (ns := classify(key)) is not None and ns.pk in wanted]
            offenders, cost = [], 1
            if candidates:
                keys = [key for key, _ in candidates]
                metas = keyspace.key_metadata(keys=keys, client=client)
                cost += _metadata_cost(client, keys)
                offenders = [m.key for m, (_, ns) in zip(metas, candidates) if still_offends(finding, ns, m)]
            yield offenders, cost, len(page)
            if cursor == 0:
                break


def given_pages(keys, batch_size):
    """Pages of an explicit key list (not yet checked): (keys, 0 commands, keys read)."""
    page = []
    for key in keys:
        page.append(bytes(key))
        if len(page) >= batch_size:
            yield page, 0, len(page)
            page = []
    if page:
        yield page, 0, len(page)


def review_counts(run):
    """{namespace prefix: offenders the review counted} for a finding run, to set beside
    what the preview matched now."""
    if run.target_kind != PurgeRun.FINDING or not run.review_id:
        return {}
    counts = {}
    for stat in ReviewNamespaceStat.objects.filter(run_id=run.review_id).select_related("namespace"):
        count = (stat.findings or {}).get(run.finding, 0)
        if count:
            label = stat.namespace.prefix if stat.namespace else stat.label
            counts[label] = counts.get(label, 0) + count
    return counts


def preview_offenders(run, client, *, prefixes, keys, stats, sample_size, progress):
    """Store a finding's current offenders in order and count them. With `stats` (the
    review's namespace figures) they are found by SCAN and checked here; an explicit `keys`
    list is stored as given and counted by a dry run of the acting script."""
    from continuity.operations.purge import (  # the engine imports us
        PurgePreview,
        _classify,
        _split,
    )

    if keys is not None:
        pages = given_pages(keys, run.batch_size)
    else:
        pages = offender_pages(client, stats=stats, finding=run.finding, batch_size=run.batch_size,
                               classify=lambda key: _classify(key, prefixes))
    position = actionable = commands = read = 0
    per_namespace, sample = {}, []
    for page, cost, scanned in pages:
        commands += cost
        read += scanned
        if page:
            position = store_target_keys(run, page, after=position)
        page_keys, ttls, _outside = _split(page, prefixes, run)
        for key in page_keys:
            prefix = _classify(key, prefixes).prefix
            per_namespace[prefix] = per_namespace.get(prefix, 0) + 1
        if len(sample) < sample_size:
            sample.extend(keyspace.encode_key(k) for k in page_keys[: sample_size - len(sample)])
        if keys is not None and page_keys:
            counted = redis_purge.act_on_batch(client, page_keys, action="count", condition=run.condition,
                                               max_ttls=ttls)
            actionable += counted.done
            commands += counted.commands
        elif run.action == PurgeRun.EXPIRE:
            actionable += sum(1 for ttl in ttls if ttl)  # no maximum: nothing to apply
        else:
            actionable += len(page_keys)
        if progress:
            progress(read)
    run.preview_matched, run.preview_actionable = position, actionable
    run.preview_namespaces, run.preview_sample = per_namespace, sample
    run.preview_commands = commands
    # Execution sends one acting command per stored batch, and no SCAN.
    run.estimated_commands = -(-position // run.batch_size)
    run.save()
    return PurgePreview(run=run, matched=position, actionable=actionable, namespaces=per_namespace, sample=sample,
                        commands=commands, estimated_commands=run.estimated_commands)
