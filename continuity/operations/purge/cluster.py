"""Purges of a Redis Cluster: every kind (prefix, pattern, review finding, the scheduled
policy purge) and its preview, spread over every primary.

A node's SCAN returns that node's keys only, and every key it returns lives on that node,
so each primary is scanned through its own direct client (`cluster.node_client`), one
after the other, in the order of their addresses. A cluster refuses a script call whose
keys lie in more than one hash slot, so each page is split by key slot
(`redis.crc.key_slot`) and the same script, re-checking each key with the same `Policy`
rules as on a standalone server, is called once per slot group, on the node that serves
that slot. A page's calls to a node travel in one non-transactional pipeline
(`act_on_groups`: one round trip per page per node, not one per slot group, which with
16,384 slots is nearly one per key; each call still touches one slot, so the cluster takes
it). A finding purge walks the key list its preview stored (node by node) and sends each
slot group to the slot's owner (`Router`), each owner's groups of a page in one pipeline.

Design of the checkpoint: no Redis progress marker on a cluster (it would have to live in
the slot of the keys of each call). Instead the run's per-node SCAN cursors
(`PurgeRun.node_cursors`, {host:port: cursor or "end"}; a finding purge: the position in
its stored list, `cursor`), its totals and each node's figures (`node_stats`) are
checkpointed in Postgres after every page. A worker that dies between a page's script
calls and that page's checkpoint repeats that one page on resume: a delete or a TTL repair
is idempotent (a key deleted already no longer exists, a TTL set already no longer breaks
the rule), so no key is harmed twice; only that page's keys are counted again, as
`skipped`.

Billed commands are counted per node (`node_stats[address]["billed"]`: SCANs, script calls
and the calls inside them, the `CLUSTER NODES` checks) and summed into `billed_commands`.

Topology: the slot owners are read when the run starts (`node_layout`, kept across a
resume) and checked again before each primary and at the end (`check_layout`: one
`CLUSTER NODES` per primary, since a node lists only its own migrating slots). A slot that
moved, or is migrating (MIGRATING/IMPORTING), or a MOVED/ASK/TRYAGAIN answer to a script
call, ends the run `failed` at once (`TopologyChanged`, naming the slot and its nodes): keys of that slot
may have been missed, so it is never `succeeded`. What was done is counted exactly: the
calls of the same pipeline that succeeded (before or after the redirected one) are counted
before it fails.

A primary that does not answer raises a ConnectionError naming it: the run stays
`running` with every other node's cursor kept, the task retries, and after its last retry
`fail_purge` records it `failed` with that message, never `succeeded`.
"""

import redis
from redis.crc import key_slot

from continuity import keyspace
from continuity.keyspace import cluster as keyspace_cluster
from continuity.keyspace import purge as redis_purge
from continuity.keyspace.cluster import NODE_ERRORS
from continuity.keyspace.connection import describe
from continuity.models import PurgeRun
from continuity.operations.purge.common import CONDITION_FINDINGS, PurgeRefused, split

FIGURES = ("scanned", "matched", "done", "skipped", "commands", "billed")


class TopologyChanged(PurgeRefused):
    """The cluster's slots moved (or are moving) during the run: keys may have been missed.
    Final: the run ends failed, naming the slots and nodes."""


def is_cluster(database, client):
    """True when `database` is a Redis Cluster, False for a standalone server; PurgeRefused
    when its record contradicts the server."""
    try:
        return keyspace_cluster.mode_of(database, client) == keyspace_cluster.CLUSTER
    except keyspace_cluster.ClusterRefusal as exc:
        raise PurgeRefused(str(exc)) from None


def home(client):
    """host:port of the node `client` talks to (the one the URL names)."""
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def by_slot(keys, policies):
    """[(keys, policies)] of one hash slot each, in order of first appearance."""
    groups = {}
    for key, policy in zip(keys, policies):
        group = groups.setdefault(key_slot(key), ([], []))
        group[0].append(key)
        group[1].append(policy)
    return list(groups.values())


def slot_groups(keys):
    """How many script calls `by_slot` makes of `keys`: their distinct slots."""
    return len({key_slot(key) for key in keys})


def unreachable(database, address, exc):
    return redis.ConnectionError(
        f"Primary {address} of {database.name} is unreachable ({describe(exc)}); the purge stopped there, "
        f"the other primaries' progress is kept and a resume continues it.")


def resharding(database, address, exc):
    """PurgeRefused for a preview that met a slot being moved (MOVED / ASK / TRYAGAIN)."""
    return PurgeRefused(f"{database.name} is being resharded: {address} answered "
                        f"{exc.__class__.__name__.removesuffix('Error').upper()} {exc}. Its counts would be wrong; "
                        f"preview again once the slots stopped moving. Nothing was changed.")


def dbsize(database, client):
    """DBSIZE summed over the primaries (one DBSIZE each), or None where one refuses it or
    does not answer: one node's DBSIZE is not the cluster's."""
    total = 0
    for address in keyspace_cluster.slot_map(client).addresses:
        direct = keyspace_cluster.node_client(client, address)
        try:
            size = keyspace.dbsize(direct)
        except NODE_ERRORS:
            return None
        finally:
            direct.close()
            direct.connection_pool.disconnect()
        if size is None:
            return None
        total += size
    return total


def count_nodes(database, client, *, count, progress=None):
    """{address: Counted} of `count(node_client, progress)` on each primary. `progress(scanned,
    matched)` sees the running totals over the nodes."""
    out, base = {}, 0
    for address in keyspace_cluster.slot_map(client).addresses:
        direct = keyspace_cluster.node_client(client, address)
        try:
            out[address] = count(direct, (lambda s, m, b=base: progress(b + s, b + m)) if progress else None)
        except NODE_ERRORS as exc:
            raise unreachable(database, address, exc) from exc
        except (redis.exceptions.AskError, redis.exceptions.TryAgainError) as exc:
            raise resharding(database, address, exc) from exc
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


class Router:
    """Direct clients on the primaries of a `SlotMap`, and the owner of each slot group."""

    def __init__(self, database, client, layout):
        self.database, self.client, self.layout = database, client, layout
        self.clients = {}

    def node(self, address):
        if address not in self.clients:
            self.clients[address] = keyspace_cluster.node_client(self.client, address)
        return self.clients[address]

    def address_of(self, key):
        return self.layout.owner(key)

    def groups(self, keys, policies):
        """Yield (owner address, its client, keys, policies) per hash slot of `keys`."""
        for group_keys, chosen in by_slot(keys, policies):
            address = self.address_of(group_keys[0])
            yield address, self.node(address), group_keys, chosen

    def by_owner(self, keys, policies):
        """{owner address: (its client, [(keys, policies)] one hash slot each)}: what
        `act_on_groups` sends each owner in one round trip."""
        owners = {}
        for address, direct, group_keys, chosen in self.groups(keys, policies):
            owners.setdefault(address, (direct, []))[1].append((group_keys, chosen))
        return owners

    def close(self):
        for direct in self.clients.values():
            direct.close()
            direct.connection_pool.disconnect()
        self.clients = {}


def layout_checks(primaries_count, finding=False):
    """The `CLUSTER NODES` commands a run's `check_layout` calls send: one per primary per
    check, a check at the start, before each further primary (SCAN targets) and at the end."""
    checks = 2 if finding else primaries_count + 1
    return checks * primaries_count


def layout_of(database, client):
    """The current `SlotMap`, or PurgeRefused when some slots are served by nobody (a
    purge would miss their keys)."""
    layout = keyspace_cluster.slot_map(client)
    if layout.slots_covered < keyspace_cluster.SLOTS:
        raise PurgeRefused(f"{database.name}: the primaries serve {layout.slots_covered:,} of "
                           f"{keyspace_cluster.SLOTS:,} slots; a purge would miss keys. Nothing more was changed.")
    return layout


# --- the run's per-node figures -------------------------------------------------------------
def tally(run, address, **figures):
    """Add `figures` to `address`'s row of `run.node_stats`."""
    stats = run.node_stats if isinstance(run.node_stats, dict) else {}
    row = stats.setdefault(address, dict.fromkeys(FIGURES, 0))
    for name, value in figures.items():
        row[name] = row.get(name, 0) + value
    run.node_stats = stats


def spend(run, address, commands, billed):
    """Commands sent to `address` and what Redis billed for them, on the node and the run."""
    run.commands += commands
    run.billed_commands += billed
    tally(run, address, commands=commands, billed=billed)


def check_layout(run, client):
    """`CLUSTER NODES` of the URL's node (the slot owners) and of every other primary (a
    node shows only its own MIGRATING/IMPORTING slots), each billed to its node: the first
    time, the slot owners are recorded on `run.node_layout`; later, any slot owned by
    another node, and any time a slot being migrated, raises TopologyChanged naming it.
    Returns the current SlotMap."""
    here = home(client)
    try:
        layout = layout_of(run.database, client)
    finally:
        spend(run, here, 1, 1)
    moving = set(layout.moving)
    for address in layout.addresses:
        if address == here:
            continue
        direct = keyspace_cluster.node_client(client, address)
        try:
            moving.update(keyspace_cluster.slot_map(direct).moving)
        except NODE_ERRORS as exc:
            raise unreachable(run.database, address, exc) from exc
        finally:
            spend(run, address, 1, 1)
            direct.close()
            direct.connection_pool.disconnect()
    if moving:
        moving = sorted(moving)
        slot, source, target = moving[0]
        more = f" (and {len(moving) - 1} more)" if len(moving) > 1 else ""
        raise TopologyChanged(
            f"The cluster's topology changed during purge #{run.pk} of {run.database.name}: slot {slot} is migrating "
            f"from {source} to {target}{more}. Keys of that slot may be missed, so the purge stopped as failed. "
            f"{_so_far(run)}")
    if not run.node_layout:
        run.node_layout = layout.owners
        return layout
    if layout.owners != run.node_layout:
        moved = keyspace_cluster.moved_slots(keyspace_cluster.SlotMap.from_owners(run.node_layout), layout)
        if moved:
            slot, source, target = moved[0]
            what = (f"slot {slot} moved from {source} to {target or 'no node'}"
                    + (f" (and {len(moved) - 1} more slots)" if len(moved) > 1 else ""))
        else:
            what = f"its primaries changed ({', '.join(sorted(run.node_layout))} → {', '.join(layout.addresses)})"
        raise TopologyChanged(
            f"The cluster's topology changed during purge #{run.pk} of {run.database.name}: {what}. Keys of the "
            f"moved slots may have been missed, so the purge stopped as failed. {_so_far(run)}")
    return layout


def _so_far(run):
    # A page is counted as matched when scanned; the calls of a slot that answered MOVED (and
    # any not sent after it) act on nothing: those keys are untouched, and said so.
    untouched = run.matched - run.skipped - run.done
    left = (f"; {untouched:,} of the matched keys were not acted on (their slot had moved) and are untouched"
            if untouched > 0 else "")
    return (f"So far it matched {run.matched:,} keys, {run.done_label} {run.done:,} and skipped {run.skipped:,} "
            f"(exact){left}. Once the resharding or failover is over, preview and run the purge again.")


def redirected(run, address, exc):
    """TopologyChanged for a MOVED / ASK / TRYAGAIN answer of `address`, else None."""
    if isinstance(exc, redis.exceptions.AskError):  # MovedError is one too
        kind = "MOVED" if isinstance(exc, redis.exceptions.MovedError) else "ASK"
        host, port = exc.node_addr
        what = f"slot {exc.slot_id} is served by {host}:{port} now ({address} answered {kind})"
    elif isinstance(exc, redis.exceptions.TryAgainError):
        what = f"{address} answered TRYAGAIN ({exc}): a slot of the batch is migrating"
    else:
        return None
    return TopologyChanged(
        f"The cluster's topology changed during purge #{run.pk} of {run.database.name}: {what}. Keys of that slot "
        f"may be missed, so the purge stopped as failed. {_so_far(run)}")


def _act(run, address, direct, groups, want):
    """Act on `groups` ([(keys, policies)], one hash slot each) on `address`, their script
    calls in one round trip (`act_on_groups`), and count what they did. A MOVED / ASK /
    TRYAGAIN answer to any of them fails the run (TopologyChanged) once the calls that did
    succeed are counted: they happened."""
    figures = [0] * 5  # script calls, done, skipped, commands sent, commands billed
    try:
        for _index, result in redis_purge.act_on_groups(direct, groups, action=run.action, want=want):
            for at, value in enumerate((1, result.done, result.skipped, result.commands,
                                        run.billed(result.billed, result.writes))):
                figures[at] += value
    except BaseException as exc:
        _count(run, address, *figures)  # the calls that succeeded happened: counted first
        moved = redirected(run, address, exc)
        if moved is not None:
            raise moved from exc
        raise
    _count(run, address, *figures)


def _count(run, address, calls, done, skipped, commands, billed):
    """Add a node's script calls and their figures to the run (one `node_stats` update)."""
    run.batches += calls
    run.done += done
    run.skipped += skipped
    tally(run, address, done=done, skipped=skipped)
    spend(run, address, commands, billed)


def run_nodes(run, client, pacer, policies, reach):
    """Purge every primary from its checkpointed cursor (a prefix, pattern or policy
    target). SUCCEEDED, CANCELLED or None (the claim was lost), like the standalone loop;
    TopologyChanged when a slot moved."""
    layout = check_layout(run, client)
    cursors = dict(run.node_cursors or {})
    for address in layout.addresses:
        cursors.setdefault(address, "0")
    run.node_cursors = cursors
    want = CONDITION_FINDINGS[run.condition]
    first = True
    for address in sorted(cursors):
        if cursors[address] == "end":
            continue
        if not first:
            check_layout(run, client)
        first = False
        direct = keyspace_cluster.node_client(client, address)
        try:
            for position, page in scan_pages(direct, match=run.match_bytes(), cursor=int(cursors[address]),
                                             count=run.batch_size):
                spend(run, address, 1, 1)
                page_keys, page_policies, outside = split(page, policies, reach)
                run.skipped += outside
                run.matched += len(page)
                tally(run, address, scanned=len(page), matched=len(page), skipped=outside)
                _act(run, address, direct, by_slot(page_keys, page_policies), want)
                cursors[address] = "end" if position is None else str(position)
                stop, status = pacer.after_page(len(page), final=True)  # a checkpoint per page (see above)
                if stop:
                    return status
        except NODE_ERRORS as exc:
            raise unreachable(run.database, address, exc) from exc
        finally:
            direct.close()
            direct.connection_pool.disconnect()
    check_layout(run, client)  # a slot that moved to a node already done would hide keys
    run.cursor = "end"
    return PurgeRun.SUCCEEDED


def run_findings(run, client, pacer, policies, pages):
    """Purge a finding's stored key list (`pages`: (position after or None, [keys], cost)
    from the checkpointed position), each slot group on its owner. Same results as
    `run_nodes`."""
    layout = check_layout(run, client)
    router = Router(run.database, client, layout)
    want = CONDITION_FINDINGS[run.condition]
    address = None
    try:
        for position, page, _cost in pages:
            page_keys, page_policies, _outside = split(page, policies)
            inside = set(page_keys)
            run.matched += len(page)
            for key in page:
                address = router.address_of(key)
                tally(run, address, matched=1, **({} if key in inside else {"skipped": 1}))
            run.skipped += len(page) - len(page_keys)
            # each owner's slot groups of the page: one round trip per owner
            for address, (direct, groups) in router.by_owner(page_keys, page_policies).items():
                _act(run, address, direct, groups, want)
            run.cursor = "end" if position is None else str(position)
            stop, status = pacer.after_page(len(page), final=True)
            if stop:
                return status
    except NODE_ERRORS as exc:
        raise unreachable(run.database, address, exc) from exc
    finally:
        router.close()
    check_layout(run, client)
    run.cursor = "end"
    return PurgeRun.SUCCEEDED
