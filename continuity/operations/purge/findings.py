"""Review-finding purge targets: "the offending keys of review R, finding F".

A TTL review keeps at most 100 sample keys per finding, so it cannot list every offender.
The preview finds them again, node by node: it SCANs the prefixes of the namespaces that had
the finding in the review, reads each candidate's metadata (`stream.metadata_rows`: one
script call per page, only what the finding needs), asks its policy for its findings, and
writes the current offenders of each node, in order, to Postgres (`PurgeTargetKey`, one
INSERT per page; memory stays bounded). Execution walks each node's stored list by
position — a checkpoint is a position, stable across a resume — and the acting script
re-checks that each key still has the finding under its namespace's policy.
"""

import redis

from continuity import keyspace
from continuity.billing import Cost
from continuity.keyspace import purge as redis_purge
from continuity.keyspace import stream
from continuity.models.purges import store_target_keys
from continuity.operations.purge.common import (CONDITION_FINDINGS, Counted, PurgePreview, estimated_billed,
                                                layout_checks, resharding, split)
from continuity.operations.purge.targets import scan_prefixes
from continuity.policy import OVERSIZED, WRONG_TYPE


def offender_pages(node, *, stats, finding, policies, batch_size, heads=None):
    """Yield (offending keys, Cost, keys read) per SCAN page of `node` over the namespaces
    where the review found `finding` (`stats`), or only under the literal prefixes `heads`
    of a scoped target: a key counts only when it lies in one of those namespaces."""
    wanted = {stat.namespace.prefix.encode() for stat in stats}
    needs = stream.Needs(type=finding == WRONG_TYPE, memory=finding == OVERSIZED)
    for prefix in heads or scan_prefixes(wanted):
        pattern, cursor = keyspace.match_pattern(prefix), 0
        while True:
            cursor, page = keyspace.scan_page(match=pattern, cursor=cursor, count=batch_size, client=node.client)
            cost = Cost(sent=1, billed=1)
            candidates = {key: policy for key in page
                          if (policy := policies.for_key(key)) is not None and policy.prefix in wanted}
            offenders = []
            if candidates:
                rows, sent, billed = stream.metadata_rows(node, list(candidates), needs)
                cost.add(sent=sent, billed=billed)
                items = iter(rows)
                for key, pttl, kind, memory in zip(items, items, items, items):
                    if pttl == stream.VANISHED:
                        continue
                    found = candidates[key].findings(None if pttl == stream.NO_EXPIRY else pttl, kind or None,
                                                     None if memory < 0 else memory)
                    if finding in found:
                        offenders.append(key)
            yield offenders, cost, len(page)
            if cursor == 0:
                break


def _given_pages(nodes, keys, batch_size):
    """Pages of an explicit key list, node by node (each key on the node serving it):
    (node, keys, Cost, keys read)."""
    by_node = {}
    for key in keys:
        owner = nodes.owner(bytes(key))
        by_node.setdefault(owner.address if owner else "", []).append(bytes(key))
    for node in nodes.nodes:
        listed = by_node.get(node.address, [])
        for start in range(0, len(listed), batch_size):
            page = listed[start:start + batch_size]
            yield node, page, Cost(), len(page)


def preview_offenders(run, nodes, *, policies, keys, stats, sample_size, pacer, failed=None):
    """Store a finding's current offenders, node by node, in order, and count them. With
    `stats` (the review's namespace figures) they are found by SCAN and checked here; an
    explicit `keys` list is stored as given (each key with the node serving it) and counted
    by a dry run of the acting script. Returns the figures; the pacer saves progress. `failed`
    (a Cost): receives what was sent when a Redis error stops the count."""
    out = Counted()
    try:
        return _offenders(run, nodes, out, policies=policies, keys=keys, stats=stats, sample_size=sample_size,
                          pacer=pacer)
    except (redis.RedisError, OSError):
        if failed is not None:
            failed.add(sent=out.commands, billed=out.billed)
            for cost in nodes.drain().values():
                failed.add(sent=cost.sent, billed=cost.billed)
        raise


def _offenders(run, nodes, out, *, policies, keys, stats, sample_size, pacer):
    nodes.check()
    if keys is not None:
        pages = _given_pages(nodes, keys, run.batch_size)
    else:
        heads = [run.target_bytes()] if run.target_bytes() else None  # a scoped finding: its prefix only
        pages = ((node, page, cost, read) for node in nodes.nodes
                 for page, cost, read in offender_pages(node, stats=stats, finding=run.finding, policies=policies,
                                                        batch_size=run.batch_size, heads=heads))
    want = CONDITION_FINDINGS[run.condition]
    read, per_node, positions = 0, {}, {}
    pending = {}  # node address → keys stored but not yet making a whole execution page
    for node, page, cost, scanned in pages:
        out.commands += cost.sent
        out.billed += cost.billed
        read += scanned
        if page:
            positions[node.address] = store_target_keys(run, node.address, page, after=positions.get(node.address, 0))
            per_node[node.address] = per_node.get(node.address, 0) + len(page)
        page_keys, page_policies, _outside = split(page, policies)
        out.saw(page, page_keys, page_policies, sample_size)
        if keys is not None and page_keys:
            acting = Cost()
            try:
                counted = redis_purge.act(node, page_keys, action="count", policies=page_policies, want=want,
                                          cost=acting)
            except (redis.RedisError, OSError):  # what it sent is counted all the same
                out.commands += acting.sent
                out.billed += acting.billed
                raise
            if counted.moved:
                raise resharding(run.database, node.address, counted.moved)
            would = [counted.done]
            out.commands += counted.commands
            out.billed += counted.billed
        elif run.action == run.EXPIRE:
            would = [1 if policy.max_ttl_seconds else 0 for policy in page_policies]  # none: nothing to apply
        else:
            would = [1] * len(page_keys)
        out.actionable += sum(would)
        # Execution reads the stored list back in pages of batch_size, per node.
        stored = pending.setdefault(node.address, [0, 0, 0])  # keys, in namespaces, changing
        stored[0] += len(page)
        stored[1] += len(page_keys)
        stored[2] += sum(would)
        while stored[0] >= run.batch_size:
            _page_done(out, stored, run.batch_size)
        pacer.advance(read, out.matched)
    for stored in pending.values():
        if stored[0]:
            _page_done(out, stored, stored[0])
    for cost in nodes.drain().values():
        out.commands += cost.sent
        out.billed += cost.billed
    checks = layout_checks(nodes)
    count = len(nodes.nodes)
    return PurgePreview(run=run, matched=out.matched, actionable=out.actionable, namespaces=out.namespaces,
                        sample=out.sample, commands=out.commands, estimated_commands=out.pages + count + checks,
                        billed=out.billed,
                        estimated_billed=estimated_billed(
                            out, nodes=count, action=run.action, condition=run.condition, scanned=False,
                            unlink_each=nodes.is_cluster, read_regions=len(run.database.read_regions or ()),
                            checks=checks),
                        nodes=per_node)


def _page_done(out, stored, size):
    """Account one execution page of `size` stored keys (the acting keys and changing keys
    taken in proportion from what is pending, exact when pages hold whole preview pages)."""
    keys, inside, changing = stored
    take_inside = min(inside, size) if keys == size else min(inside, round(inside * size / keys))
    take_changing = min(changing, take_inside)
    out.pages += 1
    out.acting_pages += 1 if take_inside else 0
    out.acting_keys += take_inside
    out.changing_pages += 1 if take_changing else 0
    stored[0], stored[1], stored[2] = keys - size, inside - take_inside, changing - take_changing
