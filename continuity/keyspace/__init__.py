"""The only code that talks to a monitored Redis.

- `connection`: URLs from the environment, clients with explicit timeouts and verified TLS,
  health, O(1) server figures; the transport (TCP, or Upstash's REST API: `rest`) is chosen
  there and nowhere else.
- `rest`: Upstash's REST API under redis-py's interface (one HTTP request per batch).
- `continuity.keynames` (re-exported here; pure, so models use it too): bytes keys, their
  base64url form for URLs, their escaped form for screens, escaped MATCH patterns.
- `browse`, `inspect`, `actions`: the key browser's bounded reads, previews and writes.
- `meta`: PTTL, TYPE and MEMORY USAGE for a batch of keys in one command (a Lua script),
  with a pipeline fallback where scripting or MEMORY is refused.
- `cluster`: whether a database is a Redis Cluster, its nodes (slots, keys, reachable), its
  slot map (`SlotMap`: the one reading of who serves which slot, shared by the browser,
  reviews and purges).
- `nodes`: the nodes a job works through (`primaries(database)`: one for a standalone
  server, one per primary of a cluster), each with its own client; every job is one loop
  over them.
- `scripts`: the one place Lua scripts are run (NOSCRIPT, EVALSHA_RO, counting).
- `primaries`: reading keys across a cluster's primaries for pages: the browser's
  composite cursor, per-node metadata, lookups routed by slot, the keyed client of the key
  detail page (redis-py's RedisCluster) and the header figures summed over the primaries.
- `capabilities`: what a server refused (scripting, EVALSHA_RO, MEMORY, SCAN in a script),
  kept on the client object, shared by every module here; `limitations(client)` says what
  is degraded, `connection.missing_permission(exc)` which ACL permission a refusal names.

Policy: this layer never imports the models. Where it classifies keys it is given a
classifier (`continuity.policy.Policies.classify`).

Keys are `bytes` end to end. Redis's TTL codes (-1 no expiry, -2 gone) become `None` /
absent at this boundary. Never `KEYS`.
"""

from continuity.keyspace.connection import (  # noqa: F401
    KeyspaceError,
    NotConfigured,
    cached_ping,
    client_for,
    connection_url,
    dbsize,
    FAILURES,
    describe_error,
    forget_clients,
    forget_cached_status,
    is_rest,
    make_client,
    new_client,
    ping,
)
from continuity.keynames import decode_key, display_key, encode_key, match_pattern  # noqa: F401
from continuity.keyspace.meta import key_metadata, scan_page  # noqa: F401
from continuity.keyspace.browse import (  # noqa: F401
    ANY_FINDING,
    breadcrumbs,
    lookup_id,
    namespace_tree,
    scan_keys,
)
from continuity.keyspace.inspect import download_value, preview_key  # noqa: F401
from continuity.keyspace.actions import (ACTIONS, EXTEND_TTL, MAX_TTL_SECONDS, SET_TTL, KeyChange,  # noqa: F401
                                         change_key)
from continuity.keyspace.capabilities import limitations  # noqa: F401
from continuity.keyspace.cluster import (  # noqa: F401
    NODE_ERRORS,
    ClusterRefusal,
    topology,
)
from continuity.keyspace.primaries import CursorError, server_summary  # noqa: F401
from continuity.keyspace.sample import sample_keyspace  # noqa: F401
