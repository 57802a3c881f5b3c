"""What the keyspace watch reads of each primary once a minute: its keys, whether it
restarted, and whether it keeps its keys on disk.

Per primary (`nodes.primaries`: one for a standalone server, each primary of a Redis
Cluster): one INFO (`db<n>:keys` is DBSIZE and `expires` the keys with a TTL;
`uptime_in_seconds` and `run_id` say whether the process restarted,
`rdb_last_load_keys_loaded` how many keys it read back from disk, `aof_enabled`) and, where
the server allows it, `CONFIG GET save` (RDB snapshots on or off). DBSIZE itself only where
INFO does not list the database (it is empty, or INFO is refused). INFO and CONFIG are free
on Upstash (which refuses CONFIG: persistence is then "not said"), so a look costs no billed
command there but DBSIZE on an empty database; on a Redis Cluster, one CLUSTER NODES.

A primary that does not answer is asked once more on a new connection (the connection of
a Redis that restarted since the last look is dead; that is not an outage), then reported
with its error; the others are still read.
"""

from dataclasses import dataclass

import redis

from continuity.keyspace import capabilities
from continuity.keyspace.cluster import NODE_ERRORS
from continuity.keyspace.connection import dbsize, describe_error
from continuity.keyspace.nodes import primaries

OFF, UNKNOWN = "off", ""  # persistence: "rdb", "aof", "rdb+aof", OFF, or UNKNOWN where the server will not say


@dataclass(frozen=True)
class NodeState:
    """One primary at one look. Figures are None where the server refused to say."""

    address: str
    keys: int | None = None  # DBSIZE
    keys_with_ttl: int | None = None
    uptime: int | None = None
    run_id: str = ""
    persistence: str = UNKNOWN
    loaded_keys: int | None = None  # rdb_last_load_keys_loaded: keys read back at the last start
    error: str = ""  # the primary did not answer

    @property
    def ok(self):
        return not self.error

    def to_json(self):
        return {"keys": self.keys, "keys_with_ttl": self.keys_with_ttl, "uptime": self.uptime, "run_id": self.run_id,
                "persistence": self.persistence, "loaded_keys": self.loaded_keys, "error": self.error}

    @classmethod
    def from_json(cls, address, data):
        return cls(address=address, **data)


def _persistence(client, info):
    """'rdb', 'aof', 'rdb+aof' or OFF from CONFIG GET save and INFO's aof_enabled; UNKNOWN
    unless both answered (a hosted Redis refuses CONFIG: it says nothing about its disks)."""
    caps = capabilities.of(client)
    save = None
    if caps.config is not False:
        try:
            save = client.config_get("save").get("save")
            caps.config = True
        except redis.ResponseError as exc:
            if not capabilities.refused(exc):
                raise
            caps.config = False
    aof = info.get("aof_enabled")
    if save is None or aof is None:
        return UNKNOWN
    kinds = [kind for kind, on in (("rdb", bool(str(save).strip())), ("aof", str(aof) == "1")) if on]
    return "+".join(kinds) or OFF


def _read(address, client):
    try:
        info = client.info()
    except redis.ResponseError as exc:
        if not capabilities.refused(exc):
            raise
        info = {}
    index = int(client.get_connection_kwargs().get("db") or 0)
    section = info.get(f"db{index}")
    if section:  # INFO's keys= is DBSIZE, and INFO is free on Upstash
        size, expires = int(section.get("keys", 0)), int(section.get("expires", 0))
    else:  # an empty database (INFO omits it), or INFO refused or silent about it: ask DBSIZE
        size = dbsize(client)
        expires = 0 if info and size == 0 else None
    uptime, loaded = info.get("uptime_in_seconds"), info.get("rdb_last_load_keys_loaded")
    return NodeState(address=address, keys=size, keys_with_ttl=None if expires is None else int(expires),
                     uptime=None if uptime is None else int(uptime), run_id=str(info.get("run_id") or ""),
                     persistence=_persistence(client, info), loaded_keys=None if loaded is None else int(loaded))


def node_state(node):
    """The NodeState of one primary (`nodes.Node`), asked twice before it is called unreachable."""
    for attempt in (1, 2):
        try:
            return _read(node.address, node.client)
        except NODE_ERRORS as exc:
            if attempt == 2:
                return NodeState(address=node.address, error=describe_error(exc))


def read_states(database):
    """[NodeState] of every primary of `database`, in address order. Raises the keyspace's
    own errors (a record that is misconfigured, a URL node that cannot say which primaries
    there are; a URL node that does not answer twice)."""
    for attempt in (1, 2):
        try:
            with primaries(database) as keyspace:
                return sorted((node_state(node) for node in keyspace.nodes), key=lambda state: state.address)
        except NODE_ERRORS:
            if attempt == 2:
                raise
