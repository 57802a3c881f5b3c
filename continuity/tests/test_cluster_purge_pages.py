"""A cluster purge acts on a page of a node in one script call, which travels in one round
trip with the next page's SCAN, on a real local 3-primary cluster: round trips counted on
the wire (every request redis-py writes, per node), a SCRIPT FLUSH between pages (reloaded
once), a real slot migration under a page (its keys counted as moved, the rest acted on,
the run failed naming the node), and a user that may not run scripts (refused, nothing
changed)."""

import pytest
import redis
from redis.connection import AbstractConnection
from redis.crc import key_slot

from continuity.keyspace import cluster as keyspace_cluster
from continuity.operations import purge
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


def evalsha(before, after, address, figure="calls", command="evalsha"):
    return (after[address].get(f"cmdstat_{command}", {}).get(figure, 0)
            - before[address].get(f"cmdstat_{command}", {}).get(figure, 0))


def calls(before, after, address, command):
    return evalsha(before, after, address, command=command)


def test_it_acts_on_a_page_in_one_script_call_carried_with_the_next_scan(
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
    for address in planted:
        scans = calls(before, after, address, "scan")
        scripts = calls(before, after, address, "evalsha")  # NOSCRIPT included
        pages = run.node_stats[address]["pages"]
        # One script call per page holding keys (one NOSCRIPT on a fresh node): a few, not one per key.
        assert scans == pages and pages - 2 <= scripts - 1 <= pages and scripts < 20
        # Each page's keys deleted one by one (a multi-key UNLINK may not span slots).
        assert calls(before, after, address, "unlink") == planted[address]
        # The round trips: every script call but the reload travels with the next page's SCAN.
        trips = [names for names, count in wire[address] if count]
        assert sum(1 for names in trips if b"SCAN" in names) >= pages - 2
        # Billed exactly: each node's figure is its commandstats delta.
        assert run.node_stats[address]["billed"] == billed_delta(before[address], after[address])
    assert run.billed_commands == sum(row["billed"] for row in run.node_stats.values())


def test_it_loads_the_script_again_after_a_script_flush_between_pages(
        cluster_lucia, cluster_keys, redis_cluster, operator):  # noqa: F811
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

    type(run).objects.filter(pk=run.pk).update(rate_cap=0)
    before = stats(ports)
    result = purge.execute_purge(run_id=run.pk, progress=flush_once)
    after = stats(ports)
    run.refresh_from_db()
    assert pages[0] not in ("0", "end") and pages[1] not in ("0", pages[0])  # a later page of that node followed
    assert (result.status, run.matched, run.done, run.skipped) == ("succeeded", 3000, 3000, 0)
    assert per_node(ports, "lucia:session:*") == dict.fromkeys(planted, [])
    assert sum(len(keys) for keys in per_node(ports, "lucia:focus:*").values()) == 100
    loads = {address: calls(before, after, address, "script|load") for address in planted}
    assert loads == {address: 2 if address == flushed else 1 for address in planted}
    noscript = {address: evalsha(before, after, address, "failed_calls") for address in planted}
    assert noscript == {address: 2 if address == flushed else 1 for address in planted}
    # Billed exactly: each node's figure is its commandstats delta, the test's SCRIPT FLUSH left out.
    billed = {address: billed_delta(before[address], after[address]) - (address == flushed) for address in planted}
    assert {address: row["billed"] for address, row in run.node_stats.items()} == billed


def test_it_counts_a_page_whose_slot_moved_under_it_exactly_and_fails(lucia, disposable_cluster, monkeypatch,
                                                                     operator, settings):
    """A finding purge walks each node's stored keys; a slot of the third page of a node
    moves to another node before that page is acted on: its keys are no longer local
    ("moved", untouched), the page's other keys are acted on, every count is exact, and
    the run fails naming the node, never succeeded."""
    settings.PURGE_CHECKPOINT_SECONDS = 0  # a checkpoint after every page
    ports = disposable_cluster.ports
    keys = planted(lucia, monkeypatch, disposable_cluster)
    with redis.Redis(port=ports[0]) as node:
        layout = keyspace_cluster.slot_map(node)
    source = sorted(layout.owners)[0]  # the first primary the purge walks
    mine = [key for key in keys if layout.owner_of(key_slot(key)) == source]
    preview = purge.preview_purge(action="delete",
                                  database=lucia, kind="finding", finding="no_ttl", keys=keys, actor=operator,
                                  batch_size=50)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="r", actor=operator,
                              source="cli")
    page = mine[100:150]  # the node's third page, in the stored order (the caller's order)
    moving = page[25]
    slot = key_slot(moving)
    target = next(address for address in sorted(layout.owners) if address != source)
    same_slot = [key for key in page if key_slot(key) == slot]
    checkpoints, moved = [], []

    def reshard(checkpointed):
        checkpoints.append(checkpointed.node_cursors.get(source))
        if len(checkpoints) == 2:  # after the node's second page: the slot moves before the third is acted on
            moved.extend(migrate(ports, slot, source, target, complete=True))

    type(run).objects.filter(pk=run.pk).update(rate_cap=0)
    with pytest.raises(purge.PurgeRefused) as stopped:
        purge.execute_purge(run_id=run.pk, progress=reshard)
    run.refresh_from_db()
    assert checkpoints == ["50", "100"] and moving in moved
    assert run.status == "failed" and "succeeded" not in run.error and str(stopped.value) == run.error
    assert f"is served by {target} now ({source} no longer serves it: a failover or resharding) ({len(same_slot)} keys of the page were left untouched)" in run.error
    left = {key for found in per_node(ports, "lucia:session:*").values() for key in found}
    assert set(moved) <= left and not (set(page) - set(same_slot)) & left  # the rest of the page was acted on
    assert set(mine[:100]).isdisjoint(left) and set(mine[150:]) <= left  # pages before: done; after: not reached
    # Exact counts of what was done, per node and in all; the untouched keys said so.
    assert run.done == 600 - len(left) and sum(row["done"] for row in run.node_stats.values()) == run.done
    assert run.matched - run.done - run.skipped == len(same_slot)
    assert f"{len(same_slot)} of the matched keys were not acted on" in run.error
    assert AuditEntry.objects.filter(action="purge.fail", target_id=str(run.pk)).count() == 1
    assert purge.execute_purge(run_id=run.pk).status == "failed"


def test_it_previews_a_ttl_repair_one_script_call_per_page(
        cluster_lucia, cluster_keys, redis_cluster, operator, wire):  # noqa: F811
    ports = redis_cluster.ports
    write(cluster_keys, sessions=2000)
    pipe = cluster_keys.pipeline()
    for i in range(1000):
        pipe.set(f"lucia:session:short:{i}".encode(), b"v", ex=600)  # within the policy: not actionable
    pipe.execute()
    flush_scripts(ports)
    before = stats(ports)
    preview = purge.preview_purge(database=cluster_lucia, kind="prefix", value=b"lucia:session:", action="expire",
                                  actor=operator, batch_size=400)
    after = stats(ports)
    assert (preview.matched, preview.actionable) == (3000, 2000)
    for port in ports:
        address = f"127.0.0.1:{port}"
        ro = {figure: evalsha(before, after, address, figure, "evalsha_ro") for figure in ("calls", "failed_calls")}
        scans = calls(before, after, address, "scan")
        assert ro["failed_calls"] == 1 and scans - 2 <= ro["calls"] - 1 <= scans  # a count per page: EVALSHA_RO
    # Billed as the commandstats delta: the scan's commands and the instant estimate's (the
    # slot map and DBSIZE per primary).
    assert preview.billed == sum(billed_delta(before[a], after[a]) for a in before)


def test_it_refuses_a_cluster_purge_where_scripts_are_refused(
        cluster_lucia, cluster_keys, redis_cluster, operator, acl_user, monkeypatch):  # noqa: F811
    """A user that may not run scripts: a cluster purge cannot act and record its progress
    atomically (MULTI/EXEC cannot span slots): refused, saying so, with nothing changed."""
    ports = redis_cluster.ports
    write(cluster_keys, sessions=600, focus=100)
    _, run = confirmed(cluster_lucia, operator, action="expire")
    monkeypatch.setenv("LUCIA_CLUSTER_URL", acl_user("noscripts", "+@all", "-@scripting"))
    before = per_node(ports, "lucia:session:*")
    with pytest.raises(Exception) as refused:
        purge.execute_purge(run_id=run.pk)
    assert "may not run scripts" in str(refused.value) and "MULTI/EXEC cannot span its slots" in str(refused.value)
    run.refresh_from_db()
    assert run.done == 0 and per_node(ports, "lucia:session:*") == before
    for port in ports:
        with redis.Redis(port=port) as node:
            assert all(node.ttl(key) == -1 for key in node.scan_iter(match="lucia:session:*"))
