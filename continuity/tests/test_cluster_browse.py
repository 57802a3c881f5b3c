"""Browsing a Redis Cluster across its primaries, against the real local 3-primary cluster:
the key browser's composite cursor, lookups routed by slot, the key detail page and its
actions for a key on any primary, the overview's sample and header, and a killed primary."""

import html
from urllib.parse import urlencode

import pytest
import redis
from django.urls import reverse
from redis.crc import key_slot

from continuity import keyspace
from continuity.keyspace import primaries
from continuity.models import Namespace
from continuity.policy import Policies
from continuity.tests.clusters import point_at
from continuity.tests.test_cluster import cluster_lucia  # noqa: F401 — the fixture
from continuity.tests.test_browse import ODD_KEYS
from continuity.tests.waiting import wait_for
from dashboard.models import AuditEntry

READS = ("scan", "evalsha", "evalsha_ro", "eval", "pttl", "type", "memory|usage", "get", "exists")


def browse_url(**params):
    return reverse("continuity:browse", args=["lucia"]) + "?" + urlencode(params)


def detail_url(key):
    return reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(key)])


def port_of(client, key):
    """The port of the primary owning `key` (asked of redis-py's RedisCluster)."""
    return client.get_node_from_key(key).port


def reset_stats(ports):
    for port in ports:
        with redis.Redis(port=port) as node:
            node.config_resetstat()


def calls(ports, *commands):
    """{port: calls of `commands` since reset_stats}."""
    out = {}
    for port in ports:
        with redis.Redis(port=port) as node:
            stats = node.info("commandstats")
        out[port] = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in commands)
    return out


def follow(client, **params):
    """Every page of a browse from its first request to "done": [(response, result)]."""
    pages, state = [], {}
    while True:
        response = client.get(browse_url(**params, **state))
        assert response.status_code == 200, response.content.decode()[:500]
        result = response.context["result"]
        pages.append((response, result))
        if result.done:
            return pages
        assert len(pages) < 200, "the scan never finished"
        state = {"cursor": result.cursor, "examined": result.examined_total, "matched": result.matched_total}


# --- the key browser across the primaries --------------------------------------------------
def test_it_pages_through_every_primary_exactly_once_under_the_budget(viewer_client, cluster_lucia, cluster_keys,
                                                                      redis_cluster, settings):
    settings.KEYSPACE_SCAN_BUDGET = 300
    settings.KEYSPACE_PAGE_SIZE = 40
    filler = {f"lucia:rate:{i}".encode(): b"1" for i in range(3000)}
    planted = {f"lucia:focus:{i}".encode(): b"1" for i in range(150)}
    cluster_keys.mset_nonatomic({**filler, **planted})
    assert {port_of(cluster_keys, key) for key in planted} == set(redis_cluster.ports)
    ports = redis_cluster.ports
    reset_stats(ports)

    pages = follow(viewer_client, prefix="lucia:focus:")
    seen = [row.key for _response, result in pages for row in result.rows]
    assert len(seen) == len(set(seen)) == len(planted) and set(seen) == set(planted)  # every key exactly once
    scans = calls(ports, "scan")
    assert sum(scans.values()) == sum(result.calls for _r, result in pages)
    assert all(count > 0 for count in scans.values())  # each primary scanned through its own client
    for response, result in pages:
        assert result.examined <= 300 and result.primaries == 3
        assert (result.dbsize, result.dbsize_note) == (3150, "")  # DBSIZE summed over the primaries
    for response, result in pages[:-1]:
        assert not result.done and isinstance(result.cursor, str) and result.cursor.startswith("k")
        body = response.content.decode()
        assert "scan complete" not in body and 'data-testid="continue"' in body
        assert f"of {result.primaries} complete)" in body
    last_response, last = pages[-1]
    assert last.cursor == 0 and last.scanned == 3
    body = last_response.content.decode()
    assert "across 3 primaries (3 of 3 complete) — scan complete" in body and 'data-testid="continue"' not in body
    assert last.examined_total == sum(result.examined for _r, result in pages)
    assert last.matched_total == 150
    # The continuation rides in htmx too: the region alone, same cursor semantics.
    fragment = viewer_client.get(browse_url(prefix="lucia:focus:"), headers={"HX-Request": "true"})
    assert fragment.content.decode().lstrip().startswith('<div id="results"')


def test_it_never_shows_more_keys_examined_than_the_cluster_holds(viewer_client, cluster_lucia, cluster_keys,
                                                                  redis_cluster, settings):
    settings.KEYSPACE_SCAN_BUDGET = 900
    planted = {f"lucia:focus:{i}".encode(): b"1" for i in range(60)}
    cluster_keys.mset_nonatomic(planted)
    assert {port_of(cluster_keys, key) for key in planted} == set(redis_cluster.ports)

    pages = follow(viewer_client, prefix="lucia:focus:")
    response, last = pages[-1]
    assert last.done and last.dbsize == 60 and last.matched_total == 60
    assert last.examined_total > 60  # the COUNT hints spent: one per primary's SCAN call, whatever it held
    body = response.content.decode()
    assert "examined ~60 of ~60 keys, 60 matched across 3 primaries (3 of 3 complete) — scan complete" in body


def test_it_reads_metadata_with_one_pipeline_per_primary_and_no_crossslot_script(viewer_client, cluster_lucia,
                                                                                cluster_keys, redis_cluster):
    keys = {f"lucia:session:{i}".encode(): b"v" for i in range(60)}
    cluster_keys.mset_nonatomic(keys)
    for key in list(keys)[:20]:
        cluster_keys.expire(key, 900)
    reset_stats(redis_cluster.ports)
    result = viewer_client.get(browse_url(prefix="lucia:session:")).context["result"]
    assert result.done and {row.key for row in result.rows} == set(keys)
    assert sum(row.meta.ttl_ms is not None for row in result.rows) == 20
    assert {row.status.code for row in result.rows if row.meta.ttl_ms is None} == {"no_ttl"}
    per_node = {port: sum(port_of(cluster_keys, key) == port for key in keys) for port in redis_cluster.ports}
    # PTTL, TYPE and MEMORY USAGE once per key, each on its own primary; no script at all.
    assert calls(redis_cluster.ports, "pttl") == per_node == calls(redis_cluster.ports, "type")
    assert calls(redis_cluster.ports, "memory|usage") == per_node
    assert sum(calls(redis_cluster.ports, "evalsha", "evalsha_ro", "eval", "eval_ro").values()) == 0
    assert calls(redis_cluster.ports, "dbsize") == dict.fromkeys(redis_cluster.ports, 1)


def test_it_reuses_its_connections_to_the_primaries_across_requests(viewer_client, cluster_lucia, cluster_keys,
                                                                    redis_cluster):
    cluster_keys.mset_nonatomic({f"lucia:session:{i}".encode(): b"v" for i in range(30)})
    assert len(viewer_client.get(browse_url(prefix="lucia:session:")).context["result"].rows) == 30
    reset_stats(redis_cluster.ports)
    assert len(viewer_client.get(browse_url(prefix="lucia:session:")).context["result"].rows) == 30
    assert all(count > 0 for count in calls(redis_cluster.ports, "scan").values())
    # No new connection (each would name itself with CLIENT SETNAME): no handshake, no TLS setup per page.
    assert calls(redis_cluster.ports, "client|setname") == dict.fromkeys(redis_cluster.ports, 0)


def test_it_finds_and_escapes_odd_keys_on_a_cluster(viewer_client, cluster_lucia, cluster_keys, redis_cluster):
    for name, key in ODD_KEYS.items():
        cluster_keys.set(key, f"value of {name}".encode(), ex=1800)
    cluster_keys.set(b"lucia:session:aXb", b"must not match a*b", ex=1800)
    assert len({port_of(cluster_keys, key) for key in ODD_KEYS.values()}) >= 2
    response = viewer_client.get(browse_url(prefix="lucia:session:"))
    body = response.content.decode()
    assert {row.key for row in response.context["result"].rows} == {*ODD_KEYS.values(), b"lucia:session:aXb"}
    for key in ODD_KEYS.values():
        assert f'data-token="{keyspace.encode_key(key)}"' in body
        assert html.escape(keyspace.display_key(key)) in body
    assert "<script>alert(1)</script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    for name, key in ODD_KEYS.items():
        prefix = "lucia:session:bin" if name == "binary" else key.decode()
        result = viewer_client.get(browse_url(prefix=prefix)).context["result"]
        assert [row.key for row in result.rows] == [key], name
        assert result.done
    glob = viewer_client.get(browse_url(glob="on", pattern="lucia:session:a?b")).context["result"]
    assert {row.key for row in glob.rows} == {b"lucia:session:a*b", b"lucia:session:aXb"}


# --- cursors that cannot continue: a clear 400, never a 500, never echoed ------------------------
def first_cursor(viewer_client, cluster_keys, settings, prefix="lucia:rate:"):
    settings.KEYSPACE_SCAN_BUDGET = 200
    cluster_keys.mset_nonatomic({f"lucia:rate:{i}".encode(): b"1" for i in range(2000)})
    result = viewer_client.get(browse_url(prefix=prefix)).context["result"]
    assert not result.done and result.cursor.startswith("k")
    return result.cursor


def assert_refused(response, message):
    body = response.content.decode()
    assert response.status_code == 400
    assert 'data-testid="cursor-error"' in body and html.escape(message) in body
    assert 'data-testid="key-row"' not in body
    restart = reverse("continuity:browse", args=["lucia"]) + "?"
    assert f'data-testid="restart" href="{restart}' in body and "cursor=" not in body.split('data-testid="restart"')[1][:300]
    return body


@pytest.mark.parametrize("bad", [
    "<script>alert(1)</script>",
    "k" + "A" * 5000,
    "kNOT-SIGNED:abc",
    "-1",
    "k",
    "１２",  # full-width digits: not a SCAN cursor
])
def test_it_answers_400_for_a_malformed_cursor(viewer_client, cluster_lucia, cluster_keys, redis_cluster, bad):
    reset_stats(redis_cluster.ports)
    for headers in ({}, {"HX-Request": "true"}):
        response = viewer_client.get(browse_url(prefix="lucia:rate:", cursor=bad), headers=headers)
        body = assert_refused(response, primaries.MALFORMED)
        assert bad not in body or bad in ("-1", "k")
        assert "<script>alert(1)</script>" not in body
    assert calls(redis_cluster.ports, *READS) == dict.fromkeys(redis_cluster.ports, 0)


def test_it_answers_400_for_a_tampered_or_foreign_cursor(viewer_client, cluster_lucia, cluster_keys, redis_cluster,
                                                          settings):
    cursor = first_cursor(viewer_client, cluster_keys, settings)
    payload, _, signature = cursor.rpartition(":")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    reset_stats(redis_cluster.ports)
    assert_refused(viewer_client.get(browse_url(prefix="lucia:rate:", cursor=f"{flipped}:{signature}")),
                   primaries.MALFORMED)
    assert_refused(viewer_client.get(browse_url(prefix="lucia:rate:", cursor=cursor[:-2])), primaries.MALFORMED)
    assert_refused(viewer_client.get(browse_url(prefix="lucia:focus:", cursor=cursor)),
                   "This cursor belongs to another scan (another database, prefix, glob or type filter).")
    assert_refused(viewer_client.get(browse_url(prefix="lucia:rate:", type="hash", cursor=cursor)),
                   "This cursor belongs to another scan")
    assert_refused(viewer_client.get(browse_url(prefix="lucia:rate:", cursor="12345")),
                   "This cursor is a single server's SCAN cursor, but lucia is a Redis Cluster")
    assert calls(redis_cluster.ports, *READS) == dict.fromkeys(redis_cluster.ports, 0)
    # The cursor itself still works.
    assert viewer_client.get(browse_url(prefix="lucia:rate:", cursor=cursor)).status_code == 200


def test_it_refuses_a_cursor_issued_under_other_primaries(viewer_client, cluster_lucia, cluster_keys, redis_cluster,
                                                          settings):
    first_cursor(viewer_client, cluster_keys, settings)
    now = keyspace.cluster.slot_map(keyspace.client_for(cluster_lucia))
    old = keyspace.cluster.SlotMap(addresses=(*now.addresses[:2], "10.9.9.9:7000"), ranges=now.ranges)
    scope = primaries.scan_scope(keyspace.match_pattern(b"lucia:rate:"), None)
    cursor = primaries.issue_cursor(cluster_lucia, scope, old, 1, 77)
    body = assert_refused(viewer_client.get(browse_url(prefix="lucia:rate:", cursor=cursor),
                                            headers={"HX-Request": "true"}),
                          f"The primaries of lucia changed since this scan started (then: {', '.join(old.addresses)}; "
                          f"now: {', '.join(now.addresses)}).")
    assert "<html" not in body and "start the scan again" in body


def test_it_refuses_a_cursor_after_a_real_slot_move(viewer_client, lucia, disposable_cluster, monkeypatch, settings):
    point_at(lucia, monkeypatch, disposable_cluster)
    with redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0]) as writer:
        writer.mset_nonatomic({f"lucia:rate:{i}".encode(): b"1" for i in range(2000)})
    settings.KEYSPACE_SCAN_BUDGET = 200
    cursor = viewer_client.get(browse_url(prefix="lucia:rate:")).context["result"].cursor
    assert cursor.startswith("k")
    # Move one empty slot to another primary (a resharding step), told to every node.
    nodes = [redis.Redis(port=port) for port in disposable_cluster.ports]
    ids = [node.execute_command("CLUSTER", "MYID").decode() for node in nodes]
    owned = keyspace.cluster.cluster_nodes(nodes[0])
    source = next(n for n in owned if n.node_id == ids[0])
    slot = next(s for first, last in source.slots for s in range(first, last + 1)
                if nodes[0].execute_command("CLUSTER", "COUNTKEYSINSLOT", s) == 0)
    for node in nodes:
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[1])
    assert_refused(viewer_client.get(browse_url(prefix="lucia:rate:", cursor=cursor)),
                   "The slot assignment of lucia's primaries changed since this scan started")
    restarted = follow(viewer_client, prefix="lucia:rate:")  # starting again works and finds every key
    assert sum(len(result.rows) for _r, result in restarted) == 2000
    for node in nodes:
        node.close()


def test_it_names_primaries_by_a_hash_where_their_addresses_would_make_long_links(lucia):
    def many(suffix):
        addresses = tuple(f"node-{i}.{suffix}.cache.example.internal:6379" for i in range(60))
        return keyspace.cluster.SlotMap(addresses=addresses, ranges=tuple((i, i, a) for i, a in enumerate(addresses)))

    nodes = many("a")
    cursor = primaries.issue_cursor(lucia, "scope", nodes, 41, 1234)
    assert len(cursor) < 400 and primaries.read_cursor(lucia, "scope", nodes, cursor) == (41, 1234)
    with pytest.raises(primaries.StaleCursor) as changed:
        primaries.read_cursor(lucia, "scope", many("b"), cursor)
    assert str(changed.value) == ("The primaries of lucia changed since this scan started. Continuing could skip "
                                  "keys or show some twice, so no key was read; start the scan again.")


def test_it_says_which_primary_refused_dbsize(viewer_client, lucia, cluster_keys, redis_cluster, monkeypatch):
    refusing = redis_cluster.ports[2]
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            node.execute_command("ACL", "SETUSER", "nodbsize", "reset", "on", ">pw-for-tests", "~*", "&*", "+@all",
                                 *(["-dbsize"] if port == refusing else []))
    try:
        monkeypatch.setenv("LUCIA_CLUSTER_URL", f"redis://nodbsize:pw-for-tests@127.0.0.1:{redis_cluster.ports[0]}/0")
        type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_CLUSTER_URL")
        cluster_keys.mset_nonatomic({f"lucia:session:{i}".encode(): b"v" for i in range(30)})
        response = viewer_client.get(browse_url(prefix="lucia:session:"))
        result = response.context["result"]
        with redis.Redis(port=refusing) as node:
            elsewhere = 30 - node.dbsize()
        assert result.done and len(result.rows) == 30 and result.dbsize is None
        assert result.dbsize_note == (f"Key count unknown: DBSIZE refused by 127.0.0.1:{refusing} (the primaries "
                                      f"that answered hold {elsewhere:,} keys).")
        assert 'data-testid="dbsize-note"' in response.content.decode() and "of ~? keys" in response.content.decode()
    finally:
        for port in redis_cluster.ports:
            with redis.Redis(port=port) as node:
                node.execute_command("ACL", "DELUSER", "nodbsize")
        keyspace.forget_clients()


def test_it_keeps_standalone_cursors_as_before_and_refuses_a_cluster_cursor_there(viewer_client, lucia, monitored):
    monitored.set(b"lucia:focus:1", b"v", ex=60)
    response = viewer_client.get(browse_url(prefix="lucia:focus:", cursor="0"))
    assert response.status_code == 200 and response.context["result"].done
    body = assert_refused(viewer_client.get(browse_url(prefix="lucia:focus:", cursor="kabc:def")),
                          "This cursor belongs to a scan across a Redis Cluster's primaries, but lucia is a single "
                          "Redis server.")
    assert "kabc" not in body
    assert_refused(viewer_client.get(browse_url(prefix="lucia:focus:", cursor="12", examined="x")),
                   "The scan counts in this link are malformed.")


# --- lookup by id, routed by slot ----------------------------------------------------------
def spread_ident(cluster_keys, ports):
    """An id whose candidate keys in the five namespaces land on all three primaries."""
    prefixes = sorted(ns.prefix for ns in Namespace.objects.filter(database__name="lucia"))
    for i in range(1000):
        ident = f"u{i}"
        owners = {prefix: port_of(cluster_keys, f"{prefix}{ident}".encode()) for prefix in prefixes}
        if set(owners.values()) == set(ports):
            return ident, owners
    raise AssertionError("no id spreads over the three primaries")


def test_it_looks_up_an_id_on_each_primary_without_scan(viewer_client, cluster_lucia, cluster_keys, redis_cluster):
    ident, owners = spread_ident(cluster_keys, redis_cluster.ports)
    planted = {}
    for prefix, port in owners.items():  # one key per primary
        if port not in planted.values():
            planted[f"{prefix}{ident}".encode()] = port
    assert sorted(planted.values()) == sorted(redis_cluster.ports)  # really on three different nodes
    for key, port in planted.items():
        cluster_keys.set(key, b"v", ex=600)
        with redis.Redis(port=port) as node:
            assert node.exists(key) == 1
    reset_stats(redis_cluster.ports)
    url = reverse("continuity:key_lookup", args=["lucia"]) + f"?id={ident}"
    body = viewer_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "3 of 5 namespaces hold a key" in body and body.count('data-testid="key-row"') == 3
    assert "<html" not in body
    assert calls(redis_cluster.ports, "scan") == dict.fromkeys(redis_cluster.ports, 0)
    asked = {port: sum(owner == port for owner in owners.values()) for port in redis_cluster.ports}
    assert calls(redis_cluster.ports, "pttl") == asked  # each candidate asked once, on its own primary
    lookup = viewer_client.get(url).context["lookup"]
    assert {row.key for row in lookup.rows} == set(planted)
    assert len(lookup.missing) == 2 and lookup.unread == []


def test_it_follows_a_moved_slot_once_during_a_lookup(lucia, disposable_cluster, monkeypatch):
    point_at(lucia, monkeypatch, disposable_cluster)
    client = keyspace.client_for(lucia)
    stale = keyspace.cluster.slot_map(client)
    key = b"lucia:session:moved-1"
    nodes = {port: redis.Redis(port=port) for port in disposable_cluster.ports}
    slot = key_slot(key)
    source = int(stale.owner(key).rpartition(":")[2])
    target = next(port for port in disposable_cluster.ports if port != source)
    target_id = nodes[target].execute_command("CLUSTER", "MYID").decode()
    for node in nodes.values():
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    nodes[target].set(key, b"v", ex=600)
    with pytest.raises(redis.exceptions.MovedError):
        nodes[source].pttl(key)  # the old owner now redirects
    policies = Namespace.objects.for_database(lucia).policies()
    result = keyspace.lookup_id(lucia, b"moved-1", policies, nodes=stale)
    assert [row.key for row in result.rows] == [key] and result.unread == []
    # The browser's metadata step too: a key its SCAN found on the old owner is read on the new one.
    metas = primaries.metadata_by_node(lucia, client, {f"127.0.0.1:{source}": [key]})
    assert [(m.key, m.type) for m in metas] == [(key, "string")] and 0 < metas[0].ttl_ms <= 600_000
    for node in nodes.values():
        node.close()


# --- the key detail page and key actions on a primary the URL does not name ------------------
def test_it_opens_and_acts_on_a_key_of_another_primary_with_audit(viewer_client, operator_client, cluster_lucia,
                                                                  cluster_keys, redis_cluster):
    Namespace.objects.filter(database=cluster_lucia).update(sensitive=False)  # values shown: test_sensitive_values.py
    key = next(k for k in (f"lucia:session:far-{i}".encode() for i in range(200))
               if port_of(cluster_keys, k) != redis_cluster.ports[0])
    cluster_keys.set(key, b'{"user": "<b>ann</b>"}')
    viewer_client.get(detail_url(key))  # the router starts once per URL (CLUSTER SLOTS, COMMAND)
    reset_stats(redis_cluster.ports)
    page = viewer_client.get(detail_url(key))
    # Routed by the key's slot, script calls included: no COMMAND GETKEYS round trip.
    assert calls(redis_cluster.ports, "command|getkeys") == dict.fromkeys(redis_cluster.ports, 0)
    assert calls(redis_cluster.ports, "evalsha_ro")[port_of(cluster_keys, key)] == 1
    preview = page.context["preview"]
    body = page.content.decode()
    assert page.status_code == 200 and page.context["error"] is None
    assert preview.meta.exists and preview.meta.type == "string" and preview.meta.ttl_ms is None
    assert "&lt;b&gt;ann&lt;/b&gt;" in body and "<b>ann</b>" not in body
    # The page says where the key lives: its slot, and the primary that answered for it
    # (checked against the node itself: only the owner holds the key).
    owner = port_of(cluster_keys, key)
    with redis.Redis(port=owner) as node:
        assert node.exists(key) == 1 and node.execute_command("CLUSTER", "KEYSLOT", key) == preview.slot
    assert preview.node == f"127.0.0.1:{owner}"
    assert f'data-testid="node">127.0.0.1:{owner} <span class="has-text-grey">(hash slot {preview.slot})' in body
    download = viewer_client.get(reverse("continuity:key_download", args=["lucia", keyspace.encode_key(key)]))
    assert download.status_code == 200 and download.content == b'{"user": "<b>ann</b>"}'

    response = operator_client.post(reverse("continuity:key_action", args=["lucia", keyspace.encode_key(key)]),
                                    {"action": "set_ttl", "seconds": "600"}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and 'data-testid="outcome">Set TTL: done.' in response.content.decode()
    with redis.Redis(port=port_of(cluster_keys, key)) as owner:
        assert 590_000 < owner.pttl(key) <= 600_000
    entry = AuditEntry.objects.get(action="key.set_ttl")
    assert entry.target_id == keyspace.encode_key(key) and entry.target_label == f"lucia: {keyspace.display_key(key)}"
    assert entry.before["ttl_ms"] is None and 590_000 < entry.after["ttl_ms"] <= 600_000 and entry.after["applied"]

    response = operator_client.post(reverse("continuity:key_action", args=["lucia", keyspace.encode_key(key)]),
                                    {"action": "delete"})
    assert response.status_code == 302 and cluster_keys.exists(key) == 0
    assert AuditEntry.objects.filter(action="key.delete", target_id=keyspace.encode_key(key)).count() == 1
    assert viewer_client.post(reverse("continuity:key_action", args=["lucia", keyspace.encode_key(key)]),
                              {"action": "delete"}).status_code == 403


def test_it_previews_every_kind_of_value_on_another_primary_bounded(cluster_lucia, cluster_keys, redis_cluster):
    # The key detail's pipelines, routed to the key's primary: the same bounded reads as on one server.
    far = (k for k in (f"lucia:cache:kind-{i}".encode() for i in range(500))
           if port_of(cluster_keys, k) != redis_cluster.ports[0])
    hash_key, set_key, list_key, zset_key, stream_key, gone = (next(far) for _ in range(6))
    cluster_keys.hset(hash_key, mapping={f"f{i}": f"v{i}" for i in range(300)})
    cluster_keys.sadd(set_key, *(f"m{i}" for i in range(300)))
    cluster_keys.rpush(list_key, *(f"e{i}" for i in range(150)))
    cluster_keys.zadd(zset_key, {f"z{i}": i for i in range(3)})
    for i in range(25):
        cluster_keys.xadd(stream_key, {"n": str(i)}, id=f"1-{i + 1}")
    shown = {key: keyspace.preview_key(cluster_lucia, key) for key in (hash_key, set_key, list_key, zset_key,
                                                                      stream_key, gone)}
    assert [(p.meta.type, p.length, p.shown, p.truncated) for p in shown.values()] == [
        ("hash", 300, 100, True), ("set", 300, 100, True), ("list", 150, 100, True), ("zset", 3, 3, False),
        ("stream", 25, 20, True), (None, None, 0, False)]
    assert shown[zset_key].items == [("z0", "0"), ("z1", "1"), ("z2", "2")]
    assert shown[stream_key].items[0] == ("1-1", "n=0") and shown[list_key].items[99] == ("99", "e99")
    assert {p.node for p in shown.values()} <= {f"127.0.0.1:{port}" for port in redis_cluster.ports[1:]}
    assert all(p.slot == key_slot(key) for key, p in shown.items())
    withheld = keyspace.preview_key(cluster_lucia, hash_key, values=False)
    encoding = cluster_keys.object("encoding", hash_key).decode()
    assert (withheld.withheld, withheld.length, withheld.items, withheld.encoding) == (True, 300, [], encoding)
    assert encoding in ("listpack", "hashtable")


# --- the overview: the sample and the header across the primaries ------------------------------
def test_it_samples_the_namespaces_of_every_primary(viewer_client, cluster_lucia, cluster_keys, redis_cluster,
                                                    settings):
    cluster_keys.mset_nonatomic({f"lucia:session:{i}".encode(): b"v" for i in range(300)})
    for i in range(120):
        cluster_keys.set(f"lucia:focus:{i}".encode(), b"v", ex=600)
    cluster_keys.set(b"lucia:stray:1", b"v")
    reset_stats(redis_cluster.ports)
    response = viewer_client.get(reverse("continuity:namespace_stats", args=["lucia"]),
                                 headers={"HX-Request": "true"})
    sample = response.context["sample"]
    assert response.status_code == 200 and sample.complete and sample.notes == ()
    assert (sample.sampled, sample.dbsize) == (421, 421)
    assert (sample.figures["session"].keys, sample.figures["session"].without_ttl) == (300, 300)
    assert (sample.figures["focus"].keys, sample.figures["focus"].without_ttl) == (120, 0)
    assert sample.figures[""].keys == 1
    assert "Exact figures: the whole prefix was scanned (421 keys)." in response.content.decode()
    assert all(count > 0 for count in calls(redis_cluster.ports, "scan").values())

    settings.KEYSPACE_SCAN_BUDGET = 30  # 10 per primary: a sample, not exact
    small = keyspace.sample_keyspace(cluster_lucia, Policies.of(list(Namespace.objects.for_database(cluster_lucia))))
    assert not small.complete and 0 < small.sampled < 421 and small.examined <= 30 + 3

    summary = keyspace.server_summary(cluster_lucia)
    assert (summary.dbsize, summary.keys_without_ttl, summary.primaries, summary.note) == (421, 301, 3, "")
    header = viewer_client.get(reverse("continuity:database_summary", args=["lucia"]), headers={"HX-Request": "true"})
    body = header.content.decode()
    assert '<p class="heading">Keys</p><p class="title is-4">421</p>' in body
    assert "Redis Cluster: sums over 3 primaries." in body


# --- a primary killed ------------------------------------------------------------------------
def set_node_timeout(ports, ms):
    for port in ports:
        with redis.Redis(port=port) as node:
            node.config_set("cluster-node-timeout", ms)


def test_it_names_a_killed_primary_and_never_calls_a_partial_page_complete(viewer_client, operator_client, lucia,
                                                                           disposable_cluster, monkeypatch):
    with redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0]) as writer:
        keys = [f"lucia:session:{i}".encode() for i in range(90)]
        writer.mset_nonatomic(dict.fromkeys(keys, b"v"))
        owner = {key: port_of(writer, key) for key in keys}
    addresses = sorted(f"127.0.0.1:{port}" for port in disposable_cluster.ports)
    dead_address = addresses[1]  # the middle one in scan order: the first primary is read, the third never
    dead_port = int(dead_address.rpartition(":")[2])
    first_port = int(addresses[0].rpartition(":")[2])
    point_at(lucia, monkeypatch, disposable_cluster, disposable_cluster.ports.index(first_port))  # the URL's node lives
    survivors = [port for port in disposable_cluster.ports if port != dead_port]
    set_node_timeout(survivors, 120_000)  # the node is dead, but the cluster does not agree yet
    disposable_cluster.kill(disposable_cluster.ports.index(dead_port))

    for _attempt in range(2):  # continuing retries the dead primary, and stops there again
        response = viewer_client.get(browse_url(prefix="lucia:session:"))
        result = response.context["result"]
        body = html.unescape(response.content.decode())
        assert response.status_code == 200 and not result.done and result.stopped == dead_address
        assert f"Primary {dead_address} of lucia did not answer (Redis is unreachable" in body
        assert "The scan stopped at this primary: this page is not the whole keyspace" in body
        assert "scan complete" not in body and f"Retry {dead_address} and continue" in body
        assert {row.key for row in result.rows} == {k for k in keys if owner[k] == first_port}
        assert result.dbsize is None and f"no answer from {dead_address}" in result.dbsize_note
        state = {"cursor": result.cursor, "examined": result.examined_total, "matched": result.matched_total}
        again = viewer_client.get(browse_url(prefix="lucia:session:", **state)).context["result"]
        assert again.stopped == dead_address and again.rows == [] and not again.done

    # Lookup: a candidate on the dead primary is "not read", never "absent".
    on_dead = next(k for k in keys if owner[k] == dead_port).decode().removeprefix("lucia:session:")
    lookup = viewer_client.get(reverse("continuity:key_lookup", args=["lucia"]) + f"?id={on_dead}")
    found = lookup.context["lookup"]
    assert lookup.status_code == 200 and f"lucia:session:{on_dead}".encode() in [key for _ns, key, _w in found.unread]
    assert all(f"primary {dead_address} did not answer" in why for _ns, _key, why in found.unread)
    assert found.rows == [] and len(found.missing) + len(found.unread) == 5
    assert 'data-testid="lookup-unread"' in lookup.content.decode()
    # The key detail page of a key on the dead primary: the failure in its region, not a 500.
    detail = viewer_client.get(detail_url(f"lucia:session:{on_dead}".encode()))
    assert detail.status_code == 200 and str(dead_port) in detail.context["error"]
    # A key on a live primary the URL does not name still opens, and an action on it (a script the
    # cluster has never loaded) works: neither routing nor SCRIPT LOAD depends on the dead primary.
    last_port = int(addresses[2].rpartition(":")[2])
    live = next(k for k in keys if owner[k] == last_port)
    for _attempt in range(3):
        detail = viewer_client.get(detail_url(live))
        assert detail.context["error"] is None and detail.context["preview"].meta.exists
    with redis.Redis(port=last_port) as node:
        node.expire(live, 100)
        assert node.script_exists(keyspace.actions.EXTEND_SHA) == [False]
    response = operator_client.post(reverse("continuity:key_action", args=["lucia", keyspace.encode_key(live)]),
                                    {"action": "extend_ttl", "seconds": "50"}, headers={"HX-Request": "true"})
    assert 'data-testid="outcome">Extend TTL: done.' in response.content.decode()
    with redis.Redis(port=last_port) as node:
        assert 140_000 < node.pttl(live) <= 150_000
    # The overview's sample and header name it and are never exact.
    stats = viewer_client.get(reverse("continuity:namespace_stats", args=["lucia"]), headers={"HX-Request": "true"})
    sample = stats.context["sample"]
    assert not sample.complete and sample.dbsize is None
    assert sample.notes[0].startswith(f"Primary {dead_address} of lucia did not answer")
    assert sample.sampled == sum(owner[k] != dead_port for k in keys)
    assert "Exact figures" not in stats.content.decode()
    summary = keyspace.server_summary(lucia)
    assert summary.dbsize is None and summary.note == (f"Sums over 3 primaries, unknown where one is missing: "
                                                       f"no answer from {dead_address}.")
    header = viewer_client.get(reverse("continuity:database_summary", args=["lucia"]), headers={"HX-Request": "true"})
    assert header.status_code == 200 and summary.note in header.content.decode()

    # Once the other primaries agree it failed, they refuse key reads (CLUSTERDOWN): every page says so.
    alive = disposable_cluster.ports.index(first_port)
    set_node_timeout(survivors, 500)
    wait_for(lambda: disposable_cluster.cluster_info(alive).get("cluster_state") == "fail", 30, "cluster_state:fail")
    down = ("The Redis Cluster is down (CLUSTERDOWN): a primary failed and its slots have no owner, so the nodes "
            "refuse to read keys until the cluster recovers.")
    for url in (browse_url(prefix="lucia:session:"), detail_url(next(k for k in keys if owner[k] == first_port)),
                reverse("continuity:namespace_stats", args=["lucia"])):
        response = viewer_client.get(url)
        body = response.content.decode()
        assert response.status_code == 200 and down in body, (url, response.context and response.context.get("error"))
        assert "scan complete" not in body and "Exact figures" not in body


# --- least privilege on a cluster --------------------------------------------------------------
def cluster_additions():
    """The "Cluster additions" of docs/redis-acl.md, as ACL rules."""
    import re
    from pathlib import Path

    from django.conf import settings

    text = (Path(settings.BASE_DIR) / "docs" / "redis-acl.md").read_text()
    return re.search(r"^Cluster additions: `([^`]+)`$", text, re.M).group(1).split()


@pytest.fixture
def documented_cluster_users(redis_cluster, cluster_keys):
    """The documented browse and purge users plus the cluster additions, on every node."""
    from continuity.tests.test_least_privilege import documented_acl_lines

    lines = documented_acl_lines()
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            for words in lines.values():
                node.execute_command("ACL", "SETUSER", *words, *cluster_additions())
    urls = {}
    for user in lines:
        password = next(w[1:] for w in lines[user] if w.startswith(">"))
        urls[user] = f"redis://{user}:{password}@127.0.0.1:{redis_cluster.ports[0]}/0"
    keyspace.forget_clients()
    yield urls
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            for user in lines:
                node.execute_command("ACL", "DELUSER", user)
    keyspace.forget_clients()


def test_it_browses_looks_up_and_acts_with_the_documented_users_on_a_cluster(
        documented_cluster_users, viewer_client, operator_client, lucia, cluster_keys, redis_cluster, monkeypatch):
    monkeypatch.setenv("LUCIA_BROWSE_URL", documented_cluster_users["continuity-browse"])
    monkeypatch.setenv("LUCIA_CLUSTER_URL", documented_cluster_users["continuity-purge"])
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_CLUSTER_URL", readonly_url_env="LUCIA_BROWSE_URL")
    keys = {f"lucia:session:{i}".encode(): b"v" for i in range(30)}
    cluster_keys.mset_nonatomic(keys)
    reset_stats(redis_cluster.ports)
    result = viewer_client.get(browse_url(prefix="lucia:session:")).context["result"]
    assert result.done and {row.key for row in result.rows} == set(keys) and result.notes == ()
    assert result.dbsize == 30 and all(row.meta.memory for row in result.rows)
    lookup = viewer_client.get(reverse("continuity:key_lookup", args=["lucia"]) + "?id=7").context["lookup"]
    assert [row.key for row in lookup.rows] == [b"lucia:session:7"] and lookup.unread == []
    far = next(k for k in keys if port_of(cluster_keys, k) != redis_cluster.ports[0])
    page = viewer_client.get(detail_url(far))
    assert page.context["error"] is None and page.context["preview"].meta.exists
    response = operator_client.post(reverse("continuity:key_action", args=["lucia", keyspace.encode_key(far)]),
                                    {"action": "extend_ttl", "seconds": "60"})
    assert response.status_code == 302 and 0 < cluster_keys.pttl(far) <= 60_000
    refused = {}
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            refused.update({name: row["rejected_calls"] for name, row in node.info("commandstats").items()
                            if row.get("rejected_calls")})
    assert refused == {}

