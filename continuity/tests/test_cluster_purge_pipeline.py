"""A cluster purge sends a page's slot-group script calls to a node in one pipeline round
trip, on a real local 3-primary cluster: round trips counted on the wire (every request
redis-py writes, per node), a SCRIPT FLUSH between pages (the NOSCRIPT calls redone after
one SCRIPT LOAD), and a real slot migration answering MOVED inside a pipeline (the calls
that succeeded around it counted exactly, the run failed naming the slot)."""

import pytest
import redis
from redis.connection import AbstractConnection
from redis.crc import key_slot

from continuity.keyspace import cluster as keyspace_cluster
from continuity.operations import purge
from continuity.operations.purge import cluster as purge_cluster
from continuity.tests.test_cluster import acl_user, cluster_lucia  # noqa: F401 — the fixtures
from continuity.tests.test_cluster_purge import confirmed, per_node, planted, write
from continuity.tests.test_cluster_purge_kinds import flush_scripts, stats
from continuity.tests.test_cluster_purge_topology import migrate
from continuity.tests.test_review import billed_delta
from dashboard.models import AuditEntry


@pytest.fixture
def wire(monkeypatch):
    """{host:port: [(names, script calls)]}: every request redis-py writes to a server, one
    entry per write of packed commands (a single command, or a whole pipeline): b"EVALSHA"
    when it carries script calls (EVALSHA or EVALSHA_RO), SCAN, SCRIPT, and how many script
    calls. It wraps the real method: the bytes still go to the server."""
    sent = {}
    original = AbstractConnection.send_packed_command

    def send_packed_command(self, command, check_health=True):
        packed = command if isinstance(command, (bytes, str)) else b"".join(bytes(part) for part in command)
        packed = packed.encode() if isinstance(packed, str) else packed
        scripts = packed.count(b"\r\nEVALSHA\r\n") + packed.count(b"\r\nEVALSHA_RO\r\n")
        names = [name for name in (b"SCAN", b"SCRIPT") if b"\r\n" + name + b"\r\n" in packed]
        sent.setdefault(f"{self.host}:{self.port}", []).append((([b"EVALSHA"] if scripts else []) + names, scripts))
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    return sent


def evalsha(before, after, address, figure="calls"):
    return (after[address].get("cmdstat_evalsha", {}).get(figure, 0)
            - before[address].get("cmdstat_evalsha", {}).get(figure, 0))


def test_it_sends_a_page_s_script_calls_to_a_node_in_one_round_trip(
        cluster_lucia, cluster_keys, redis_cluster, operator, wire):  # noqa: F811
    ports = redis_cluster.ports
    write(cluster_keys, sessions=3000)
    planted = {address: len(keys) for address, keys in per_node(ports, "lucia:session:*").items()}
    _, run = confirmed(cluster_lucia, operator)
    type(run).objects.filter(pk=run.pk).update(batch_size=400)
    flush_scripts(ports)
    before = stats(ports)
    wire.clear()
    result = purge.execute_purge(run_id=run.pk)
    after = stats(ports)
    run.refresh_from_db()
    assert (result.status, run.matched, run.done, run.skipped) == ("succeeded", 3000, 3000, 0)
    assert per_node(ports, "lucia:session:*") == dict.fromkeys(planted, [])
    assert {address: row["done"] for address, row in run.node_stats.items()} == planted
    total_calls = 0
    for address in planted:
        scans = after[address]["cmdstat_scan"]["calls"] - before[address].get("cmdstat_scan", {}).get("calls", 0)
        calls = evalsha(before, after, address)  # every script call the node ran, NOSCRIPT included
        total_calls += calls
        script_trips = [count for names, count in wire[address] if b"EVALSHA" in names]
        # One script call per slot group (about one per key): hundreds on each node ...
        assert calls > 500 and sum(script_trips) == calls
        # ... in one round trip per page, plus the first group alone (a fresh node: NOSCRIPT,
        # SCRIPT LOAD, again) to learn the script runs here before pipelining the rest.
        assert script_trips[:2] == [1, 1] and len(script_trips) <= scans + 2
        assert max(script_trips) <= 400  # a page's groups at most (PIPELINE_CALLS caps it too)
        # Billed exactly as before: each node's figure is its commandstats delta.
        assert run.node_stats[address]["billed"] == billed_delta(before[address], after[address])
    assert total_calls == run.batches + len(ports)  # each group once, and one NOSCRIPT per fresh node
    assert run.billed_commands == sum(row["billed"] for row in run.node_stats.values())


def test_it_loads_the_script_again_after_a_script_flush_between_pages(
        cluster_lucia, cluster_keys, redis_cluster, operator, wire):  # noqa: F811
    ports = redis_cluster.ports
    write(cluster_keys, sessions=3000, focus=100)
    planted = {address: len(keys) for address, keys in per_node(ports, "lucia:session:*").items()}
    flushed = sorted(planted)[0]  # the first primary the purge walks
    _, run = confirmed(cluster_lucia, operator)
    type(run).objects.filter(pk=run.pk).update(batch_size=200)
    flush_scripts(ports)
    pages = []

    def flush_once(checkpointed):
        pages.append(checkpointed.node_cursors.get(flushed))
        if len(pages) == 1:  # after its first page, before the next: SCRIPT FLUSH on that node
            with redis.Redis.from_url(f"redis://{flushed}") as node:
                node.script_flush()

    before = stats(ports)
    wire.clear()
    result = purge.execute_purge(run_id=run.pk, progress=flush_once)
    after = stats(ports)
    run.refresh_from_db()
    assert pages[0] not in ("0", "end") and pages[1] not in ("0", pages[0])  # a later page of that node followed
    assert (result.status, run.matched, run.done, run.skipped) == ("succeeded", 3000, 3000, 0)
    assert per_node(ports, "lucia:session:*") == dict.fromkeys(planted, [])
    assert sum(len(keys) for keys in per_node(ports, "lucia:focus:*").values()) == 100
    loads = {address: after[address]["cmdstat_script|load"]["calls"]
             - before[address].get("cmdstat_script|load", {}).get("calls", 0) for address in planted}
    assert loads == {address: 2 if address == flushed else 1 for address in planted}
    noscript = {address: evalsha(before, after, address, "failed_calls") for address in planted}
    # The page after the flush: every call of its pipeline answered NOSCRIPT and was redone
    # once, after one SCRIPT LOAD (a second pipeline, not a call per group).
    assert noscript[flushed] > 20 and all(noscript[address] == 1 for address in planted if address != flushed)
    redone = [count for names, count in wire[flushed] if b"EVALSHA" in names]
    assert noscript[flushed] - 1 in redone and redone.count(noscript[flushed] - 1) >= 2
    assert sum(evalsha(before, after, address) for address in planted) == run.batches + sum(noscript.values())
    # Billed exactly: each node's figure is its commandstats delta, the test's SCRIPT FLUSH left out.
    billed = {address: billed_delta(before[address], after[address]) - (address == flushed) for address in planted}
    assert {address: row["billed"] for address, row in run.node_stats.items()} == billed


def test_it_counts_the_calls_around_a_moved_answer_inside_a_pipeline_and_fails(
        lucia, disposable_cluster, monkeypatch, operator):
    """A finding purge sends each owner its page's slot groups in one pipeline; a slot that
    moved answers MOVED inside it while the calls before and after it succeed: those are
    counted exactly, and the run fails naming the slot, never succeeded."""
    ports = disposable_cluster.ports
    keys = planted(lucia, monkeypatch, disposable_cluster)
    with redis.Redis(port=ports[0]) as node:
        layout = keyspace_cluster.slot_map(node)
    page = keys[100:150]  # the third stored page (batch size 50)
    moving = page[25]
    slot, source = key_slot(moving), layout.owner_of(key_slot(moving))
    target = next(address for address in sorted(layout.owners) if address != source)
    on_source = [key for key in page if layout.owner_of(key_slot(key)) == source and key_slot(key) != slot]
    before_it = [key for key in on_source if page.index(key) < 25]
    after_it = [key for key in on_source if page.index(key) > 25]
    assert before_it and after_it  # the moved slot's call sits inside that node's pipeline
    preview = purge.preview_purge(database=lucia, kind="finding", finding="no_ttl", keys=keys, actor=operator,
                                  batch_size=50)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="r", actor=operator,
                              source="cli")
    checkpoints, moved = [], []

    def reshard(checkpointed):
        checkpoints.append(checkpointed.cursor)
        if len(checkpoints) == 2:  # after the second page: the slot moves before the third is acted on
            moved.extend(migrate(ports, slot, source, target, complete=True))

    before = stats(ports)
    with pytest.raises(purge.PurgeRefused) as stopped:
        purge.execute_purge(run_id=run.pk, progress=reshard)
    after = stats(ports)
    run.refresh_from_db()
    assert checkpoints == ["50", "100"] and moving in moved
    assert run.status == "failed" and "succeeded" not in run.error
    assert f"slot {slot} is served by {target} now ({source} answered MOVED)" in run.error == str(stopped.value)
    left = {key for found in per_node(ports, "lucia:session:*").values() for key in found}
    assert set(moved) <= left and not (set(before_it) | set(after_it)) & left  # both sides of it were acted on
    assert set(keys[:100]).isdisjoint(left) and set(keys[150:]) <= left  # pages before: done; after: not reached
    # Exact counts of what was done, per node and in all; the refused call is billed by nobody.
    assert run.done == 600 - len(left) and sum(row["done"] for row in run.node_stats.values()) == run.done
    resharding = sum(after[source].get(f"cmdstat_{name}", {}).get("calls", 0)
                     - before[source].get(f"cmdstat_{name}", {}).get("calls", 0)
                     for name in ("cluster|myid", "cluster|setslot", "cluster|getkeysinslot", "migrate"))
    assert resharding == 5  # the test's own: MYID, SETSLOT MIGRATING, GETKEYSINSLOT, MIGRATE, SETSLOT NODE
    assert run.node_stats[source]["billed"] == billed_delta(before[source], after[source]) - resharding
    assert AuditEntry.objects.filter(action="purge.fail", target_id=str(run.pk)).count() == 1
    assert purge.execute_purge(run_id=run.pk).status == "failed"


def test_it_previews_a_ttl_repair_with_a_page_s_script_calls_in_one_round_trip(
        cluster_lucia, cluster_keys, redis_cluster, operator, wire):  # noqa: F811
    ports = redis_cluster.ports
    write(cluster_keys, sessions=2000)
    pipe = cluster_keys.pipeline()
    for i in range(1000):
        pipe.set(f"lucia:session:short:{i}".encode(), b"v", ex=600)  # within the policy: not actionable
    pipe.execute()
    flush_scripts(ports)
    before = stats(ports)
    wire.clear()
    preview = purge.preview_purge(database=cluster_lucia, kind="prefix", value=b"lucia:session:", action="expire",
                                  actor=operator, batch_size=400)
    after = stats(ports)
    assert (preview.matched, preview.actionable) == (3000, 2000)
    calls = scans_all = 0
    for port in ports:
        address = f"127.0.0.1:{port}"
        ro = {figure: after[address]["cmdstat_evalsha_ro"][figure]
              - before[address].get("cmdstat_evalsha_ro", {}).get(figure, 0) for figure in ("calls", "failed_calls")}
        scans = after[address]["cmdstat_scan"]["calls"] - before[address].get("cmdstat_scan", {}).get("calls", 0)
        script_trips = [count for names, count in wire[address] if b"EVALSHA" in names]
        assert ro["calls"] > 300 and ro["failed_calls"] == 1  # a count: EVALSHA_RO; one NOSCRIPT per fresh node
        assert sum(script_trips) == ro["calls"] and len(script_trips) <= scans + 2
        calls, scans_all = calls + ro["calls"] - 1, scans_all + scans
    # One call per slot group, as the execution's estimate counts them (+ the CLUSTER NODES checks).
    assert calls == preview.estimated_commands - scans_all - purge_cluster.layout_checks(len(ports))
    # Billed as before: the commandstats delta, less what the preview does not count as its
    # own (the DBSIZE per primary and the cluster detection's CLUSTER NODES, besides the one it counts).
    def delta(name):
        return sum(after[a].get(f"cmdstat_{name}", {}).get("calls", 0)
                   - before[a].get(f"cmdstat_{name}", {}).get("calls", 0) for a in before)

    assert delta("dbsize") == len(ports) and delta("cluster|nodes") == 2
    assert preview.billed == sum(billed_delta(before[a], after[a]) for a in before) - len(ports) - 1


def test_it_takes_the_fallback_per_slot_group_where_scripts_are_refused(
        cluster_lucia, cluster_keys, redis_cluster, operator, acl_user, monkeypatch):  # noqa: F811
    """A user that may not run scripts: the first call learns it (refused, not billed), and
    every slot group goes through the pipeline + MULTI/EXEC fallback, counted exactly."""
    ports = redis_cluster.ports
    monkeypatch.setenv("LUCIA_CLUSTER_URL", acl_user("noscripts", "+@all", "-@scripting"))
    write(cluster_keys, sessions=600, focus=100)
    cluster_keys.set(b"lucia:session:short", b"v", ex=60)  # within the policy: skipped by the repair
    planted = {address: len(keys) for address, keys in per_node(ports, "lucia:session:*").items()}
    _, run = confirmed(cluster_lucia, operator, action="expire")
    before = stats(ports)
    result = purge.execute_purge(run_id=run.pk)
    after = stats(ports)
    run.refresh_from_db()
    assert (result.status, run.matched, run.done, run.skipped) == ("succeeded", 601, 600, 1)
    for port in ports:
        with redis.Redis(port=port) as node:
            keys = [key for key in node.scan_iter(match="lucia:session:*", count=500) if key != b"lucia:session:short"]
            assert all(3500 < node.ttl(key) <= 3600 for key in keys)
            assert all(node.ttl(key) == -1 for key in node.scan_iter(match="lucia:focus:*"))
    assert sum(row["matched"] for row in run.node_stats.values()) == 601 == sum(planted.values())
    for address in planted:
        assert evalsha(before, after, address) == 0  # refused before it ran: not a call
        multi = after[address]["cmdstat_multi"]["calls"] - before[address].get("cmdstat_multi", {}).get("calls", 0)
        assert multi > 150  # a MULTI/EXEC per slot group holding a key to repair
        assert run.node_stats[address]["billed"] == billed_delta(before[address], after[address])
