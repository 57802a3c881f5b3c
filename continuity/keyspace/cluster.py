"""Redis Cluster: is a monitored database one, what are its nodes and who serves which slot.

A client made from a URL naming one node of a cluster talks to that node only: a SCAN
there sees that node's keys and nothing else, and nothing in the replies says so. Jobs
therefore work node by node (`keyspace.nodes.primaries`), and so do the key browser,
lookups, key pages and the overview (`keyspace.primaries`).

Detection: `INFO cluster` (`cluster_enabled:1`; INFO is free on Upstash), asked once per
client and kept on it (`capabilities.of(client).cluster`); a REST client (Upstash's REST API,
one logical primary) says STANDALONE itself. Where INFO is refused,
`CLUSTER MYID` decides (standalone servers answer "cluster support disabled"); where both
are refused the answer is "unknown" and the record's declared mode decides.

Topology: `CLUSTER NODES` from the node the URL names (one command, any Redis since 3.0),
then DBSIZE on each node through a direct client made from the same connection settings
(credentials, TLS, timeouts). A node that does not answer is shown unreachable: the
topology never raises for one node.

Slot map: `slot_map` reads one `CLUSTER NODES` into a `SlotMap` (the primaries serving
slots, their ranges, each slot's owner, a fingerprint, the slots being migrated);
`moved_slots` compares two maps. Reviews, purges and the key browser all use it, and
`NODE_ERRORS` is the one definition of "a node did not answer".
"""

import dataclasses
import hashlib
import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis
from redis.crc import key_slot

from continuity.keyspace import capabilities
from continuity.keyspace.connection import KeyspaceError, client_for, describe_error

AUTO, STANDALONE, CLUSTER, UNKNOWN = "auto", "standalone", "cluster", "unknown"
SLOTS = 16384
NODE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)  # a node that did not answer

_DISABLED = "cluster support disabled"


class ClusterRefusal(KeyspaceError):
    """The database's cluster mode stops this operation before it reads a key. Not a
    passing failure: retrying changes nothing until the record or the server changes."""


class ClusterModeMismatch(ClusterRefusal):
    """The record declares a cluster mode that the server contradicts."""


def detect(client):
    """CLUSTER, STANDALONE or UNKNOWN for the server behind `client`, asked once per client.
    Connection failures propagate (nothing is cached then)."""
    caps = capabilities.of(client)
    if caps.cluster is None:
        caps.cluster = getattr(client, "topology", None) or _ask(client)  # a REST client knows its own
    return caps.cluster


def probe(client, ahead=()):
    """`detect`, with `ahead` (commands for the URL's node) in the same round trip when the
    answer is not known yet: {command: its reply or error} of those sent (none when the
    answer was known, or INFO was refused and CLUSTER MYID decided: the caller sends them)."""
    caps = capabilities.of(client)
    # A client that knows its own topology (REST) asks nothing: INFO cluster would only ride
    # along, and an endpoint that refuses it would cost the fallback's round trips in `_ask`.
    if caps.cluster is not None or not ahead or getattr(client, "topology", None):
        detect(client)
        return {}
    pipe = client.pipeline(transaction=False)
    pipe.info("cluster")
    for command in ahead:
        pipe.execute_command(*command)
    info, *replies = pipe.execute(raise_on_error=False)
    if isinstance(info, redis.ResponseError):
        caps.cluster = _ask(client)
    elif isinstance(info, Exception):
        raise info
    else:
        caps.cluster = CLUSTER if str(info.get("cluster_enabled", 0)) == "1" else STANDALONE
    return dict(zip(ahead, replies))


def _ask(client):
    """Any error reply (an ACL, a provider without the section or the command) means "cannot
    tell" rather than a failure: a server that cannot say keeps working as it does today."""
    try:
        info = client.info("cluster")
    except redis.ResponseError:
        pass
    else:
        return CLUSTER if str(info.get("cluster_enabled", 0)) == "1" else STANDALONE
    try:
        client.execute_command("CLUSTER", "MYID")
    except redis.ResponseError as exc:
        return STANDALONE if _DISABLED in str(exc).lower() else UNKNOWN
    return CLUSTER


def declared_mode(database):
    return getattr(database, "cluster_mode", AUTO) or AUTO


def mode_of(database, client=None):
    """CLUSTER or STANDALONE: what the server says, or the record's declared mode where the
    server cannot say. ClusterModeMismatch when a declared mode contradicts the server."""
    client = client or client_for(database)
    declared, detected = declared_mode(database), detect(client)
    if detected == UNKNOWN:
        return CLUSTER if declared == CLUSTER else STANDALONE
    if declared in (STANDALONE, CLUSTER) and declared != detected:
        said = "cluster_enabled:1" if detected == CLUSTER else "cluster support disabled"
        raise ClusterModeMismatch(
            f"{database.name} is marked {declared} on its record, but the server reports {said}. "
            f"Correct the record's cluster mode (or set it to detect) before using it; nothing was read.")
    return detected


@dataclass(frozen=True)
class ClusterNode:
    """One node as `CLUSTER NODES` lists it, with its own DBSIZE when it answered us."""

    node_id: str
    address: str  # host:port, as the cluster announces it
    role: str  # "primary" or "replica"
    slots: tuple = ()  # ((first, last), …) inclusive ranges
    flags: tuple = ()
    primary_id: str = ""  # a replica's primary
    reachable: bool = False
    keys: int | None = None  # DBSIZE; None when unreachable or refused
    error: str = ""

    @property
    def slot_count(self):
        return sum(last - first + 1 for first, last in self.slots)

    @property
    def slot_ranges(self):
        return ", ".join(str(first) if first == last else f"{first}-{last}" for first, last in self.slots)

    @property
    def cluster_flag(self):
        """"fail" (agreed by the primaries), "fail?" (suspected by the node asked) or ""."""
        return "fail" if "fail" in self.flags else "fail?" if "fail?" in self.flags else ""

    @property
    def cluster_says_failing(self):
        return bool(self.cluster_flag)


@dataclass(frozen=True)
class Topology:
    """STANDALONE (no nodes) or CLUSTER with every node `CLUSTER NODES` listed."""

    mode: str
    declared: str = AUTO
    nodes: tuple = field(default_factory=tuple)

    @property
    def is_cluster(self):
        return self.mode == CLUSTER

    @property
    def primaries(self):
        return [node for node in self.nodes if node.role == "primary"]

    @property
    def slots_covered(self):
        return sum(node.slot_count for node in self.primaries)

    @property
    def unreachable(self):
        return [node for node in self.nodes if not node.reachable]

    @property
    def keys(self):
        """Keys over all primaries, or None when a primary's count is missing."""
        counts = [node.keys for node in self.primaries]
        return None if None in counts else sum(counts)


def parse_nodes(text):
    """[ClusterNode] (not yet contacted) from a `CLUSTER NODES` reply, primaries first."""
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        node_id, address, flags, primary = parts[0], parts[1], tuple(parts[2].split(",")), parts[3]
        host_port = address.split("@", 1)[0]
        if "noaddr" in flags or host_port.startswith(":"):
            host_port = ""
        slots = []
        for token in parts[8:]:
            if token.startswith("["):  # a slot being migrated or imported: still its owner's
                continue
            first, _, last = token.partition("-")
            slots.append((int(first), int(last or first)))
        role = "replica" if "slave" in flags else "primary"
        nodes.append(ClusterNode(node_id=node_id, address=host_port, role=role, slots=tuple(sorted(slots)),
                                 flags=flags, primary_id="" if primary == "-" else primary))
    nodes.sort(key=lambda n: (n.role != "primary", n.slots[0] if n.slots else (SLOTS, SLOTS), n.address))
    return nodes


def _nodes_text(client):
    reply = client.execute_command("CLUSTER", "NODES")
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def cluster_nodes(client):
    """The parsed `CLUSTER NODES` of the node behind `client` (one command)."""
    return parse_nodes(_nodes_text(client))


def node_client(client, address):
    """A client on `address` ("host:port") with `client`'s credentials, TLS and timeouts."""
    host, _, port = address.rpartition(":")
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "host": host.strip("[]"), "port": int(port), "db": 0}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def _count(client, node):
    if not node.address:
        return dataclasses.replace(node, error="The cluster lists no address for this node.")
    direct = node_client(client, node.address)
    try:
        keys = direct.dbsize()
    except redis.ResponseError as exc:  # answered, but DBSIZE refused (ACL)
        return dataclasses.replace(node, reachable=True, error=describe_error(exc))
    except (redis.RedisError, OSError) as exc:
        return dataclasses.replace(node, error=describe_error(exc))
    finally:
        direct.close()
        direct.connection_pool.disconnect()
    return dataclasses.replace(node, reachable=True, keys=keys)


def topology(database, *, client=None):
    """The Topology of `database`. Standalone: no node list. Cluster: every node with its
    slots, role, DBSIZE and whether it answered, asked in parallel, so a page waits about one
    connect timeout for any number of dead nodes. Raises only when the node the URL names
    fails (or the record's mode is contradicted): a caller shows that in its region."""
    client = client or client_for(database)
    mode = mode_of(database, client)
    if mode == STANDALONE:
        return Topology(mode=STANDALONE, declared=declared_mode(database))
    nodes = cluster_nodes(client)
    counted = [None] * len(nodes)

    def count(index):
        counted[index] = _count(client, nodes[index])

    threads = [threading.Thread(target=count, args=(i,), daemon=True) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Topology(mode=CLUSTER, declared=declared_mode(database), nodes=tuple(counted))


@dataclass(frozen=True)
class SlotMap:
    """Who serves which slots, as one `CLUSTER NODES` reply says: the one reading of the
    slot map that the browser, reviews and purges share.

    `addresses`: host:port of the primaries serving slots, sorted (a primary the cluster
    lists without an address serves nobody here: no client could reach it). `ranges`:
    ((first, last, address), …) sorted by first slot. `moving`: ((slot, source, target), …)
    for slots in the middle of a migration (MIGRATING on the source, IMPORTING on the
    target; a node lists only its own). `node_ids`: {address: node id}."""

    addresses: tuple = ()
    ranges: tuple = ()
    moving: tuple = ()
    node_ids: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_owners(cls, owners):
        """The map of a stored {address: [[first, last], …]} (`owners`)."""
        ranges = sorted((first, last, address) for address, pairs in owners.items() for first, last in pairs)
        return cls(addresses=tuple(sorted(address for address, pairs in owners.items() if pairs)),
                   ranges=tuple(ranges))

    @property
    def owners(self):
        """{address: [[first, last], …]}, by address: the shape stored on `PurgeRun.node_layout`
        and (one address's list) on `ReviewNodeRun.slots`."""
        out = {address: [] for address in self.addresses}
        for first, last, address in self.ranges:
            out.setdefault(address, []).append([first, last])
        return out

    @property
    def slots_covered(self):
        return sum(last - first + 1 for first, last, _address in self.ranges)

    @property
    def fingerprint(self):
        """A short hash of the slot map: equal exactly when every slot has the same owner."""
        text = ";".join(f"{first}-{last}={address}" for first, last, address in self.ranges)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @cached_property
    def _table(self):
        table = [None] * SLOTS
        for first, last, address in self.ranges:
            table[first:last + 1] = [address] * (last - first + 1)
        return table

    def owner_of(self, slot):
        """The address serving `slot`, or None where no primary serves it."""
        return self._table[slot]

    def owner(self, key):
        """The address serving `key`'s slot, or None where no primary serves it."""
        return self._table[key_slot(key)]


def moved_slots(before, after):
    """[(slot, owner in `before`, owner in `after`)] for every slot whose owner differs
    between two SlotMaps (None: served by no primary), in slot order."""
    return [(slot, old, new) for slot, (old, new) in enumerate(zip(before._table, after._table)) if old != new]


def _moving(text, addresses):
    """The (slot, source, target) migrations a `CLUSTER NODES` reply lists; `addresses`
    {node id: host:port} names the other end."""
    moving = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        here = parts[1].split("@", 1)[0]
        for token in parts[8:]:
            if not token.startswith("["):
                continue
            body = token.strip("[]")
            if "->-" in body:  # [slot->-target id]: this node is migrating the slot away
                slot, other = body.split("->-", 1)
                moving.add((int(slot), here, addresses.get(other, other)))
            elif "-<-" in body:  # [slot-<-source id]: this node is importing it
                slot, other = body.split("-<-", 1)
                moving.add((int(slot), addresses.get(other, other), here))
    return tuple(sorted(moving))


def parse_slot_map(text):
    """The SlotMap of a `CLUSTER NODES` reply."""
    nodes = parse_nodes(text)
    serving = [node for node in nodes if node.role == "primary" and node.slots and node.address]
    ranges = sorted((first, last, node.address) for node in serving for first, last in node.slots)
    return SlotMap(addresses=tuple(sorted(node.address for node in serving)), ranges=tuple(ranges),
                   moving=_moving(text, {node.node_id: node.address for node in nodes}),
                   node_ids={node.address: node.node_id for node in serving})


def slot_map(client):
    """The SlotMap of the cluster as the node behind `client` sees it (one CLUSTER NODES)."""
    return parse_slot_map(_nodes_text(client))
