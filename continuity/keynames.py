"""Keys as bytes: how they travel in URLs, how they are shown, how a literal prefix
becomes a MATCH pattern. Nothing here decodes a key and re-encodes it for an operation."""

import base64
import binascii
import re

_GLOB_SPECIAL = re.compile(rb"([\\*?\[\]])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_glob(literal: bytes) -> bytes:
    """`literal` with Redis's glob characters (\\ * ? [ ]) escaped by a backslash."""
    return _GLOB_SPECIAL.sub(rb"\\\1", literal)


def match_pattern(prefix: bytes) -> bytes:
    """The MATCH pattern for every key starting with the literal `prefix`."""
    return escape_glob(prefix) + b"*"


def encode_key(key: bytes) -> str:
    """base64url without padding: how a key travels in URLs and forms."""
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def decode_key(token: str) -> bytes:
    """The inverse of `encode_key`; ValueError on anything that is not one."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", token or ""):
        raise ValueError("not a base64url key token")
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not a base64url key token") from exc


def display_key(key: bytes) -> str:
    """A key as text for a screen: UTF-8 where it is UTF-8, other bytes as \\xNN, control
    characters escaped (\\n, \\t, \\x00). Templates still HTML-escape the result."""
    text = key.decode("utf-8", errors="backslashreplace")
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)
