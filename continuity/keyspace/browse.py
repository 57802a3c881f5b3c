"""The key browser's reads: bounded SCAN pages under a literal prefix, lookup of one id
across namespaces, and the `:` tree built from registered namespaces.

A request never scans the whole keyspace: it spends at most a budget of SCAN COUNT
hints (the number of keys Redis looks at, roughly), ramps COUNT up from small to large
the way Upstash's console does, and hands the cursor back so the operator can continue.
"""

from dataclasses import dataclass, field

import redis
from django.conf import settings

from continuity.keyspace.capabilities import limitations
from continuity.keyspace.cluster import refuse_partial
from continuity.keyspace.connection import client_for
from continuity.keynames import match_pattern
from continuity.keyspace.meta import KeyMeta, key_metadata, scan_page
from continuity.policy import Policies

EMPTY = Policies()

FIRST_COUNT = 100
MAX_COUNT = 2000


@dataclass(frozen=True)
class KeyRow:
    """One browser row: what Redis says about a key and where it stands against policy."""

    meta: KeyMeta
    namespace: object  # the owner of the key's Policy (a Namespace row) or None
    status: object  # continuity.policy.PolicyStatus

    @property
    def key(self):
        return self.meta.key


@dataclass(frozen=True)
class ScanResult:
    """One request's worth of a scan. `cursor` 0 means the iteration is complete.

    `examined` counts SCAN COUNT hints spent (Redis examines about that many keys), this
    request and `examined_total` across the continued pages; likewise `matched_total`.
    """

    pattern: bytes
    type_filter: str | None
    rows: list = field(default_factory=list)
    cursor: int = 0
    calls: int = 0
    examined: int = 0
    examined_total: int = 0
    matched_total: int = 0
    dbsize: int | None = None
    notes: tuple = ()  # what this server or user refused, and what is degraded for it

    @property
    def done(self):
        return self.cursor == 0


def classify_rows(metas, policies):
    """KeyRows of `metas`, each classified by `policies` (a `continuity.policy.Policies`)."""
    rows = []
    for meta in metas:
        namespace, status = policies.classify(meta)
        rows.append(KeyRow(meta=meta, namespace=namespace, status=status))
    return rows


def scan_keys(database, *, pattern, policies=EMPTY, type_=None, cursor=0, budget=None, page_size=None,
              examined_before=0, matched_before=0, client=None):
    """Up to about `page_size` matching keys with their metadata, spending at most
    `budget` examined keys (SCAN COUNT hints). Metadata for the whole page comes from one
    `key_metadata` call. `pattern` is a MATCH pattern (bytes): build it with
    `match_pattern(prefix)` for a literal prefix."""
    budget = budget or settings.KEYSPACE_SCAN_BUDGET
    page_size = page_size or settings.KEYSPACE_PAGE_SIZE
    client = client or client_for(database)
    refuse_partial(database, client, action="browse")  # until the browser spans every primary
    seen, keys = set(), []
    examined = calls = 0
    count = min(FIRST_COUNT, budget)
    while True:
        cursor, found = scan_page(client=client, match=pattern, cursor=cursor, count=count, type_=type_)
        calls += 1
        examined += count
        for key in found:
            if key not in seen:  # SCAN may return a key twice
                seen.add(key)
                keys.append(key)
        remaining = budget - examined
        if cursor == 0 or len(keys) >= page_size or remaining <= 0:
            break
        # Few matches so far: look further per call; many: keep pages small.
        count = min(MAX_COUNT, remaining, count * 4 if len(keys) < page_size // 4 else count)
    metas = key_metadata(keys=sorted(keys), client=client)
    rows = classify_rows([m for m in metas if m.exists], policies)
    return ScanResult(pattern=pattern, type_filter=type_, rows=rows, cursor=cursor, calls=calls, examined=examined,
                      examined_total=examined_before + examined, matched_total=matched_before + len(rows),
                      dbsize=dbsize(client), notes=tuple(limitations(client)))


def dbsize(client):
    """DBSIZE, or None where the server refuses it (ACL, some providers)."""
    try:
        return client.dbsize()
    except redis.ResponseError:
        return None


def browse_prefix(database, prefix: bytes, **kwargs):
    """`scan_keys` for every key starting with the literal `prefix`."""
    return scan_keys(database, pattern=match_pattern(prefix), **kwargs)


@dataclass(frozen=True)
class LookupResult:
    ident: bytes
    rows: list  # KeyRow for keys that exist
    missing: list  # (namespace, key) for candidates that do not exist

    @property
    def total(self):
        return len(self.rows) + len(self.missing)


def lookup_id(database, ident: bytes, policies, *, client=None):
    """Every `<namespace prefix><ident>` key across the registered namespaces, in one
    round trip (one `key_metadata` call over the candidates). No SCAN."""
    refuse_partial(database, client, action="browse")
    ordered = sorted(policies, key=lambda p: p.prefix)
    candidates = [policy.prefix + ident for policy in ordered]
    metas = key_metadata(database, candidates, client=client)
    present = [m for m in metas if m.exists]
    missing = [(policies.owner_of(policy), m.key) for policy, m in zip(ordered, metas) if not m.exists]
    return LookupResult(ident=ident, rows=classify_rows(present, policies), missing=missing)


@dataclass(frozen=True)
class TreeNode:
    prefix: str
    label: str
    namespace: object = None  # the Namespace whose prefix this is, if any


def namespace_tree(namespaces, prefix=""):
    """The next `:`-separated level below `prefix`, built from registered namespace
    prefixes (no SCAN): for '' → ['lucia:'], for 'lucia:' → ['lucia:action:', …]."""
    children = {}
    for namespace in namespaces:
        full = namespace.prefix
        if not full.startswith(prefix) or full == prefix:
            continue
        rest = full[len(prefix):]
        cut = rest.find(":")
        child = prefix + (rest[: cut + 1] if cut >= 0 else rest)
        node = children.get(child)
        if node is None or (node.namespace is None and full == child):
            children[child] = TreeNode(prefix=child, label=child[len(prefix):],
                                       namespace=namespace if full == child else None)
    return [children[k] for k in sorted(children)]


def breadcrumbs(prefix):
    """[(label, prefix)] for each `:`-level of `prefix`, for navigation back up."""
    crumbs, start = [], 0
    while True:
        cut = prefix.find(":", start)
        if cut < 0:
            break
        crumbs.append((prefix[start: cut + 1], prefix[: cut + 1]))
        start = cut + 1
    if start < len(prefix):
        crumbs.append((prefix[start:], prefix))
    return crumbs
