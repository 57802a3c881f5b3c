"""Bounded previews of one key's value. Every command here is bounded whatever the size
of the value: GETRANGE for strings, HSCAN/SSCAN with a few COUNT calls, LRANGE/ZRANGE
over the first 100 elements, XRANGE COUNT 20. Values are never unpickled or evaluated;
they are shown as text where they are UTF-8 (pretty-printed when they are JSON) and
escaped otherwise. Templates HTML-escape everything that comes out of here. On a Redis
Cluster the commands go to the key's primary through RedisCluster (`primaries.keyed_client`).
"""

import json
import re
from dataclasses import dataclass, field

import redis
from django.conf import settings

from continuity.keyspace.primaries import keyed_client
from continuity.keynames import display_key
from continuity.keyspace.meta import KeyMeta, key_metadata_and

STRING_PREVIEW_BYTES = 4096
ELEMENTS = 100
STREAM_ENTRIES = 20
SCAN_CALLS = 10  # HSCAN/SSCAN calls at most, to collect ELEMENTS items
JSON_PREVIEW_MAX_MEMORY = 256 * 1024

_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_LENGTH_COMMAND = {"string": "STRLEN", "hash": "HLEN", "list": "LLEN", "set": "SCARD", "zset": "ZCARD",
                   "stream": "XLEN"}


def display_value(value: bytes) -> str:
    """A value as text: UTF-8 where it is UTF-8, other bytes as \\xNN, control characters
    (other than newlines and tabs) escaped."""
    text = value.decode("utf-8", errors="backslashreplace")
    return _CONTROL_BUT_WHITESPACE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def is_text(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def pretty_json(value: bytes):
    """Indented JSON when `value` parses as JSON (an object or array), else None."""
    stripped = value.strip()
    if not stripped[:1] in (b"{", b"["):
        return None
    try:
        return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False, sort_keys=True)
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True)
class Preview:
    """What the detail page shows of one key.

    `length` is the element count (bytes for strings). `text`/`json_text` fill for
    strings; `items` is a list of display tuples for collections. `truncated` means
    the preview shows less than the whole value. `encoding` is None where OBJECT is refused.
    """

    meta: KeyMeta
    length: int | None = None
    text: str | None = None
    json_text: str | None = None
    binary: bool = False
    items: list = field(default_factory=list)
    columns: tuple = ()
    truncated: bool = False
    encoding: str | None = None
    notes: tuple = ()
    slot: int | None = None  # on a Redis Cluster: the key's hash slot
    node: str = ""  # on a Redis Cluster: the primary serving it (host:port), as this client routes it
    withheld: bool = False  # metadata only: the value was not read (`preview_key(values=False)`)

    @property
    def shown(self):
        return len(self.items)


def _where(client, key):
    """{slot, node} of `key` on a Redis Cluster client (from its slot cache: no command),
    {} on a standalone server. Read after the metadata, so a MOVED followed there shows here."""
    if not isinstance(client, redis.RedisCluster):
        return {}
    node = client.get_node_from_key(key)
    return {"slot": client.keyslot(key), "node": node.name if node is not None else ""}


def preview_key(database, key: bytes, *, values=True, client=None):
    """A bounded Preview of `key`, or a Preview whose `meta.exists` is False. `values`
    False: metadata only (type, TTL, size, length, encoding); not one byte of the value is
    read (`withheld`).

    In two round trips, three for a large hash or set: the metadata and OBJECT ENCODING
    together, then the length and the bounded read of the value together (and one more
    HSCAN/SSCAN where the first did not bring ELEMENTS members). On a Redis Cluster the same
    pipelines go to the key's primary (RedisCluster routes them by slot); the metadata
    script and OBJECT ENCODING travel apart there (`key_metadata_and`)."""
    client = client or keyed_client(database)
    metas, (encoding,) = key_metadata_and(client, [key], [("OBJECT", "ENCODING", key)])
    meta, where = metas[0], _where(client, key)
    if not meta.exists:
        return Preview(meta=meta, **where)
    encoding = None if isinstance(encoding, Exception) else (
        encoding.decode() if isinstance(encoding, bytes) else encoding)
    kind = meta.type
    pipe = client.pipeline(transaction=False)
    command = _LENGTH_COMMAND.get(kind)
    if command:
        pipe.execute_command(command, key)
    read = values and _first_read(pipe, kind, key, meta)
    replies = pipe.execute(raise_on_error=False) if (command or read) else []
    length = replies[0] if command else None
    length = None if isinstance(length, Exception) else length
    value = replies[-1] if read else None
    if not values:
        notes = () if encoding is not None else ("OBJECT ENCODING is refused by this server.",)
        return Preview(meta=meta, length=length, encoding=encoding, notes=notes, withheld=True, **where)
    return _preview(client, key, meta, length, encoding, value, where)


def _first_read(pipe, kind, key, meta):
    """Queue the bounded read of the value of `key` (a `kind`) on `pipe`: True when queued."""
    if kind == "string":
        pipe.getrange(key, 0, STRING_PREVIEW_BYTES - 1)
    elif kind == "hash":
        pipe.hscan(key, cursor=0, count=ELEMENTS)
    elif kind == "set":
        pipe.sscan(key, cursor=0, count=ELEMENTS)
    elif kind == "list":
        pipe.lrange(key, 0, ELEMENTS - 1)
    elif kind == "zset":
        pipe.zrange(key, 0, ELEMENTS - 1, withscores=True)
    elif kind == "stream":
        pipe.xrange(key, count=STREAM_ENTRIES)
    elif kind == "ReJSON-RL" and not (meta.memory is not None and meta.memory > JSON_PREVIEW_MAX_MEMORY):
        pipe.execute_command("JSON.GET", key)
    else:
        return False
    return True


def _more_members(client, command, key, cursor, found):
    """`found` members of a hash or set, topped up to ELEMENTS by one more HSCAN/SSCAN (a
    larger COUNT: a bounded page must not cost one round trip per hundred members)."""
    if cursor == 0 or len(found) >= ELEMENTS:
        return found[:ELEMENTS]
    count = ELEMENTS * (SCAN_CALLS - 1)
    if command == "HSCAN":
        _cursor, chunk = client.hscan(key, cursor=cursor, count=count)
        found.extend(chunk.items())
    else:
        _cursor, chunk = client.sscan(key, cursor=cursor, count=count)
        found.extend(chunk)
    return found[:ELEMENTS]


def _preview(client, key, meta, length, encoding, value, where):
    """The Preview of `key` from its metadata, length, encoding and the first read's reply."""
    base = {"meta": meta, "length": length, "encoding": encoding, **where}
    notes = () if encoding is not None else ("OBJECT ENCODING is refused by this server.",)
    kind = meta.type
    if isinstance(value, Exception):
        if kind == "ReJSON-RL":
            return Preview(**base, notes=notes + (f"RedisJSON did not answer: {value}",))
        raise value
    if kind == "string":
        head = value or b""
        truncated = (length or 0) > len(head)
        return Preview(**base, text=display_value(head), binary=not is_text(head), truncated=truncated,
                       json_text=None if truncated else pretty_json(head), notes=notes)
    if kind == "hash":
        cursor, chunk = value
        pairs = _more_members(client, "HSCAN", key, cursor, list(chunk.items()))
        items = [(display_key(f), display_value(v)) for f, v in pairs]
        return Preview(**base, items=items, columns=("field", "value"), truncated=(length or 0) > len(items),
                       notes=notes)
    if kind == "set":
        cursor, chunk = value
        members = _more_members(client, "SSCAN", key, cursor, list(chunk))
        return Preview(**base, items=[(display_value(m),) for m in members], columns=("member",),
                       truncated=(length or 0) > len(members), notes=notes)
    if kind == "list":
        items = [(str(i), display_value(v)) for i, v in enumerate(value)]
        return Preview(**base, items=items, columns=("index", "value"), truncated=(length or 0) > len(items),
                       notes=notes)
    if kind == "zset":
        items = [(display_value(m), f"{s:g}") for m, s in value]
        return Preview(**base, items=items, columns=("member", "score"), truncated=(length or 0) > len(items),
                       notes=notes)
    if kind == "stream":
        items = [(display_value(entry_id),
                  ", ".join(f"{display_value(f)}={display_value(v)}" for f, v in fields.items()))
                 for entry_id, fields in value]
        return Preview(**base, items=items, columns=("id", "fields"), truncated=(length or 0) > len(items),
                       notes=notes)
    if kind == "ReJSON-RL":
        if value is None and meta.memory is not None and meta.memory > JSON_PREVIEW_MAX_MEMORY:
            return Preview(**base, truncated=True, notes=notes + ("The JSON document is too large to preview.",))
        raw = value or b""
        return Preview(**base, text=display_value(raw[:STRING_PREVIEW_BYTES]), json_text=pretty_json(raw),
                       truncated=len(raw) > STRING_PREVIEW_BYTES, notes=notes)
    return Preview(**base, notes=notes + (f"No preview for type {kind}.",))


@dataclass(frozen=True)
class Download:
    data: bytes
    length: int
    truncated: bool


def download_value(database, key: bytes, *, cap=None, client=None):
    """The string value of `key` up to `cap` bytes (GETRANGE, never a full GET of an
    unbounded value), or None when the key is gone or not a string."""
    cap = cap or settings.KEYSPACE_DOWNLOAD_CAP
    client = client or keyed_client(database)
    pipe = client.pipeline(transaction=False)
    pipe.type(key)
    pipe.strlen(key)
    kind, length = pipe.execute(raise_on_error=False)
    if kind not in (b"string", "string") or isinstance(length, Exception):
        return None
    data = client.getrange(key, 0, cap - 1)
    return Download(data=data, length=length, truncated=length > len(data))
