"""Review-finding purge targets: "the offending keys of review R, finding F".

A TTL review keeps at most 100 sample keys per finding, so it cannot list every offender.
The preview finds them again: it SCANs the prefixes of the namespaces that had the finding
in the review, asks each candidate's policy for its findings (metadata in one command per
batch: `keyspace.key_metadata`), and writes the current offenders, in order, to Postgres
(`PurgeTargetKey`, one INSERT per batch; memory stays bounded). Execution walks that stored
list by position — a checkpoint is a position, stable across a resume — and the acting
script re-checks that each key still has the finding under its namespace's policy.
"""

from continuity import keyspace
from continuity.keyspace import purge as redis_purge
from continuity.models.purges import store_target_keys
from continuity.operations.purge.common import CONDITION_FINDINGS, PurgePreview, estimated_billed, split
from continuity.operations.purge.targets import scan_prefixes


def offender_pages(client, *, stats, finding, policies, batch_size):
    """Yield (offending keys, Redis commands, keys scanned) per SCAN page over the
    namespaces where the review found `finding`."""
    wanted = {stat.namespace.prefix.encode() for stat in stats}
    for prefix in scan_prefixes(wanted):
        pattern, cursor = keyspace.match_pattern(prefix), 0
        while True:
            cursor, page = keyspace.scan_page(match=pattern, cursor=cursor, count=batch_size, client=client)
            candidates = [(key, policy) for key in page
                          if (policy := policies.for_key(key)) is not None and policy.prefix in wanted]
            offenders, cost, billed = [], 1, 1
            if candidates:
                keys = [key for key, _ in candidates]
                metas = keyspace.key_metadata(keys=keys, client=client)
                sent = keyspace.metadata_commands(client, len(keys))
                cost += sent
                # PTTL per key, TYPE and MEMORY USAGE per key still there (+ the EVALSHA).
                billed += len(keys) + 2 * sum(1 for m in metas if m.exists) + (1 if sent == 1 else 0)
                offenders = [m.key for m, (_, policy) in zip(metas, candidates)
                             if m.exists and finding in policy.findings(m.ttl_ms, m.type, m.memory)]
            yield offenders, (cost, billed), len(page)
            if cursor == 0:
                break


def given_pages(keys, batch_size):
    """Pages of an explicit key list (not yet checked): (keys, 0 commands, keys read)."""
    page = []
    for key in keys:
        page.append(bytes(key))
        if len(page) >= batch_size:
            yield page, (0, 0), len(page)
            page = []
    if page:
        yield page, (0, 0), len(page)


def preview_offenders(run, client, *, policies, keys, stats, sample_size, progress):
    """Store a finding's current offenders in order and count them. With `stats` (the
    review's namespace figures) they are found by SCAN and checked here; an explicit `keys`
    list is stored as given and counted by a dry run of the acting script. Returns the
    figures; `progress(keys read, offenders stored)` is called after each page."""
    if keys is not None:
        pages = given_pages(keys, run.batch_size)
    else:
        pages = offender_pages(client, stats=stats, finding=run.finding, policies=policies,
                               batch_size=run.batch_size)
    position = actionable = commands = billed = read = acting_keys = 0
    per_namespace, sample = {}, []
    for page, (cost, page_billed), scanned in pages:
        commands += cost
        billed += page_billed
        read += scanned
        if page:
            position = store_target_keys(run, page, after=position)
        page_keys, page_policies, _outside = split(page, policies)
        acting_keys += len(page_keys)
        for policy in page_policies:
            label = policy.prefix.decode("utf-8", "backslashreplace")
            per_namespace[label] = per_namespace.get(label, 0) + 1
        if len(sample) < sample_size:
            sample.extend(keyspace.encode_key(k) for k in page_keys[: sample_size - len(sample)])
        if keys is not None and page_keys:
            counted = redis_purge.act_on_batch(client, page_keys, action="count", policies=page_policies,
                                               want=CONDITION_FINDINGS[run.condition])
            actionable += counted.done
            commands += counted.commands
            billed += counted.billed
        elif run.action == run.EXPIRE:
            actionable += sum(1 for policy in page_policies if policy.max_ttl_seconds)  # none: nothing to apply
        else:
            actionable += len(page_keys)
        if progress:
            progress(read, position)
    # Execution sends one acting command per stored batch, and no SCAN.
    batches = -(-position // run.batch_size)
    return PurgePreview(run=run, matched=position, actionable=actionable, namespaces=per_namespace, sample=sample,
                        commands=commands, estimated_commands=batches, billed=billed,
                        estimated_billed=estimated_billed(
                            scans=0, acting_batches=batches, keys=acting_keys, actionable=actionable,
                            action=run.action, condition=run.condition,
                            read_regions=len(run.database.read_regions or ())))
