"""The nodes a job works through: a standalone server is a keyspace of one primary.

`primaries(database)` gives the `Keyspace` of a database for one job: its `nodes`, one
`Node` for a standalone server, one per primary serving slots for a Redis Cluster, each
with a client that talks to that node only. A node's SCAN returns that node's keys, and
every key it returns lives there, so every job (reviews, previews, every kind of purge)
is one loop over `nodes` running the same code per node.

What differs between the two, and stays here:

- `Node.declares_keys`: a script on a standalone server declares its keys (on Upstash that
  locks only those keys); a cluster refuses declared keys of more than one slot, so a
  cluster node's scripts take their keys undeclared (`scripts.Script.run(declare=False)`).
- `Node.own_key`: a key of the dashboard's own (a purge's progress marker) on that node: on
  a cluster node it carries a hash tag of a slot the node serves.
- `Keyspace.check`: on a cluster, whether slots moved since the job started or are moving
  now (MIGRATING/IMPORTING), from `CLUSTER NODES` of every primary (a node lists only its
  own migrations); nothing is asked of a standalone server.

Each node's client is kept across requests (`direct_client`: the URL's credentials, TLS
and timeouts, its connections reused), so a job opens no pool of its own. Commands the
keyspace itself sends (CLUSTER NODES) are counted per node in `spent` for the job to bill.
"""

import contextlib
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from redis import RedisError
from redis import exceptions as redis_errors
from redis.crc import key_slot

from continuity.billing import Cost
from continuity.keyspace import cluster
from continuity.keyspace.connection import NODE_CLIENTS_ATTRIBUTE, KeyspaceError, client_for, is_rest

_nodes_lock = threading.Lock()


def direct_client(client, address):
    """A client on the node at `address` (`cluster.node_client`: `client`'s credentials, TLS
    and timeouts), kept on `client` so that jobs and pages reuse its connections. Closed
    with `client` by `connection.forget_clients`."""
    with _nodes_lock:
        made = getattr(client, NODE_CLIENTS_ATTRIBUTE, None)
        if made is None:
            made = {}
            setattr(client, NODE_CLIENTS_ATTRIBUTE, made)
        direct = made.get(address)
        if direct is None:
            direct = made[address] = cluster.node_client(client, address)
    return direct


def address_of(client):
    """host:port of the node `client` talks to (the one the URL names)."""
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


@lru_cache(maxsize=256)
def _tag_in(ranges):
    number = 0
    while not any(first <= key_slot(b"{%d}" % number) <= last for first, last in ranges):
        number += 1
    return str(number)


def tag_for(ranges):
    """The smallest number whose hash slot lies in `ranges` ([[first, last], …]), as a hash
    tag: a few tries for a primary serving a share of the slots."""
    return _tag_in(tuple(tuple(pair) for pair in ranges)) if ranges else ""


@dataclass(frozen=True)
class Node:
    """One primary of a job: its address, a client on it alone, and how scripts name keys there."""

    address: str
    client: object = field(compare=False, repr=False)
    declares_keys: bool = True
    tag: str = ""

    def own_key(self, name: bytes) -> bytes:
        """`name` as a key of the dashboard's own on this node (in a slot it serves)."""
        return name + b"{" + self.tag.encode() + b"}" if self.tag else name


def unreachable(database, address, exc):
    """The ConnectionError of a node that did not answer a job, naming it (a passing failure:
    the job's task retries it); over REST, what the endpoint answered (a 429, a timeout…)."""
    from redis import ConnectionError as RedisConnectionError

    from continuity.keyspace.connection import describe_error
    from continuity.keyspace.rest import RestError

    if isinstance(exc, RestError):  # its message names the REST endpoint and what it answered (a 429, a 401…)
        return RedisConnectionError(f"{describe_error(exc)} The job stopped there; its progress is kept and a resume "
                                    "continues it.")
    return RedisConnectionError(
        f"Primary {address} of {database.name} is unreachable ({describe_error(exc)}); the job stopped there, every "
        f"node's progress is kept and a resume continues it.")


def _refused(exc):
    from continuity.keyspace.capabilities import refused

    return refused(exc)


def is_moved(exc):
    """True when `exc` is a cluster node refusing a key it no longer serves (a script's
    "non local key", or MOVED / ASK): its slot moved away (a failover or resharding)."""
    from redis.exceptions import AskError, ResponseError

    return isinstance(exc, AskError) or (isinstance(exc, ResponseError) and "non local key" in str(exc).lower())


def moved_away(database, node, ranges, *, cost=None):
    """`SlotsMoved` naming the first slot of `ranges` ([[first, last], …]) that `node` no
    longer serves and the primary serving it now, from `node`'s own CLUSTER NODES (one
    command, counted in `cost`); a generic one when that cannot be read."""
    try:
        layout = cluster.slot_map(node.client)
        if cost is not None:
            cost.add(sent=1, billed=1)
    except (RedisError, OSError):
        layout = None
    if layout is not None:
        for first, last in ranges:
            for slot in range(first, last + 1):
                owner = layout.owner_of(slot)
                if owner != node.address:
                    return SlotsMoved(f"slot {slot} is served by {owner or 'no node'} now ({node.address} no longer "
                                      f"serves it: a failover or resharding)", [(slot, node.address, owner)])
    return SlotsMoved(f"{node.address} no longer serves keys it held (a failover or resharding)")


class SlotsMoved(KeyspaceError):
    """A cluster's slots moved, or are moving, during a job: keys of those slots may have
    been read twice or not at all. The message names the first slot and its nodes."""

    def __init__(self, message, slots=()):
        super().__init__(message)
        self.slots = slots


class ResumeRefused(cluster.ClusterRefusal):
    """A job's progress was recorded on the primaries of a Redis Cluster and the record now
    reaches one server (over REST, always: Upstash's REST API is one logical primary). Final:
    that progress cannot be carried over, and retrying changes nothing until the record does."""


def _reached(database, client):
    if is_rest(client):
        return (f"{database.name} is now reached by its REST API ({client.rest_endpoint}), which serves one logical "
                "primary: a Redis Cluster cannot be reached over REST")
    return f"{database.name} now reaches a standalone server ({address_of(client)})"


def adopted(keyspace, recorded, *, what="the job"):
    """{recorded address: node address} for a job resumed on `keyspace` whose progress is
    kept under the addresses `recorded`. A standalone server is one node whatever its
    address — the server's host:port over TCP, the REST endpoint's over Upstash's REST API,
    a new host name — so progress recorded under one other address is that node's, and the
    job renames it rather than starting that node again. Empty where nothing is to rename
    (nothing recorded, the same address, or a cluster: its addresses are its nodes' own, and
    `Keyspace.check` tells a slot that moved). ResumeRefused where `what` was recorded on
    several primaries (a Redis Cluster) and `keyspace` is one server."""
    recorded = sorted(set(recorded))
    if keyspace.is_cluster or not recorded:
        return {}
    (node,) = keyspace.nodes
    if len(recorded) == 1:
        return {} if recorded[0] == node.address else {recorded[0]: node.address}
    raise ResumeRefused(f"{what} was recorded on {len(recorded)} primaries of a Redis Cluster "
                        f"({', '.join(recorded)}), but {_reached(keyspace.database, keyspace.base)}. Its progress "
                        "cannot continue there.")


class Keyspace:
    """The primaries of one database for one job (see the module docstring)."""

    def __init__(self, database, base, layout=None):
        self.database, self.base, self.layout = database, base, layout
        self.is_cluster = layout is not None
        self._fresh = layout  # the slot map read on opening: the first check starts from it
        self.spent = {}
        if layout is None:
            self.nodes = (Node(address_of(base), base),)
        else:
            owners = layout.owners
            self.nodes = tuple(Node(address, direct_client(base, address), declares_keys=False,
                                    tag=tag_for(owners[address])) for address in layout.addresses)
        self._by_address = {node.address: node for node in self.nodes}

    opened = {}

    def take(self, node, command):
        """The reply of `command` sent ahead to `node` on opening (`primaries(ahead=…)`), or
        None when it was not sent there: the caller then sends it itself, and counts it
        either way. A reply not taken is billed to the keyspace by `drain`."""
        if node.address != address_of(self.base) or command not in self.opened:
            return None
        return self.opened.pop(command)

    def node(self, address):
        """The Node at `address`, or None when it serves no slot now."""
        return self._by_address.get(address)

    def owner(self, key):
        """The Node serving `key` (the only one on a standalone server; None where no
        primary serves its slot)."""
        if not self.is_cluster:
            return self.nodes[0]
        return self._by_address.get(self.layout.owner(key))

    def cost(self, address):
        """The Cost of what the keyspace itself sent to `address` (CLUSTER NODES)."""
        return self.spent.setdefault(address, Cost())

    def drain(self):
        """{address: Cost} spent since the last drain, and reset: for the job to bill. A
        command sent ahead on opening and not taken was executed all the same: it is here."""
        for _command, reply in self.opened.items():
            executed = not (isinstance(reply, redis_errors.ResponseError) and _refused(reply))
            self.cost(address_of(self.base)).add(sent=1, billed=1 if executed else 0)
        self.opened = {}
        spent, self.spent = self.spent, {}
        return spent

    def check(self, since=None, *, silent=None):
        """On a cluster: the current SlotMap after asking every primary's `CLUSTER NODES`
        (each billed to its node), or SlotsMoved when a slot is being migrated now, when a
        slot changed owner since the owners `since` ({address: [[first, last], …]}), or
        when some slots are served by nobody. Nothing is sent to a standalone server. The
        first check starts from the slot map read on opening (the URL's node is not asked
        twice). `silent`: a list that collects the primaries that did not answer, instead of
        raising their connection error (a review reads the others and ends partial)."""
        if not self.is_cluster:
            return None
        here = address_of(self.base)
        layout, self._fresh = self._fresh, None
        if layout is None:
            try:
                layout = cluster.slot_map(self.base)
            finally:
                self.cost(here).add(sent=1, billed=1)
        moving = set(layout.moving)
        for address in layout.addresses:
            if address == here:
                continue
            try:
                moving.update(cluster.slot_map(direct_client(self.base, address)).moving)
            except cluster.NODE_ERRORS as exc:
                if silent is None:
                    raise unreachable(self.database, address, exc) from exc
                silent.append(address)
                continue
            self.cost(address).add(sent=1, billed=1)
        name = self.database.name
        if moving:
            slot, source, target = sorted(moving)[0]
            more = f" (and {len(moving) - 1} more)" if len(moving) > 1 else ""
            raise SlotsMoved(f"slot {slot} is migrating from {source} to {target}{more}", sorted(moving))
        if layout.slots_covered < cluster.SLOTS:
            raise SlotsMoved(f"the primaries of {name} serve {layout.slots_covered:,} of {cluster.SLOTS:,} slots")
        if since is not None and layout.owners != since:
            moved = cluster.moved_slots(cluster.SlotMap.from_owners(since), layout)
            if moved:
                slot, source, target = moved[0]
                more = f" (and {len(moved) - 1} more slots)" if len(moved) > 1 else ""
                raise SlotsMoved(f"slot {slot} moved from {source} to {target or 'no node'}{more}", moved)
            raise SlotsMoved(f"the primaries of {name} changed ({', '.join(sorted(since))} → "
                             f"{', '.join(layout.addresses)})")
        return layout


def node_at(database, address, slots, *, write=False):
    """The Node of a job's part planned on `address`, serving `slots` ([[first, last], …] on
    a cluster; none on a standalone server), without reading the slot map again. A part
    planned on a standalone server is its one node, whatever address it was planned on (see
    `adopted`); a cluster's part where the record now reaches Upstash's REST API is refused
    (ResumeRefused): REST serves one logical primary."""
    base = client_for(database, write=write)
    if not slots:
        return Node(address_of(base), base)
    if is_rest(base):
        raise ResumeRefused(f"The part of {address} (a primary of a Redis Cluster) cannot be read: "
                            f"{_reached(database, base)}.")
    return Node(address, direct_client(base, address), declares_keys=False, tag=tag_for(slots))


@contextlib.contextmanager
def primaries(database, *, write=False, ahead=()):
    """The `Keyspace` of `database` for one job: one node for a standalone server; for a
    Redis Cluster, one per primary serving slots (one CLUSTER NODES, billed to the URL's
    node in `spent`). ClusterModeMismatch when the record contradicts the server.

    `ahead`: commands the job sends first to the URL's node (DBSIZE), sent in the same round
    trip as the probe that tells a cluster from a standalone server when this client has not
    asked yet; their replies are in `Keyspace.opened` ({command: reply or error}; empty when
    not sent). Each is the job's to count (`Keyspace.take`)."""
    base = client_for(database, write=write)
    opened = cluster.probe(base, ahead)
    layout = None
    if cluster.mode_of(database, base) == cluster.CLUSTER:
        try:
            layout = cluster.slot_map(base)
        finally:
            spent = {address_of(base): Cost(sent=1, billed=1)}
    else:
        spent = {}
    keyspace = Keyspace(database, base, layout)
    keyspace.spent.update(spent)
    keyspace.opened = opened
    yield keyspace
