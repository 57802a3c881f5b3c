"""Purges of a Redis Cluster: a prefix or pattern purge (delete or expire) and its preview,
spread over every primary.

A node's SCAN returns that node's keys only, and every key it returns lives on that node,
so each primary is scanned through its own direct client (`cluster.node_client`), one
after the other, in the order of their addresses. A cluster refuses a script call whose
keys lie in more than one hash slot, so each SCAN page is split by key slot
(`redis.crc.key_slot`) and `act_on_batch` is called once per slot group, on that node.

Design of the checkpoint: no Redis progress marker on a cluster (it would have to live in
the slot of the keys of each call). Instead the run's per-node SCAN cursors
(`PurgeRun.node_cursors`, {host:port: cursor or "end"}) and its totals are checkpointed
in Postgres after every page. A worker that dies between a page's script calls and that
page's checkpoint repeats that one page on resume: a delete or a TTL repair is idempotent
(a key deleted already no longer exists, a TTL set already no longer breaks the rule), so
no key is harmed twice; only that page's keys are counted again, as `skipped`.

A primary that does not answer raises a ConnectionError naming it: the run stays
`running` with every other node's cursor kept, the task retries, and after its last retry
`fail_purge` records it `failed` with that message, never `succeeded`. A slot moved
mid-run answers MOVED to the script call: a Redis error, the same way.

Finding purges and the policy purge of a cluster are still refused (`is_cluster`,
`common.refuse_on_cluster`).
"""

import redis
from redis.crc import key_slot

from continuity import keyspace
from continuity.keyspace import cluster as keyspace_cluster
from continuity.keyspace import purge as redis_purge
from continuity.keyspace.connection import describe
from continuity.models import PurgeRun
from continuity.operations.purge.common import CONDITION_FINDINGS, PurgeRefused, split

NODE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def is_cluster(database, client, kind):
    """True when `database` is a cluster and `kind` of purge can run across its primaries;
    False for a standalone server; PurgeRefused for a finding purge of a cluster (or a
    record contradicting the server)."""
    try:
        mode = keyspace_cluster.mode_of(database, client)
    except keyspace_cluster.ClusterRefusal as exc:
        raise PurgeRefused(str(exc)) from None
    if mode != keyspace_cluster.CLUSTER:
        return False
    if kind not in (PurgeRun.PREFIX, PurgeRun.PATTERN):
        raise PurgeRefused(f"{database.name} is a Redis Cluster; finding purges across primaries are not supported "
                           f"yet: purge by prefix or pattern instead. Nothing was scanned or changed.")
    return True


def primaries(client):
    """The addresses of the primaries serving slots, sorted."""
    return sorted(node.address for node in keyspace_cluster.cluster_nodes(client)
                  if node.role == "primary" and node.slots)


def by_slot(keys, policies):
    """[(keys, policies)] of one hash slot each, in order of first appearance."""
    groups = {}
    for key, policy in zip(keys, policies):
        group = groups.setdefault(key_slot(key), ([], []))
        group[0].append(key)
        group[1].append(policy)
    return list(groups.values())


def unreachable(database, address, exc):
    return redis.ConnectionError(
        f"Primary {address} of {database.name} is unreachable ({describe(exc)}); the purge stopped there, "
        f"the other primaries' progress is kept and a resume continues it.")


def count_nodes(database, client, *, count, progress=None):
    """{address: Counted} of `count(node_client)` on each primary. `progress(scanned,
    matched)` sees the running totals over the nodes."""
    out, base = {}, 0
    for address in primaries(client):
        direct = keyspace_cluster.node_client(client, address)
        try:
            out[address] = count(direct, (lambda s, m, b=base: progress(b + s, b + m)) if progress else None)
        except NODE_ERRORS as exc:
            raise unreachable(database, address, exc) from exc
        finally:
            direct.close()
            direct.connection_pool.disconnect()
        base += out[address].matched
    return out


def scan_pages(client, *, match, cursor, count):
    """Yield (next cursor or None at the end, [keys]) SCAN pages of one node from `cursor`
    (as `preview.scan_pages`, which imports this module)."""
    while True:
        cursor, page = keyspace.scan_page(match=match, cursor=cursor, count=count, client=client)
        yield (None if cursor == 0 else cursor), page
        if cursor == 0:
            return


def run_nodes(run, client, pacer, policies, reach):
    """Purge every primary from its checkpointed cursor. SUCCEEDED, CANCELLED or None (the
    claim was lost), like the standalone loop."""
    cursors = dict(run.node_cursors or {})
    for address in primaries(client):
        cursors.setdefault(address, "0")
    run.node_cursors = cursors
    want = CONDITION_FINDINGS[run.condition]
    for address in sorted(cursors):
        if cursors[address] == "end":
            continue
        direct = keyspace_cluster.node_client(client, address)
        try:
            for position, page in scan_pages(direct, match=run.match_bytes(), cursor=int(cursors[address]),
                                             count=run.batch_size):
                run.commands += 1
                run.billed_commands += 1
                page_keys, page_policies, outside = split(page, policies, reach)
                run.skipped += outside
                run.matched += len(page)
                for keys, chosen in by_slot(page_keys, page_policies):
                    result = redis_purge.act_on_batch(direct, keys, action=run.action, policies=chosen, want=want)
                    run.batches += 1
                    run.done += result.done
                    run.skipped += result.skipped
                    run.commands += result.commands
                    run.billed_commands += run.billed(result.billed, result.writes)
                cursors[address] = "end" if position is None else str(position)
                state = pacer.after_batch(len(page), final=True)  # a checkpoint per page (see above)
                if state == "lost":
                    return None
                if state == "cancel":
                    return PurgeRun.CANCELLED
        except NODE_ERRORS as exc:
            raise unreachable(run.database, address, exc) from exc
        finally:
            direct.close()
            direct.connection_pool.disconnect()
    run.cursor = "end"
    return PurgeRun.SUCCEEDED
