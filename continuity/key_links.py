"""How a key travels in a page link. A key's base64url token is the link (exact bytes, no
state), except for long keys: their token would make a request line past what servers
accept (414 from about 3 KB of key), so they get a short handle, "h.<digest>", whose key is
kept in the dashboard's cache (never the monitored Redis) for HANDLE_TTL.

A handle is bound to the database record it was issued for: its digest is an HMAC (keyed by
SECRET_KEY) of the record's id and the key, and the cache entry names the record. Under
another record's URL it is refused before any Redis call (ForeignHandle), so a link cannot
carry a key from one record's page to another's.

Also the display side of list pages: a key shown in a list is cut at DISPLAY_LIMIT
characters, so a 100 KB key does not weigh a review page down."""

import re

from django.core.cache import cache
from django.utils.crypto import constant_time_compare, salted_hmac

from continuity.keyspace import decode_key, display_key, encode_key

# Tokens up to this length stay in the URL as they are (a 768-byte key).
MAX_URL_TOKEN = 1024
HANDLE_PREFIX = "h."
HANDLE_TTL = 7 * 86400
DISPLAY_LIMIT = 200
_DIGEST = re.compile(r"[0-9a-f]{64}")


class HandleExpired(LookupError):
    """A long key's handle is unknown: expired from the cache, or never issued."""


class ForeignHandle(LookupError):
    """A long key's handle issued for another database record than the one in the URL."""


def _cache_key(digest):
    return f"continuity:key-handle:{digest}"


def _digest(database, key):
    # The record's id ends at the first colon (an id is digits), so no (id, key) pair reads as another.
    message = f"{database.pk}:".encode() + key
    return salted_hmac("continuity.key_links.handle", message, algorithm="sha256").hexdigest()


def url_token(key: bytes, database) -> str:
    """The path segment that opens `key` under `database` (a RedisDatabase): its token, or,
    for a long key, a handle bound to that record."""
    token = encode_key(key)
    if len(token) <= MAX_URL_TOKEN:
        return token
    digest = _digest(database, key)
    cache.set(_cache_key(digest), {"database": database.pk, "key": key}, timeout=HANDLE_TTL)
    return HANDLE_PREFIX + digest


def url_token_for_token(token: str, database) -> str:
    """`url_token` for a key already given as its base64url token (review findings)."""
    if len(token or "") <= MAX_URL_TOKEN:
        return token
    return url_token(decode_key(token), database)


def key_from_url_token(token: str, database) -> bytes:
    """The key a path segment names under `database`. ValueError when it is neither a token
    nor a handle; HandleExpired when it is a handle the cache no longer knows (or one from
    before handles were bound to a record); ForeignHandle when the handle was issued for
    another record."""
    if token.startswith(HANDLE_PREFIX):
        digest = token[len(HANDLE_PREFIX):]
        if not _DIGEST.fullmatch(digest):
            raise ValueError("not a key handle")
        entry = cache.get(_cache_key(digest))
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), bytes):
            raise HandleExpired(digest)
        if entry.get("database") != database.pk or not constant_time_compare(_digest(database, entry["key"]), digest):
            raise ForeignHandle(digest)
        cache.touch(_cache_key(digest), HANDLE_TTL)
        return entry["key"]
    return decode_key(token)


def short_display(key: bytes, limit=DISPLAY_LIMIT) -> str:
    """A key as escaped text for a list: the first `limit` characters, then how much is left."""
    text = display_key(key)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(key):,} bytes)"
