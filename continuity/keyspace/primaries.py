"""Reading keys across the primaries of a Redis Cluster: the key browser's composite
cursor, per-node metadata, lookups routed by slot, and the keyed client of the key detail
page. The slot map they work from is `cluster.slot_map` (shared with reviews and purges).

A client on the URL's node sees that node's keys only, so:

- Enumeration (the browser, the overview's sample) SCANs each primary that serves slots
  through its own direct client (`direct_client`: the URL's credentials, TLS and timeouts,
  kept across requests), in the order of their addresses. The browser's continuation is a composite
  cursor naming the primary reached and that primary's SCAN cursor, signed with the
  dashboard's SECRET_KEY (it travels in links and forms; a cursor that was altered could
  otherwise skip a primary without a word) and bound to the database, the scan's MATCH
  and TYPE, and the slot map it was issued under. If the primaries or their slots changed
  since, continuing could skip keys (a slot moved from a primary not yet scanned to one
  already scanned), so it is refused with `StaleCursor` and the operator restarts.
- Metadata of a node's keys: one pipeline on that node (`meta.node_metadata` says why a
  pipeline is cheaper than a script per slot group on Upstash).
- Lookups by id: each candidate's slot (`redis.crc.key_slot`), its owner from `CLUSTER
  NODES`, one pipeline per owner; a key answering MOVED/ASK (its slot moved since the map
  was read) is asked once more through redis-py's RedisCluster, which follows the
  redirection; what still fails is reported per key, never as "absent".
- Single-key reads and writes (preview, download, actions): `keyed_client` gives redis-py's
  RedisCluster on a cluster (it routes by slot and follows MOVED/ASK), the plain client on
  a standalone server.
"""

import hashlib
from dataclasses import dataclass

import redis
from django.core import signing
from redis.crc import key_slot

from continuity.keyspace import cluster
from continuity.keyspace.cluster import NODE_ERRORS
from continuity.keyspace.connection import (
    KeyspaceError,
    dbsize,
    ServerSummary,
    client_for,
    cluster_client_for,
    describe_error,
)
from continuity.keyspace.connection import node_summary
from continuity.keyspace.meta import key_metadata, node_metadata
from continuity.keyspace.nodes import direct_client

REDIRECTS = (redis.exceptions.AskError,)  # MovedError is a subclass

_CURSOR_SALT = "continuity.keyspace.primaries.scan-cursor"
MAX_CURSOR_LENGTH = 4096
MAX_NODE_CURSOR = 2 ** 64 - 1


def keyed_client(database, *, write=False):
    """The client for commands on one key of `database`: redis-py's RedisCluster (routed
    by slot, MOVED/ASK followed) on a cluster, `client_for` on a standalone server."""
    client = client_for(database, write=write)
    return cluster_client_for(database, write=write) if is_cluster(database, client) else client


def is_cluster(database, client):
    return cluster.mode_of(database, client) == cluster.CLUSTER


# --- the composite cursor --------------------------------------------------------------------
class CursorError(KeyspaceError):
    """A scan cursor from a request cannot continue this scan (malformed, altered, issued
    for another scan or another kind of server). The message is safe to show and never
    repeats the cursor; no key was read with it."""


class StaleCursor(CursorError):
    """The cluster's primaries or their slots changed since the cursor was issued."""


MALFORMED = ("This scan cursor is malformed or was altered: it is not one the dashboard issued, so it cannot say "
             "which primaries were already scanned. No key was read; start the scan again.")


def scan_scope(pattern, type_):
    """What a cursor is bound to besides the database: the scan's MATCH and TYPE."""
    return hashlib.sha256(bytes(pattern) + b"\0" + (type_ or "").encode()).hexdigest()[:16]


def issue_cursor(database, scope, nodes, index, node_cursor):
    """The composite cursor continuing at primary `index` from its `node_cursor`, or 0
    when every primary is complete."""
    if index >= len(nodes.addresses):
        return 0
    payload = {"v": 1, "d": database.name, "q": scope, "p": _node_list(nodes), "s": nodes.fingerprint,
               "i": index, "c": int(node_cursor)}
    return "k" + signing.dumps(payload, salt=_CURSOR_SALT)


LISTED_ADDRESSES = 600  # characters: past this, a cursor names the primaries by a hash (links stay short)


def _node_list(nodes):
    """The primaries as a cursor records them: their addresses (so a refusal can say what
    changed), or a hash of them for a cluster whose addresses would make links too long."""
    if len(",".join(nodes.addresses)) <= LISTED_ADDRESSES:
        return list(nodes.addresses)
    return "#" + hashlib.sha256(",".join(nodes.addresses).encode()).hexdigest()[:16]


def read_cursor(database, scope, nodes, cursor):
    """(primary index, that primary's SCAN cursor) for `cursor` (0 or a composite cursor),
    or CursorError/StaleCursor saying why it cannot continue this scan."""
    if cursor in (0, "0", "", None):
        return 0, 0
    if isinstance(cursor, int):
        raise CursorError(f"This cursor is a single server's SCAN cursor, but {database.name} is a Redis Cluster: "
                          "a scan across its primaries continues only with the cursor the dashboard issued. "
                          "No key was read; start the scan again.")
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_LENGTH or not cursor.startswith("k"):
        raise CursorError(MALFORMED)
    try:
        payload = signing.loads(cursor[1:], salt=_CURSOR_SALT)
    except (signing.BadSignature, ValueError, TypeError, UnicodeError):
        raise CursorError(MALFORMED) from None
    if not _well_formed(payload):
        raise CursorError(MALFORMED)
    if payload["d"] != database.name or payload["q"] != scope:
        raise CursorError("This cursor belongs to another scan (another database, prefix, glob or type filter). "
                          "No key was read; start this scan again.")
    if payload["p"] != _node_list(nodes):
        listed = isinstance(payload["p"], list)
        then, now = ", ".join(payload["p"]) if listed else "", ", ".join(nodes.addresses) or "none"
        raise StaleCursor(f"The primaries of {database.name} changed since this scan started"
                          f"{f' (then: {then}; now: {now})' if listed else ''}. Continuing could skip keys or "
                          "show some twice, so no key was read; start the scan again.")
    if payload["s"] != nodes.fingerprint:
        raise StaleCursor(f"The slot assignment of {database.name}'s primaries changed since this scan started "
                          "(a resharding or a failover): keys may have moved between primaries, so continuing "
                          "could skip some. No key was read; start the scan again.")
    if payload["i"] >= len(nodes.addresses):
        raise CursorError(MALFORMED)
    return payload["i"], payload["c"]


def _well_formed(payload):
    def integer(value, low, high):
        return type(value) is int and low <= value <= high

    return (isinstance(payload, dict) and set(payload) == {"v", "d", "q", "p", "s", "i", "c"}
            and payload["v"] == 1 and isinstance(payload["d"], str) and isinstance(payload["q"], str)
            and isinstance(payload["s"], str)
            and (isinstance(payload["p"], str) or (isinstance(payload["p"], list)
                                                   and all(isinstance(a, str) for a in payload["p"])))
            and integer(payload["i"], 0, 100_000) and integer(payload["c"], 0, MAX_NODE_CURSOR))


# --- metadata and counts per node ------------------------------------------------------------
def node_unreachable(database, address, exc):
    return KeyspaceError(f"Primary {address} of {database.name} did not answer ({describe_error(exc)}).")


def metadata_by_node(database, client, keys_by_node):
    """[KeyMeta] for every key of `keys_by_node` ({address: [keys]}), one pipeline per
    primary (its `direct_client`). A key whose slot moved since its SCAN is read once more
    through RedisCluster (which follows MOVED/ASK). A primary that stops answering raises a
    KeyspaceError naming it."""
    metas = []
    for address, keys in keys_by_node.items():
        try:
            answers = node_metadata(direct_client(client, address), keys)
        except NODE_ERRORS as exc:
            raise node_unreachable(database, address, exc) from exc
        for key, answer in zip(keys, answers):
            if isinstance(answer, REDIRECTS):
                answer = key_metadata(keys=[key], client=cluster_client_for(database))[0]
            elif isinstance(answer, Exception):
                raise answer
            metas.append(answer)
    return metas


@dataclass(frozen=True)
class Count:
    """DBSIZE summed over the primaries. `total` is None unless every primary answered."""

    total: int | None
    partial: int
    refused: tuple = ()  # addresses that answered but refused DBSIZE
    unreachable: tuple = ()  # addresses that did not answer

    @property
    def note(self):
        parts = []
        if self.refused:
            parts.append(f"DBSIZE refused by {', '.join(self.refused)}")
        if self.unreachable:
            parts.append(f"no answer from {', '.join(self.unreachable)}")
        if not parts:
            return ""
        return f"Key count unknown: {'; '.join(parts)} (the primaries that answered hold {self.partial:,} keys)."


def count_keys(client, addresses, *, skip=()):
    """DBSIZE on each primary (one command each); `skip`: addresses known not to answer."""
    total, refused, unreachable = 0, [], list(skip)
    for address in addresses:
        if address in skip:
            continue
        try:
            size = dbsize(direct_client(client, address))
        except NODE_ERRORS:
            unreachable.append(address)
            continue
        if size is None:
            refused.append(address)
        else:
            total += size
    complete = not refused and not unreachable
    return Count(total=total if complete else None, partial=total, refused=tuple(refused),
                 unreachable=tuple(sorted(unreachable)))


def server_summary(database, *, client=None):
    """`connection.node_summary`, summed over the primaries on a cluster (DBSIZE and
    `INFO keyspace` of each, asked on its own client). A figure stays unknown (None) unless
    every primary gave it; `note` names the primaries that refused or did not answer."""
    client = client or client_for(database)
    if not is_cluster(database, client):
        return node_summary(database, client=client)
    nodes = cluster.slot_map(client)
    parts, silent = [], []
    for address in nodes.addresses:
        try:
            parts.append((address, node_summary(database, client=direct_client(client, address))))
        except NODE_ERRORS:
            silent.append(address)

    def total(name):
        values = [getattr(part, name) for _address, part in parts]
        return None if silent or not values or None in values else sum(values)

    refused = [address for address, part in parts if part.dbsize is None]
    note = "; ".join(filter(None, [
        f"no answer from {', '.join(silent)}" if silent else "",
        f"key counts refused by {', '.join(refused)}" if refused else ""]))
    versions = sorted({part.redis_version for _address, part in parts if part.redis_version})
    return ServerSummary(dbsize=total("dbsize"), keys_with_ttl=total("keys_with_ttl"),
                         redis_version=", ".join(versions) or None, used_memory=total("used_memory"),
                         primaries=len(nodes.addresses),
                         note=f"Sums over {len(nodes.addresses)} primaries, unknown where one is missing: {note}."
                         if note else "")


# --- lookups by slot -------------------------------------------------------------------------
def read_by_slot(database, client, keys, *, nodes=None):
    """{key: KeyMeta or an operator-facing reason it could not be read} for `keys`, each
    asked on the primary owning its slot (one pipeline per primary, no SCAN). `nodes`: a
    slot map already read (else one CLUSTER NODES)."""
    nodes = nodes or cluster.slot_map(client)
    groups, out = {}, {}
    for key in keys:
        owner = nodes.owner(key)
        if owner is None:
            out[key] = f"slot {key_slot(key)} is served by no primary (the cluster is not covering every slot)."
        else:
            groups.setdefault(owner, []).append(key)
    for address, group in groups.items():
        try:
            answers = node_metadata(direct_client(client, address), group)
        except NODE_ERRORS as exc:
            for key in group:
                out[key] = f"primary {address} did not answer ({describe_error(exc)})"
            continue
        for key, answer in zip(group, answers):
            if isinstance(answer, REDIRECTS):  # the slot moved since the map was read: follow once
                try:
                    answer = key_metadata(keys=[key], client=cluster_client_for(database))[0]
                except (redis.RedisError, KeyspaceError) as exc:
                    answer = f"slot {key_slot(key)} moved and its new owner did not answer ({describe_error(exc)})"
            elif isinstance(answer, Exception):
                answer = f"primary {address} refused to read it ({describe_error(answer)})"
            out[key] = answer
    return out

