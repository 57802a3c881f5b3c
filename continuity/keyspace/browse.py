"""The key browser's reads: bounded SCAN pages under a literal prefix, lookup of one id
across namespaces, and the `:` tree built from registered namespaces.

A request never scans the whole keyspace: it spends at most a budget of SCAN COUNT
hints (the number of keys Redis looks at, roughly) and hands the cursor back so the operator
can continue. On a standalone server a page is at most three round trips: a small SCAN, a
second one as large as the first one's share of matches says the page needs (the rest of
the budget when it found none), then the page's metadata and DBSIZE together.

Filtered by a finding (no TTL, above the maximum, oversized, wrong type, in no namespace,
or any of them), the same budget is spent: each SCAN page's metadata is read as it comes
(one call per page), and only the keys showing the finding are kept, until a page of them
is full or the budget is spent. The result says how many keys SCAN examined, how many it
read under the pattern, and how many showed the finding.

A standalone server is a keyspace of one primary: `scan_keys` is one loop over the
primaries. On a Redis Cluster the same budget is spent across them, one after the other in
the order of their addresses, and the cursor handed back is a composite one (which
primary, and its SCAN cursor: `primaries.issue_cursor`); the scan is done only when the
last primary's SCAN is. A lookup asks each candidate key's owner directly, by slot.
"""

import math
from dataclasses import dataclass, field

from django.conf import settings

from continuity.keyspace import cluster, primaries
from continuity.keyspace.capabilities import limitations
from continuity.keyspace.connection import KeyspaceError, client_for, dbsize
from continuity.keyspace.meta import KeyMeta, key_metadata, key_metadata_and, scan_page
from continuity.policy import UNKNOWN_NAMESPACE, Policies

EMPTY = Policies()
ANY_FINDING = "any"  # the browser's filter for a key with any finding

FIRST_COUNT = 100
MAX_COUNT = 2000
SCANS = 2  # SCAN calls per request on a standalone server: then the page's metadata and DBSIZE


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
    """One request's worth of a scan. `cursor` 0 means the iteration is complete (on a
    cluster: every primary's); otherwise an int (one server) or a composite cursor (str).

    `examined` counts SCAN COUNT hints spent (Redis examines about that many keys), this
    request and `examined_total` across the continued pages; likewise `matched_total`.
    On a cluster, `primaries` is how many were to be scanned, `scanned` those complete
    after this page, `stopped` names a primary that did not answer (the cursor then points
    at it: continuing retries it) and `dbsize_note` says why DBSIZE is unknown.
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
    primaries: int = 0
    scanned: int = 0
    stopped: str = ""
    dbsize_note: str = ""
    finding: str = ""  # the filter: a finding, ANY_FINDING, or "" (every key)
    read_total: int = 0  # keys SCAN returned under the pattern, across the continued pages

    @property
    def done(self):
        return self.cursor == 0 and not self.stopped

    @property
    def examined_shown(self):
        """`examined_total` for the page: COUNT hints are not keys, so a scan that ends early
        (a small keyspace, or each primary's last page on a cluster) never shows more keys
        examined than DBSIZE."""
        if self.dbsize is None:
            return self.examined_total
        return min(self.examined_total, self.dbsize)


def row_findings(meta, policies):
    """Every finding of a `KeyMeta` under `policies` (its namespace's policy), or
    (UNKNOWN_NAMESPACE,) when no namespace covers it."""
    policy = policies.for_key(meta.key)
    if policy is None:
        return (UNKNOWN_NAMESPACE,)
    return policy.findings(meta.ttl_ms, meta.type, meta.memory)


def shows(meta, policies, finding):
    """True when `meta` is a key to list for the filter `finding` ("" : every key that exists)."""
    if not meta.exists:
        return False
    if not finding:
        return True
    found = row_findings(meta, policies)
    return bool(found) if finding == ANY_FINDING else finding in found


def classify_rows(metas, policies):
    """KeyRows of `metas`, each classified by `policies` (a `continuity.policy.Policies`)."""
    rows = []
    for meta in metas:
        namespace, status = policies.classify(meta)
        rows.append(KeyRow(meta=meta, namespace=namespace, status=status))
    return rows


def scan_keys(database, *, pattern, policies=EMPTY, type_=None, cursor=0, budget=None, page_size=None,
              examined_before=0, matched_before=0, read_before=0, finding="", client=None):
    """Up to about `page_size` matching keys with their metadata, spending at most
    `budget` examined keys (SCAN COUNT hints; on a standalone server in at most `SCANS`
    calls). Metadata for the whole page comes from one script call, with DBSIZE, in one
    round trip (on a cluster, one pipeline per primary). With a `finding` filter, each SCAN
    page's metadata is read as it comes (one call per page, as many pages as the budget
    allows), keeping only the keys that show it (`shows`). `pattern` is a MATCH
    pattern (bytes): build it with `match_pattern(prefix)` for a literal prefix. `cursor`:
    0 to start, else the `cursor` of the previous ScanResult; one that cannot continue this
    scan raises `primaries.CursorError` before a key is read.

    A standalone server is a keyspace of one primary: the same loop, its own client, a plain
    SCAN cursor. On a cluster the budget is spent on one primary after the other from the
    composite cursor's position; a primary that does not answer stops the page there (the
    rows read before it are shown, the cursor points at it, the page is never "done")."""
    budget = budget or settings.KEYSPACE_SCAN_BUDGET
    page_size = page_size or settings.KEYSPACE_PAGE_SIZE
    client = client or client_for(database)
    nodes = scope = None
    if primaries.is_cluster(database, client):
        nodes = cluster.slot_map(client)
        if not nodes.addresses:
            raise KeyspaceError(f"{database.name} is a Redis Cluster, but CLUSTER NODES lists no primary serving "
                                "slots: there is nothing to browse until slots are assigned.")
        scope = primaries.scan_scope(pattern, type_)
        index, node_cursor = primaries.read_cursor(database, scope, nodes, cursor)
        addresses = nodes.addresses
    elif isinstance(cursor, str) and not cursor.isdigit():
        raise primaries.CursorError(
            f"This cursor belongs to a scan across a Redis Cluster's primaries, but {database.name} is a single "
            "Redis server. No key was read; start the scan again.")
    else:
        index, node_cursor, addresses = 0, int(cursor), (None,)
    clients = [client] if nodes is None else [primaries.direct_client(client, a) for a in addresses]
    keys_by_node, seen, kept, touched = {}, set(), [], []
    examined = calls = 0
    count = min(FIRST_COUNT, budget)
    stopped = stop_message = ""
    while index < len(addresses):
        address = addresses[index]
        try:
            node_cursor, found = scan_page(client=clients[index], match=pattern, cursor=node_cursor, count=count,
                                           type_=type_)
        except cluster.NODE_ERRORS as exc:
            if nodes is None:
                raise
            stopped, stop_message = address, str(primaries.node_unreachable(database, address, exc))
            break
        calls += 1
        examined += count
        fresh = [key for key in found if key not in seen]  # SCAN may return a key twice
        seen.update(fresh)
        if fresh and index not in touched:
            touched.append(index)
        if finding and fresh:  # read as it comes, keep what shows the finding
            metas = (key_metadata(keys=fresh, client=client) if nodes is None
                     else primaries.metadata_by_node(database, client, {address: fresh}))
            kept += [meta for meta in metas if shows(meta, policies, finding)]
        elif fresh:
            keys_by_node.setdefault(address, []).extend(fresh)
        if node_cursor == 0:  # this primary is complete: the next one starts from 0
            index += 1
        remaining = budget - examined
        have = len(kept) if finding else len(seen)
        if index >= len(addresses) or have >= page_size or remaining <= 0:
            break
        if nodes is None and not finding:
            if calls >= SCANS:
                break
            # The second call looks as far as the first's share of matches says a page needs
            # (all the rest of the budget when it found none): a page is two SCANs at most.
            count = _extrapolated(count, remaining, have, page_size)
        else:  # few matches so far: look further per call; many: keep pages small
            count = _next_count(count, remaining, have, page_size)
    if nodes is None:
        if finding:
            size = dbsize(client)
        else:  # the page's metadata and DBSIZE in one round trip
            kept, (size,) = key_metadata_and(client, sorted(keys_by_node.get(None, ())), [("DBSIZE",)])
            size = None if isinstance(size, Exception) else int(size)
        counted, cursor = primaries.Count(total=size, partial=size or 0), node_cursor
    else:
        kept = kept if finding else primaries.metadata_by_node(database, client, keys_by_node)
        counted = primaries.count_keys(client, nodes.addresses, skip=(stopped,) if stopped else ())
        cursor = primaries.issue_cursor(database, scope, nodes, index, node_cursor)
    notes = []  # what the server refused: the one server's, or each primary's that returned keys
    for at in (touched if nodes is not None else [0]):
        notes.extend(note for note in limitations(clients[at]) if note not in notes)
    if stopped:
        notes.insert(0, f"{stop_message} The scan stopped at this primary: this page is not the whole keyspace, "
                        "and continuing retries it.")
    rows = classify_rows(sorted((m for m in kept if m.exists), key=lambda m: m.key), policies)
    return ScanResult(pattern=pattern, type_filter=type_, rows=rows, cursor=cursor, calls=calls, examined=examined,
                      examined_total=examined_before + examined, matched_total=matched_before + len(rows),
                      dbsize=counted.total, notes=tuple(notes), primaries=len(nodes.addresses) if nodes else 0,
                      scanned=index if nodes else 0, stopped=stopped, dbsize_note=counted.note, finding=finding,
                      read_total=read_before + len(seen))


def _extrapolated(count, remaining, found, page_size):
    """COUNT for the last SCAN of a request: enough, at the rate matches came so far, to fill
    the page with a margin, within the budget left."""
    if not found:
        return remaining
    return max(1, min(remaining, math.ceil((page_size - found) * count / found * 1.25)))


def _next_count(count, remaining, found, page_size):
    return min(MAX_COUNT, remaining, count * 4 if found < page_size // 4 else count)


@dataclass(frozen=True)
class LookupResult:
    ident: bytes
    rows: list  # KeyRow for keys that exist
    missing: list  # (namespace, key) for candidates that do not exist
    unread: list = field(default_factory=list)  # (namespace, key, why) for candidates Redis did not answer for

    @property
    def total(self):
        return len(self.rows) + len(self.missing) + len(self.unread)


def lookup_id(database, ident: bytes, policies, *, client=None, nodes=None):
    """Every `<namespace prefix><ident>` key across the registered namespaces, in one
    round trip (one `key_metadata` call over the candidates). No SCAN. On a cluster, each
    candidate is asked on the primary owning its slot (`primaries.read_by_slot`; `nodes`:
    a slot map already read); a candidate that could not be read is `unread`, not missing."""
    client = client or client_for(database)
    ordered = sorted(policies, key=lambda p: p.prefix)
    candidates = [policy.prefix + ident for policy in ordered]
    if primaries.is_cluster(database, client):
        answers = primaries.read_by_slot(database, client, candidates, nodes=nodes)
        metas = [answers[key] for key in candidates]
    else:
        metas = key_metadata(database, candidates, client=client)
    present = [m for m in metas if isinstance(m, KeyMeta) and m.exists]
    missing = [(policies.owner_of(policy), m.key) for policy, m in zip(ordered, metas)
               if isinstance(m, KeyMeta) and not m.exists]
    unread = [(policies.owner_of(policy), key, why) for policy, key, why in zip(ordered, candidates, metas)
              if not isinstance(why, KeyMeta)]
    return LookupResult(ident=ident, rows=classify_rows(present, policies), missing=missing, unread=unread)


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
