"""How a key travels in a page link. A key's base64url token is the link (exact bytes, no
state), except for long keys: their token would make a request line past what servers
accept (414 from about 3 KB of key), so they get a short handle, "h.<sha256>", whose bytes
are kept in the dashboard's cache (never the monitored Redis) for HANDLE_TTL.

Also the display side of list pages: a key shown in a list is cut at DISPLAY_LIMIT
characters, so a 100 KB key does not weigh a review page down."""

import hashlib

from django.core.cache import cache

from continuity.keyspace import decode_key, display_key, encode_key

# Tokens up to this length stay in the URL as they are (a 768-byte key).
MAX_URL_TOKEN = 1024
HANDLE_PREFIX = "h."
HANDLE_TTL = 7 * 86400
DISPLAY_LIMIT = 200


class HandleExpired(LookupError):
    """A long key's handle is unknown: expired from the cache, or never issued."""


def _cache_key(digest):
    return f"continuity:key-handle:{digest}"


def url_token(key: bytes) -> str:
    """The path segment that opens `key`: its token, or a handle for a long key."""
    token = encode_key(key)
    if len(token) <= MAX_URL_TOKEN:
        return token
    digest = hashlib.sha256(key).hexdigest()
    cache.set(_cache_key(digest), key, timeout=HANDLE_TTL)
    return HANDLE_PREFIX + digest


def url_token_for_token(token: str) -> str:
    """`url_token` for a key already given as its base64url token (review findings)."""
    if len(token or "") <= MAX_URL_TOKEN:
        return token
    return url_token(decode_key(token))


def key_from_url_token(token: str) -> bytes:
    """The key a path segment names. ValueError when it is neither a token nor a handle;
    HandleExpired when it is a handle the cache no longer knows."""
    if token.startswith(HANDLE_PREFIX):
        digest = token[len(HANDLE_PREFIX):]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("not a key handle")
        key = cache.get(_cache_key(digest))
        if not isinstance(key, bytes) or hashlib.sha256(key).hexdigest() != digest:
            raise HandleExpired(digest)
        cache.touch(_cache_key(digest), HANDLE_TTL)
        return key
    return decode_key(token)


def short_display(key: bytes, limit=DISPLAY_LIMIT) -> str:
    """A key as escaped text for a list: the first `limit` characters, then how much is left."""
    text = display_key(key)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(key):,} bytes)"
