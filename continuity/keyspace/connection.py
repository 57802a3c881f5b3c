"""Connections to monitored Redis databases: URLs read from the environment at connect
time, explicit timeouts, no silent retries, verified TLS for rediss://.

Two transports, one client interface (redis-py's `Redis`): TCP (the record's URL variable,
e.g. REDIS_URL) and Upstash's REST API (`rest.RestClient`, the record's REST URL and token
variables, e.g. UPSTASH_REDIS_REST_URL / UPSTASH_REDIS_REST_TOKEN), used when the URL
variable is unset or empty. `connection_target` decides; nothing above this layer asks."""

import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import redis
from django.conf import settings
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from continuity.keyspace import rest
from dashboard.env import (
    redis_target,
    redis_url_env_problem,
    rest_token_env_problem,
    rest_url_env_problem,
)


class KeyspaceError(Exception):
    """Redis could not answer. The message is safe to show an operator (no secrets)."""


class NotConfigured(KeyspaceError):
    pass


class ClusterOverRest(NotConfigured):
    """A record declared a Redis Cluster but is reached over REST (one logical primary)."""


class Misconfigured(NotConfigured):
    """The record names a variable that cannot hold its Redis URL. Shown as
    "misconfigured: why" on the record's own pages and in /healthz."""


@dataclass(frozen=True)
class Health:
    ok: bool
    latency_ms: float | None
    error: str = ""
    misconfigured: bool = False
    checked_at: datetime | None = None  # when the ping was sent (`cached_ping` may answer an older one)


@dataclass(frozen=True)
class Target:
    """Where a client connects: "tcp" with a Redis URL, or "rest" with a REST URL and token."""

    kind: str
    url: str
    token: str = field(default="", repr=False)


_clients: dict[tuple, redis.Redis] = {}
# Where `primaries.direct_client` keeps a cluster node's direct clients on the URL's client.
NODE_CLIENTS_ATTRIBUTE = "_continuity_node_clients"
_cluster_clients: dict[str, "KeyRouter"] = {}
_clients_lock = threading.Lock()


def rest_pair(database):
    """(REST URL, token) of `database` from its REST variables, or None where the record names
    none or either is unset. Misconfigured where a name or value cannot be one."""
    url_name, token_name = getattr(database, "rest_url_env", ""), getattr(database, "rest_token_env", "")
    if not (url_name or token_name):
        return None
    problems = [problem for problem in (rest_url_env_problem(url_name) if url_name else "",
                                        rest_token_env_problem(token_name) if token_name else "") if problem]
    if problems:
        raise Misconfigured(f"misconfigured: {'; '.join(problems)}.")
    url, token = os.environ.get(url_name, "") if url_name else "", os.environ.get(token_name, "") if token_name else ""
    return (url, token) if url and token else None


def connection_target(database, *, write=False):
    """The `Target` for `database`: its URL variable (the read-only one for browsing when
    configured) over TCP; where the URL variable is unset or empty, its REST pair. The
    values come from the environment now, never from Postgres."""
    name = database.url_env if (write or not database.readonly_url_env) else database.readonly_url_env
    problem = redis_url_env_problem(name)
    if problem:
        raise Misconfigured(f"misconfigured: {problem}.")
    url = os.environ.get(name, "")
    if url:
        target = redis_target(url)
        if target in (redis_target(settings.CELERY_BROKER_URL), redis_target(settings.CACHE_URL)):
            raise NotConfigured(
                f"{name} points at the dashboard's own Celery broker or cache database; "
                "refusing to treat it as a monitored keyspace."
            )
        return Target("tcp", url)
    pair = rest_pair(database) if name == database.url_env else None
    if pair:
        return Target("rest", *pair)
    rest_names = [n for n in (getattr(database, "rest_url_env", ""), getattr(database, "rest_token_env", "")) if n]
    also = f" (nor the REST pair {' and '.join(rest_names)})" if rest_names and name == database.url_env else ""
    raise NotConfigured(f"The environment variable {name} is not set{also}, so {database.name} cannot be reached.")


def connection_url(database, *, write=False):
    """The URL `database`'s client connects to (a Redis URL, or the REST endpoint's URL)."""
    return connection_target(database, write=write).url


def client_options(url, *, retries=0):
    """Connection settings for a client on `url`: explicit timeouts, verified TLS for
    rediss://, and no silent retries unless asked. A new connection sends only what is not
    billed (AUTH, HELLO, SELECT): no CLIENT SETNAME and no CLIENT SETINFO, which Upstash
    bills like any command and which no job could count; and no CLIENT MAINT_NOTIFICATIONS
    (redis-py 8 asks for Redis Cloud's maintenance notices on every new connection: a billed
    command and a round trip of its own, for a feature these servers do not have)."""
    options = {
        "socket_connect_timeout": settings.REDIS_CONNECT_TIMEOUT,
        "socket_timeout": settings.REDIS_READ_TIMEOUT,
        "retry": Retry(NoBackoff(), retries),
        "retry_on_timeout": False,
        "health_check_interval": 30,
        "driver_info": None,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if url.startswith("rediss://"):
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if settings.REDIS_CA_FILE:
            options["ssl_ca_certs"] = settings.REDIS_CA_FILE
    return options


def make_client(url, *, retries=0):
    """A client with `client_options`: the store adapter asks for one retry, so a
    connection that died with a Redis restart is replaced instead of failing the next
    (idempotent) write."""
    return redis.Redis.from_url(url, **client_options(url, retries=retries))


def make_rest_client(url, token, *, retries=0):
    """A REST client (`rest.RestClient`) with the same timeouts as `make_client`."""
    return rest.RestClient(url, token, connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
                           read_timeout=settings.REDIS_READ_TIMEOUT, retries=retries)


def new_client(database, *, write=False, retries=0):
    """A client of its own (not kept) on `database`, over whichever transport it is configured for."""
    target = connection_target(database, write=write)
    if target.kind == "rest":
        return make_rest_client(target.url, target.token, retries=retries)
    return make_client(target.url, retries=retries)


def client_for(database, *, write=False):
    """The kept client on `database` (one per target: a Redis URL, or a REST URL and token)."""
    target = connection_target(database, write=write)
    key = (target.kind, target.url, target.token)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = (make_rest_client(target.url, target.token) if target.kind == "rest"
                                      else make_client(target.url))
    return client


def is_rest(client):
    """True for a client on Upstash's REST API."""
    return getattr(client, "transport", "") == "rest"


class KeyRouter(redis.RedisCluster):
    """redis-py's RedisCluster, for commands on one key, with three changes for a cluster
    where some primary may be down:

    - Its default node (where keyless commands go, e.g. COMMAND while it starts) is the
      node the URL names, where the dashboard also reads CLUSTER NODES; redis-py would take
      the primary of slot 0, and a random primary after any connection error, so a dead
      primary elsewhere could fail a healthy key's page.
    - EVALSHA_RO / EVAL_RO are routed by their KEYS, the way redis-py routes EVALSHA/EVAL
      (it would otherwise ask COMMAND GETKEYS of its default node, a random primary after
      any connection error: a dead one fails a key that lives on a healthy node).
    - SCRIPT LOAD goes to every primary that answers: a script is needed only on the node
      of the key at hand, so one unreachable primary elsewhere does not fail the call.
    """

    _BY_KEYS = ("EVALSHA_RO", "EVAL_RO")

    def get_default_node(self):
        for node in getattr(self, "startup_nodes", None) or ():
            known = self.nodes_manager.nodes_cache.get(node.name)
            if known is not None:
                return known
        return super().get_default_node()

    def determine_slot(self, *args):
        command = str(args[0]).upper()
        if command in self._BY_KEYS and len(args) > 3 and int(args[2]) > 0:
            slots = {self.keyslot(key) for key in args[3:3 + int(args[2])]}
            if len(slots) == 1:
                return slots.pop()
            raise redis.exceptions.RedisClusterException(f"{command}: all keys must map to the same key slot")
        return super().determine_slot(*args)

    def script_load(self, script):
        sha, failure = None, None
        for node in self.get_primaries():
            try:
                sha = self.execute_command("SCRIPT LOAD", script, target_nodes=node)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failure = exc
        if sha is None:
            raise failure or redis.ConnectionError("no primary answered SCRIPT LOAD")
        return sha


def cluster_client_for(database, *, write=False):
    """redis-py's RedisCluster (`KeyRouter`) on `database`'s URL (any node of the cluster),
    with the same credentials, TLS and timeouts as `client_for`: it routes each keyed command to the
    node owning the key's slot and follows MOVED/ASK. Kept per URL, like `client_for`
    (its slot map and command table are read once, not per request)."""
    target = connection_target(database, write=write)
    if target.kind == "rest":
        raise ClusterOverRest(f"{database.name} is reached by its REST API, which serves one logical primary (no "
                              "CLUSTER commands): it cannot be a Redis Cluster. Set its cluster mode to detect.")
    url = target.url
    with _clients_lock:
        client = _cluster_clients.get(url)
        if client is None:
            client = _cluster_clients[url] = KeyRouter.from_url(url, **client_options(url))
    return client


def forget_clients():
    """Close and drop cached clients (after changing timeouts or URLs, e.g. in tests)."""
    with _clients_lock:
        for client in [*_clients.values(), *_cluster_clients.values()]:
            for direct in getattr(client, NODE_CLIENTS_ATTRIBUTE, {}).values():
                direct.close()
                direct.connection_pool.disconnect()
            client.close()
        _clients.clear()
        _cluster_clients.clear()


# Upstash answers these when a plan's request or bandwidth limit is reached.
_QUOTA_MARKERS = ("max daily request limit", "max requests limit", "max monthly request limit",
                  "max bandwidth limit", "max concurrent connections", "quota")


def is_quota_error(exc):
    return isinstance(exc, redis.ResponseError) and any(m in str(exc).lower() for m in _QUOTA_MARKERS)


# Failures an operator-facing page catches and shows in its region instead of a 500.
FAILURES = (redis.RedisError, KeyspaceError)


ACL_DOC = "See docs/redis-acl.md for the ACL lines of a browse/review user and of a purge user."

_READ_SCRIPTS = "reviews and the key browser run read-only scripts: +evalsha_ro +eval_ro +script|load"
_WRITE_SCRIPT = "a purge acts with a script that writes: the purge user needs +evalsha +eval"
_MARKER = "a purge keeps its progress marker (continuity-dashboard:purge-progress:*) with +set +get +del"
_TTL_WRITES = "applying a TTL (a purge's 'apply max TTL', the key browser's TTL actions) needs +expire +pexpire"
_TRANSACTION = ("where scripting is refused, a purge acts in MULTI/EXEC transactions: the purge user needs "
                "+evalsha (or +multi +exec)")
_ROUTER = ("on a Redis Cluster, key pages and key actions route by slot with redis-py's RedisCluster: "
           "+cluster|slots +command +asking")
# What needs each command the keyspace layer sends, for the operator-facing refusal.
_NEEDED_FOR = {
    "scan": "the key browser, the overview, reviews and purges need +scan",
    "pttl": "the key browser, reviews and purges read TTLs with +pttl",
    "type": "the key browser and reviews read key types with +type",
    "memory|usage": "key sizes need +memory|usage (without it sizes are unknown)",
    "evalsha_ro": _READ_SCRIPTS, "eval_ro": _READ_SCRIPTS, "script|load": _READ_SCRIPTS,
    "evalsha": _WRITE_SCRIPT, "eval": _WRITE_SCRIPT,
    "unlink": "a purge by delete and the key browser's Delete need +unlink",
    "expire": _TTL_WRITES, "pexpire": _TTL_WRITES,
    "set": _MARKER, "get": _MARKER, "del": _MARKER,
    "multi": _TRANSACTION, "exec": _TRANSACTION,
    "client|setname": "the dashboard names its connections: +client|setname",
    "dbsize": "key counts need +dbsize", "info": "server figures need +info",
    "ping": "health checks need +ping", "select": "a database number other than 0 needs +select",
    "cluster|nodes": "on a Redis Cluster the slot map and the primaries come from CLUSTER NODES: +cluster|nodes",
    "cluster|slots": _ROUTER, "command": _ROUTER, "command|getkeys": _ROUTER, "command|info": _ROUTER,
    "asking": _ROUTER,
}
_PREVIEW = ("getrange", "strlen", "hlen", "hscan", "llen", "lrange", "scard", "sscan", "zcard", "zrange",
            "xlen", "xrange", "object|encoding")
_COMMAND_REFUSED = re.compile(r"no permissions to run the '([^']+)' command", re.IGNORECASE)
_KEY_REFUSED = ("no permissions to access", "can't access at least one of the keys")
_SCRIPT_CALL_REFUSED = "can't run this command or subcommand"


def missing_permission(exc):
    """The operator-facing sentence for a refusal by the server's ACL (or a read-only
    endpoint): which permission this Redis user lacks and what needs it. None when `exc`
    is something else."""
    if not isinstance(exc, redis.ResponseError):
        return None
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, redis.exceptions.ReadOnlyError) or lowered.startswith("you can't write against a read only"):
        return ("This Redis endpoint is read-only: a purge and the key browser's actions need the read-write URL "
                f"(the database record's URL variable, not its read-only one). {ACL_DOC}")
    found = _COMMAND_REFUSED.search(text)
    if found:
        command = found.group(1).lower()
        shown = command.upper().replace("|", " ")
        needed = _NEEDED_FOR.get(command) or (
            f"the key preview needs +{command}" if command in _PREVIEW else f"grant +{command}")
        return f"This Redis user may not run {shown} (ACL): {needed}. {ACL_DOC}"
    if any(marker in lowered for marker in _KEY_REFUSED):
        return ("This Redis user may not access one of the keys involved (ACL key pattern): browsing and reviews "
                "need the database's key prefix (e.g. ~lucia:*), a purge also "
                f"~continuity-dashboard:purge-progress:* for its progress marker. {ACL_DOC}")
    if _SCRIPT_CALL_REFUSED in lowered:
        return f"This Redis user may not run a command inside the dashboard's script (ACL). {ACL_DOC}"
    return None


def describe_error(exc):
    """A short operator-facing description of a Redis failure."""
    if isinstance(exc, rest.RestRefused):  # what the token may not do, and what would do it
        why = missing_permission(exc) or f"Redis refused the command for this token (ACL): {exc.said}"
        return f"The REST endpoint {exc.endpoint} refused a command for this token. {why} {rest.READ_ONLY_TOKEN_NOTE}"
    if isinstance(exc, (KeyspaceError, rest.RestError)):  # REST: names the endpoint, never the token
        return str(exc)
    if isinstance(exc, redis.TimeoutError):
        return "Redis did not answer within the timeout."
    if isinstance(exc, redis.AuthenticationError):
        return f"Redis refused the credentials: {exc}"
    if isinstance(exc, redis.ConnectionError):
        return f"Redis is unreachable: {exc}"
    if is_quota_error(exc):
        return (f"Redis answered with a quota error ({exc}). The provider's request limit is reached; "
                "wait before retrying, every command is billed.")
    permission = missing_permission(exc)
    if permission:
        return permission
    if isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in str(exc).lower():
        return f"Redis refused the command for this user (ACL): {exc}"
    if isinstance(exc, redis.exceptions.ClusterDownError) or str(exc).startswith("CLUSTERDOWN"):
        return ("The Redis Cluster is down (CLUSTERDOWN): a primary failed and its slots have no owner, so the "
                "nodes refuse to read keys until the cluster recovers. The database page shows which node.")
    if isinstance(exc, redis.exceptions.AskError):  # MOVED or ASK: a cluster node sent us elsewhere
        host, port = exc.node_addr
        return (f"A Redis Cluster node sent this request elsewhere: slot {exc.slot_id} is now served by {host}:{port} "
                "(the cluster is resharding or failed over). Reload to ask its new owner.")
    if isinstance(exc, redis.ResponseError):
        return f"Redis refused the command: {exc}"
    return f"Redis error: {exc.__class__.__name__}: {exc}"


def ping(database):
    """Health of one monitored database: PING with latency. A PING the user's ACL refuses
    was answered all the same: the database is reachable."""
    started, at = time.perf_counter(), timezone.now()
    try:
        client_for(database).ping()
    except redis.exceptions.NoPermissionError:
        pass  # it answered: reachable, though this user (Upstash's read-only token) may not PING
    except (redis.RedisError, KeyspaceError) as exc:
        return Health(ok=False, latency_ms=None, error=describe_error(exc),
                      misconfigured=isinstance(exc, Misconfigured), checked_at=at)
    return Health(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2), checked_at=at)


_status_cache: dict[int, tuple[float, Health]] = {}
STATUS_CACHE_SECONDS = 15


def cached_ping(database):
    """`ping()` remembered for a few seconds, so page banners cost at most one ping per
    database per interval and a down Redis cannot slow every page."""
    now = time.monotonic()
    hit = _status_cache.get(database.pk)
    if hit and now - hit[0] < STATUS_CACHE_SECONDS:
        return hit[1]
    health = ping(database)
    _status_cache[database.pk] = (now, health)
    return health


def forget_cached_status():
    _status_cache.clear()


@dataclass(frozen=True)
class ServerSummary:
    """O(1) figures for a database header. `None` where the server refused to say."""

    dbsize: int | None
    keys_with_ttl: int | None
    redis_version: str | None
    used_memory: int | None
    primaries: int = 0  # a Redis Cluster: the figures are sums over this many primaries
    note: str = ""  # a cluster: which primary refused or did not answer (its figures unknown)

    @property
    def keys_without_ttl(self):
        if self.dbsize is None or self.keys_with_ttl is None:
            return None
        return self.dbsize - self.keys_with_ttl


def _info_db_index(client):
    return int(client.get_connection_kwargs().get("db") or 0)


def dbsize(client):
    """DBSIZE (one command), or None where the server refuses it."""
    try:
        return int(client.dbsize())
    except redis.ResponseError:
        return None


def node_summary(database, *, client=None):
    """DBSIZE and `INFO` (keys − expires = keys without TTL), each optional, in one round
    trip: Upstash and ACL-restricted users may refuse INFO or DBSIZE, and we degrade. Where
    DBSIZE is refused but INFO answers, INFO's `keys=` stands in for it."""
    client = client or client_for(database)
    keys_with_ttl = version = memory = None
    pipe = client.pipeline(transaction=False)  # one round trip
    pipe.dbsize()
    pipe.info()
    size, info = pipe.execute(raise_on_error=False)
    size = None if isinstance(size, redis.ResponseError) else size
    if isinstance(size, Exception):
        raise size
    if isinstance(info, redis.ResponseError):
        try:
            info = client.info("keyspace")
        except redis.ResponseError:
            info = None
    elif isinstance(info, Exception):
        raise info
    if info is not None:
        db_section = info.get(f"db{_info_db_index(client)}") or {}
        if size is None:
            size = int(db_section.get("keys", 0))  # INFO omits empty databases: 0
        keys_with_ttl = int(db_section.get("expires", 0))
        version = info.get("redis_version")
        memory = info.get("used_memory")
    return ServerSummary(dbsize=size, keys_with_ttl=keys_with_ttl, redis_version=version, used_memory=memory)
