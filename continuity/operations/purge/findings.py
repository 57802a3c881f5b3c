"""Review-finding purge targets: "the offending keys of review R, finding F".

A TTL review keeps at most 100 sample keys per finding, so it cannot list every offender.
The preview finds them again: it SCANs the prefixes of the namespaces that had the finding
in the review, asks each candidate's policy for its findings (metadata in one command per
batch: `keyspace.key_metadata`), and writes the current offenders, in order, to Postgres
(`PurgeTargetKey`, one INSERT per batch; memory stays bounded). Execution walks that stored
list by position — a checkpoint is a position, stable across a resume — and the acting
script re-checks that each key still has the finding under its namespace's policy.
"""

import redis
from redis.crc import key_slot

from continuity import keyspace
from continuity.keyspace import cluster as keyspace_cluster
from continuity.keyspace import purge as redis_purge
from continuity.models.purges import store_target_keys
from continuity.operations.purge import cluster as purge_cluster
from continuity.operations.purge.common import CONDITION_FINDINGS, PurgePreview, estimated_billed, split
from continuity.operations.purge.targets import scan_prefixes


def offender_pages(client, *, stats, finding, policies, batch_size, by_slot=False):
    """Yield (offending keys, (Redis commands, billed), keys scanned) per SCAN page over the
    namespaces where the review found `finding`. `by_slot`: `client` is one node of a
    cluster, where a script call may touch one hash slot only: the page's metadata comes from
    one pipeline on that node (`keyspace.node_metadata`, one round trip, never dearer in
    billed commands than a script call per slot group); a key whose slot moved since raises
    its MOVED/ASK error."""
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
                if by_slot:
                    sent = keyspace.metadata_commands(client, len(keys), pipeline=True)
                    metas = keyspace.node_metadata(client, keys)
                    for meta in metas:
                        if isinstance(meta, Exception):
                            raise meta
                    cost += sent
                    billed += sent  # a pipeline: each command sent is one executed
                else:
                    metas = keyspace.key_metadata(keys=keys, client=client)
                    sent = keyspace.metadata_commands(client, len(keys))
                    cost += sent
                    # PTTL per key, TYPE and MEMORY USAGE per key still there (+ the EVALSHA).
                    billed += len(keys) + 2 * sum(1 for m in metas if m.exists) + (1 if sent == 1 else 0)
                found = {m.key: m for m in metas}
                offenders = [key for key, policy in candidates
                             if (m := found.get(key)) is not None and m.exists
                             and finding in policy.findings(m.ttl_ms, m.type, m.memory)]
            yield offenders, (cost, billed), len(page)
            if cursor == 0:
                break


def node_offender_pages(database, client, **target):
    """`offender_pages` over the whole database, with the node of each page: every
    primary of a cluster in turn (address), or the one server (None)."""
    if not purge_cluster.is_cluster(database, client):
        for page, costs, scanned in offender_pages(client, **target):
            yield None, page, costs, scanned
        return
    first = True
    for address in keyspace_cluster.slot_map(client).addresses:
        direct = keyspace_cluster.node_client(client, address)
        try:
            for page, (cost, billed), scanned in offender_pages(direct, by_slot=True, **target):
                if first:  # the CLUSTER NODES above
                    cost, billed, first = cost + 1, billed + 1, False
                yield address, page, (cost, billed), scanned
        except keyspace_cluster.NODE_ERRORS as exc:
            raise purge_cluster.unreachable(database, address, exc) from exc
        except (redis.exceptions.AskError, redis.exceptions.TryAgainError) as exc:
            raise purge_cluster.resharding(database, address, exc) from exc
        finally:
            direct.close()
            direct.connection_pool.disconnect()


def given_pages(keys, batch_size):
    """Pages of an explicit key list (not yet checked): (no node, keys, 0 commands, keys read)."""
    page = []
    for key in keys:
        page.append(bytes(key))
        if len(page) >= batch_size:
            yield None, page, (0, 0), len(page)
            page = []
    if page:
        yield None, page, (0, 0), len(page)


def preview_offenders(run, client, *, policies, keys, stats, sample_size, progress):
    """Store a finding's current offenders in order and count them. With `stats` (the
    review's namespace figures) they are found by SCAN and checked here (on a cluster:
    primary by primary, so the stored list is grouped by node); an explicit `keys` list is
    stored as given and counted by a dry run of the acting script (on a cluster: per slot
    group, on the slot's owner). Returns the figures; `progress(keys read, offenders
    stored)` is called after each page."""
    router = None
    if purge_cluster.is_cluster(run.database, client):
        router = purge_cluster.Router(run.database, client, purge_cluster.layout_of(run.database, client))
    if keys is not None:
        pages = given_pages(keys, run.batch_size)
    else:
        pages = node_offender_pages(run.database, client, stats=stats, finding=run.finding, policies=policies,
                                    batch_size=run.batch_size)
    position = actionable = commands = billed = read = acting_keys = 0
    per_namespace, sample, nodes = {}, [], {}
    # On a cluster execution sends one acting call per slot group of each stored batch.
    calls, chunk, chunk_slots = 0, None, set()
    if router is not None:
        commands, billed = 1, 1  # the CLUSTER NODES of the router
        nodes = dict.fromkeys(router.layout.addresses, 0)
    try:
        for address, page, (cost, page_billed), scanned in pages:
            commands += cost
            billed += page_billed
            read += scanned
            start = position
            if page:
                position = store_target_keys(run, page, after=position)
            page_keys, page_policies, _outside = split(page, policies)
            acting_keys += len(page_keys)
            for policy in page_policies:
                label = policy.prefix.decode("utf-8", "backslashreplace")
                per_namespace[label] = per_namespace.get(label, 0) + 1
            if router is not None:
                inside = set(page_keys)
                for offset, key in enumerate(page):
                    owner = address or router.address_of(key)
                    nodes[owner] = nodes.get(owner, 0) + 1
                    if key not in inside:
                        continue
                    at = (start + offset) // run.batch_size
                    if at != chunk:
                        calls += len(chunk_slots)
                        chunk, chunk_slots = at, set()
                    chunk_slots.add(key_slot(key))
            if len(sample) < sample_size:
                sample.extend(keyspace.encode_key(k) for k in page_keys[: sample_size - len(sample)])
            if keys is not None and page_keys and router is None:
                counted = redis_purge.act_on_batch(client, page_keys, action="count", policies=page_policies,
                                                   want=CONDITION_FINDINGS[run.condition])
                actionable += counted.done
                commands += counted.commands
                billed += counted.billed
            elif keys is not None and page_keys:
                # A cluster: each owner's slot groups of the page counted in one round trip.
                for owner, (direct, groups) in router.by_owner(page_keys, page_policies).items():
                    try:
                        for _index, counted in redis_purge.act_on_groups(
                                direct, groups, action="count", want=CONDITION_FINDINGS[run.condition]):
                            actionable += counted.done
                            commands += counted.commands
                            billed += counted.billed
                    except (redis.exceptions.AskError, redis.exceptions.TryAgainError) as exc:
                        raise purge_cluster.resharding(run.database, owner, exc) from exc
            elif run.action == run.EXPIRE:
                actionable += sum(1 for policy in page_policies if policy.max_ttl_seconds)  # none: nothing to apply
            else:
                actionable += len(page_keys)
            if progress:
                progress(read, position)
    finally:
        if router is not None:
            router.close()
    calls += len(chunk_slots)
    # Execution sends one acting command per stored batch (a cluster: per slot group of
    # one, and the CLUSTER NODES checks of `check_layout`), and no SCAN.
    batches = -(-position // run.batch_size)
    acting = calls if router is not None else batches
    checks = purge_cluster.layout_checks(len(router.layout.addresses), finding=True) if router is not None else 0
    return PurgePreview(run=run, matched=position, actionable=actionable, namespaces=per_namespace, sample=sample,
                        commands=commands, estimated_commands=acting + checks, billed=billed,
                        estimated_billed=estimated_billed(
                            scans=0, acting_batches=acting, keys=acting_keys, actionable=actionable,
                            action=run.action, condition=run.condition,
                            read_regions=len(run.database.read_regions or ()), marker=router is None,
                            extra=checks),
                        nodes=nodes)
