"""A real failover mid-run, on a real local cluster of 3 primaries with one in-sync replica
each (`failover_cluster`): `CLUSTER FAILOVER TAKEOVER` sent to a replica between two batches
or pages, then each job is asked what it did. None of them follows the new primary: each
ends failed or partial naming the node or the slot, with exact counts of what it did, and
never succeeded; the database page shows the new roles; a browser cursor issued before the
failover is refused with a 400 that says to start again."""

import html
import json
import re

import pytest
import redis
from django.core.management import call_command
from django.urls import reverse

from continuity.models import Namespace, PurgeRun, ReviewNodeRun, ReviewRun
from continuity.operations import purge, review
from continuity.tests.clusters import point_at
from continuity.tests.test_cluster import node_rows
from continuity.tests.test_cluster_purge import confirmed, per_node, write
from continuity.tests.test_cluster_review import TYPES, spread
from dashboard.models import AuditEntry


@pytest.fixture
def failover_lucia(lucia, failover_cluster, monkeypatch):
    """The seeded `lucia` record pointed at the first primary of `failover_cluster`."""
    for name, kind in TYPES.items():
        Namespace.objects.filter(database=lucia, name=name).update(expected_type=kind)
    return point_at(lucia, monkeypatch, failover_cluster)


def port_of(address):
    return int(address.rpartition(":")[2])


def planted_per_primary(cluster):
    """{host:port: DBSIZE} of each primary as created, asked of the node itself."""
    out = {}
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            out[f"127.0.0.1:{port}"] = node.dbsize()
    return out


# --- the TTL review ------------------------------------------------------------------------------
def test_it_ends_a_review_partial_naming_the_primary_that_failed_over_while_it_was_read(
        failover_lucia, failover_cluster, capsys):
    cluster = failover_cluster
    with redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as writer:
        specs = spread(writer, n=1500)
    planted = planted_per_primary(cluster)
    assert sum(planted.values()) == len(specs) and all(count > 100 for count in planted.values())
    failed_over, old_slots = [], set()

    def fail_over(tally):  # after the first batch of the first primary (node runs go by address)
        if not failed_over:
            node = ReviewNodeRun.objects.get(status=ReviewNodeRun.RUNNING)
            address = node.address
            old_slots.update(slot for first, last in node.slots for slot in range(first, last + 1))
            replica = cluster.replica_of(port_of(address))
            cluster.failover(replica)
            failed_over.append((address, f"127.0.0.1:{replica}"))

    result = review.review_database(database=failover_lucia, batch=100, on_batch=fail_over)
    run = ReviewRun.objects.get(pk=result.run.pk)
    (old, new), = failed_over
    assert old == min(planted)  # the first primary in address order, mid-way through it
    assert cluster.role_of(port_of(new)) == "master" and cluster.role_of(port_of(old)) == "slave"
    # Not followed: the demoted node no longer serves the keys it returned, the part fails
    # naming the slot and the new primary, and the run is partial with exactly the other two
    # primaries' keys, never succeeded.
    assert (run.status, run.missing_nodes) == ("partial", [old])
    assert run.error.startswith("Partial review: 1 of 3 primaries could not be read (")
    said = re.search(rf"\({re.escape(old)}: slot (\d+) is served by {re.escape(new)} now \({re.escape(old)} no "
                     rf"longer serves it: a failover or resharding\)", run.error)
    assert said and run.error.endswith("The figures cover 2 primaries only.")
    assert int(said.group(1)) in old_slots  # a slot of the primary that failed over
    assert run.keys_scanned == sum(count for address, count in planted.items() if address != old)
    assert {node.address: node.status for node in run.node_runs.all()} == {
        address: "failed" if address == old else "succeeded" for address in planted}
    # A new review follows the new layout: every key, exactly, on the three primaries now.
    call_command("ttl_review", "--database", "lucia", "--json")
    payload = json.loads(capsys.readouterr().out)
    assert payload["status"] == "succeeded" and payload["keys_scanned"] == len(specs)
    again = ReviewRun.objects.get(pk=payload["run"])
    assert sorted(node.address for node in again.node_runs.all()) == sorted({*planted} - {old} | {new})


def test_it_fails_a_review_whose_primary_already_read_failed_over(failover_lucia, failover_cluster, capsys):
    cluster = failover_cluster
    with redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as writer:
        spread(writer, n=1500)
    planted = planted_per_primary(cluster)
    first = min(planted)
    failed_over = []

    def fail_over(tally):  # once the second primary is being read: the first is done
        if not failed_over and ReviewNodeRun.objects.get(status=ReviewNodeRun.RUNNING).address != first:
            cluster.failover(cluster.replica_of(port_of(first)))
            failed_over.append(first)

    result = review.review_database(database=failover_lucia, batch=100, on_batch=fail_over)
    run = ReviewRun.objects.get(pk=result.run.pk)
    assert failed_over == [first]
    # Each part read all of its node, but the slots of a part already read now belong to
    # another node: the run fails (keys may have been read twice or not at all).
    assert all(node.status == "succeeded" for node in run.node_runs.all())
    assert run.status == "failed" and run.missing_nodes == []
    assert run.error == (f"The cluster's topology changed during the review: the slots of {first} moved "
                         f"(a failover or resharding), so keys may have been read twice or not at all. "
                         f"Run the review again.")
    assert not run.namespace_stats.exists() and not run.samples.exists()


# --- the prefix purge ------------------------------------------------------------------------------
def primaries_now(cluster):
    return [port for port in cluster.all_ports if cluster.role_of(port) == "master"]


def left_now(cluster, match):
    """{host:port: [keys]} on each node that is a primary now (replicas hold copies)."""
    return per_node(primaries_now(cluster), match)


@pytest.mark.parametrize("when", ["mid-node", "node-done"])
def test_it_fails_a_prefix_purge_when_a_primary_fails_over_naming_the_slot_with_exact_counts(
        failover_lucia, failover_cluster, operator, when):
    cluster = failover_cluster
    with redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as writer:
        write(writer)
    order = sorted(f"127.0.0.1:{port}" for port in cluster.ports)  # the order the purge walks the primaries
    first = order[0]
    _, run = confirmed(failover_lucia, operator)
    PurgeRun.objects.filter(pk=run.pk).update(batch_size=50)
    failed_over = []

    def fail_over(checkpointed):
        cursor = checkpointed.node_cursors.get(first)
        due = cursor not in ("0", "end", None) if when == "mid-node" else cursor == "end"
        if due and not failed_over:
            replica = cluster.replica_of(port_of(first))
            cluster.failover(replica)
            failed_over.append(f"127.0.0.1:{replica}")

    with pytest.raises(purge.PurgeRefused) as stopped:
        purge.execute_purge(run_id=run.pk, progress=fail_over)
    run.refresh_from_db()
    new, = failed_over
    assert cluster.role_of(port_of(new)) == "master" and cluster.role_of(port_of(first)) == "slave"
    assert run.status == "failed" and run.error == str(stopped.value)
    prefix = f"The cluster's topology changed during purge #{run.pk} of lucia: "
    if when == "mid-node":
        # The demoted node still SCANs (a replica holds the same keys) but no longer serves
        # them to the next page's script call: the run fails naming the slot and the new primary.
        said = re.match(re.escape(prefix) + rf"slot (\d+) is served by {re.escape(new)} now "
                        rf"\({re.escape(first)} no longer serves it: a failover or resharding\) \((\d+) keys of "
                        rf"the page were left untouched\)\.", run.error)
        assert said and run.node_cursors[first] not in ("0", "end")
        # The page that met MOVED was matched (its SCAN ran) but nothing of it was done.
        unacted = run.matched - run.skipped - run.done
        assert 0 < unacted <= 100 and run.node_stats[first]["matched"] - run.node_stats[first]["done"] == unacted
        assert f"; {unacted:,} of the matched keys were not acted on (their slot had moved) and are untouched." \
            in run.error
        assert run.node_layout[first] and int(said.group(1)) in {
            slot for a, b in run.node_layout[first] for slot in range(a, b + 1)}
    else:
        # The first primary was done; the check before the second sees its slots moved.
        said = re.match(re.escape(prefix) + rf"slot (\d+) moved from {re.escape(first)} to {re.escape(new)} "
                        rf"\(and (\d+) more slots\)\.", run.error)
        slots = sum(b - a + 1 for a, b in run.node_layout[first])
        assert said and int(said.group(2)) == slots - 1
        assert run.node_cursors[first] == "end" and set(run.node_cursors.values()) - {"end"} == {"0"}
        # Every page was acted on: the first primary's keys are all gone, the others untouched.
        assert run.matched - run.skipped == run.done == run.node_stats[first]["done"]
        assert "were not acted on" not in run.error
        assert left_now(cluster, "lucia:session:*")[new] == []
    assert (" Keys of that slot may be missed, so the purge stopped as failed. " if when == "mid-node" else
            " Keys of the moved slots may have been missed, so the purge stopped as failed. ") in run.error
    assert f"So far it matched {run.matched:,} keys, deleted {run.done:,} and skipped {run.skipped:,} (exact)" \
        in run.error
    # Exact counts of what was done; the rest is still there; nothing outside the target touched.
    left = left_now(cluster, "lucia:session:*")
    assert 0 < run.done == 600 - sum(len(keys) for keys in left.values()) < 600
    assert sum(row["done"] for row in run.node_stats.values()) == run.done
    assert sum(len(keys) for keys in left_now(cluster, "lucia:focus:*").values()) == 300
    assert AuditEntry.objects.filter(action="purge.fail", target_id=str(run.pk)).count() == 1
    assert not AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).exists()
    assert purge.execute_purge(run_id=run.pk).status == "failed"  # a resume is refused too
    # A new preview reads the new layout and the purge it confirms finishes the job exactly.
    preview, again = confirmed(failover_lucia, operator)
    assert preview.matched == 600 - run.done and new in again.preview_nodes and first not in again.preview_nodes
    result = purge.execute_purge(run_id=again.pk)
    assert (result.status, PurgeRun.objects.get(pk=again.pk).done) == ("succeeded", 600 - run.done)
    assert left_now(cluster, "lucia:session:*") == dict.fromkeys(left, [])


# --- the database page and the key browser ---------------------------------------------------------
def topology(client):
    response = client.get(reverse("dashboard:database_topology", args=["lucia"]), headers={"HX-Request": "true"})
    assert response.status_code == 200
    page = response.content.decode()
    return {row["address"]: row for row in node_rows(page)}, page


def test_it_shows_the_new_roles_on_the_database_page_after_a_failover(failover_lucia, failover_cluster,
                                                                       viewer_client):
    cluster = failover_cluster
    with redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as writer:
        writer.mset_nonatomic({f"lucia:session:{i}".encode(): b"v" for i in range(900)})
    old = f"127.0.0.1:{cluster.ports[1]}"
    replica = cluster.replica_of(cluster.ports[1])
    new = f"127.0.0.1:{replica}"
    before, _ = topology(viewer_client)
    assert len(before) == 6 and (before[old]["role"], before[new]["role"]) == ("primary", "replica")
    assert before[new]["slots"] == "none" and before[old]["slots"] != "none"
    old_slots = before[old]["slots"]

    cluster.failover(replica)

    after, page = topology(viewer_client)
    assert (after[old]["role"], after[new]["role"]) == ("replica", "primary")
    assert after[new]["slots"] == old_slots and after[old]["slots"] == "none"
    # The other nodes keep their roles and slots; every node answers; the key count is the primaries'.
    assert {a: (r["role"], r["slots"]) for a, r in after.items() if a not in (old, new)} == \
        {a: (r["role"], r["slots"]) for a, r in before.items() if a not in (old, new)}
    assert all(row["reachable"] == "yes" for row in after.values())
    assert "Redis Cluster: 3 primaries, 16,384 of 16,384 slots assigned, 900 keys." in page
    assert sum(int(after[f"127.0.0.1:{port}"]["keys"]) for port in primaries_now(cluster)) == 900


def reset_stats(ports):
    for port in ports:
        with redis.Redis(port=port) as node:
            node.config_resetstat()


def scans(ports):
    out = 0
    for port in ports:
        with redis.Redis(port=port) as node:
            out += node.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
    return out


def test_it_refuses_a_browser_cursor_issued_before_a_failover_with_a_400(failover_lucia, failover_cluster,
                                                                        viewer_client, settings):
    cluster = failover_cluster
    with redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as writer:
        writer.mset_nonatomic({f"lucia:rate:{i}".encode(): b"1" for i in range(2000)})
    settings.KEYSPACE_SCAN_BUDGET = 200
    url = reverse("continuity:browse", args=["lucia"])
    first = viewer_client.get(url, {"prefix": "lucia:rate:"}).context["result"]
    assert first.cursor.startswith("k") and not first.done
    then = sorted(f"127.0.0.1:{port}" for port in cluster.ports)
    failing = cluster.ports[2]
    replica = cluster.replica_of(failing)
    cluster.failover(replica)
    now = sorted({*then} - {f"127.0.0.1:{failing}"} | {f"127.0.0.1:{replica}"})
    reset_stats(cluster.all_ports)

    response = viewer_client.get(url, {"prefix": "lucia:rate:", "cursor": first.cursor,
                                       "examined": first.examined_total, "matched": first.matched_total})
    body = html.unescape(response.content.decode())
    assert response.status_code == 400 and 'data-testid="cursor-error"' in body
    assert (f"The primaries of lucia changed since this scan started (then: {', '.join(then)}; "
            f"now: {', '.join(now)}). Continuing could skip keys or show some twice, so no key was read; "
            f"start the scan again.") in body
    assert 'data-testid="key-row"' not in body and 'data-testid="restart"' in body
    assert scans(cluster.all_ports) == 0  # refused before any SCAN
    # Starting again walks the new primaries and finds every key once.
    seen, state = [], {}
    for _page in range(100):
        result = viewer_client.get(url, {"prefix": "lucia:rate:", **state}).context["result"]
        seen.extend(row.key for row in result.rows)
        if result.done:
            break
        state = {"cursor": result.cursor, "examined": result.examined_total, "matched": result.matched_total}
    assert sorted(seen) == sorted(f"lucia:rate:{i}".encode() for i in range(2000))
