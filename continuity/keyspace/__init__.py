"""The only code that talks to a monitored Redis.

- `connection`: URLs from the environment, clients with explicit timeouts and verified TLS,
  health, O(1) server figures.
- `keys`: bytes keys, their base64url form for URLs, their escaped form for screens, and
  literal prefixes turned into escaped MATCH patterns.
- `meta`: PTTL, TYPE and MEMORY USAGE for a batch of keys in one command (a Lua script),
  with a pipeline fallback where scripting or MEMORY is refused.

Keys are `bytes` end to end. Redis's TTL codes (-1 no expiry, -2 gone) become `None` /
absent at this boundary. Never `KEYS`.
"""

from continuity.keyspace.connection import (  # noqa: F401
    Health,
    KeyspaceError,
    NotConfigured,
    ServerSummary,
    Unreachable,
    cached_ping,
    client_for,
    connection_url,
    describe,
    forget_cached_status,
    make_client,
    ping,
    server_summary,
)
from continuity.keyspace.keys import decode_key, display_key, encode_key, escape_glob, match_pattern  # noqa: F401
from continuity.keyspace.meta import KeyMeta, key_metadata, scan_page  # noqa: F401
