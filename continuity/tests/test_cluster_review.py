"""The TTL review across the primaries of a real local 3-primary Redis Cluster: one part
per primary (ReviewNodeRun), merged exactly; in-process (`ttl_review`) and fanned out on a
real Celery worker (a chord); a dead primary ends the run partial, never succeeded."""

import dataclasses
import json
from datetime import timedelta

import pytest
import redis
from django.core.management import CommandError, call_command
from django.utils import timezone

from continuity import demo, keyspace
from continuity.models import Namespace, ReviewNodeRun, ReviewRun
from continuity.policy import TTL_BUCKETS
from continuity.operations import review
from continuity.tests.clusters import parts_of, point_at
from continuity.tests.test_review import TYPES, expected_from_specs
from continuity.tests.waiting import wait_for


@pytest.fixture
def typed_cluster_lucia(lucia, redis_cluster, cluster_keys, monkeypatch):
    """The seeded `lucia` record with expected types, pointed at node 0 of the cluster."""
    for name, kind in TYPES.items():
        Namespace.objects.filter(database=lucia, name=name).update(expected_type=kind)
    return point_at(lucia, monkeypatch, redis_cluster)


def spread(client, n=3000, seed=11):
    """The generator's keyspace written through a cluster client; its specs."""
    specs = list(demo.lucia_keyspace(n, seed=seed, violation_rate=0.05))
    demo.write_keyspace(client, specs)
    return specs


def keys_per_node(ports):
    out = []
    for port in ports:
        with redis.Redis(port=port) as node:
            out.append(node.dbsize())
    return out


def by_prefix(namespaces):
    return {row["prefix"]: row["keys"] for row in namespaces}


def test_it_reviews_every_primary_exactly_from_ttl_review_json(typed_cluster_lucia, cluster_keys, redis_cluster, capsys):
    specs = spread(cluster_keys)
    per_node = keys_per_node(redis_cluster.ports)
    assert sum(per_node) == len(specs) and all(count > 0 for count in per_node)
    findings, per_namespace, foreign = expected_from_specs(specs)
    assert sum(findings.values()) > 0

    call_command("ttl_review", "--database", "lucia", "--json")
    payload = json.loads(capsys.readouterr().out)

    assert payload["status"] == "succeeded" and "missing_nodes" not in payload
    assert payload["keys_scanned"] == len(specs) and payload["foreign_keys"] == foreign
    assert payload["findings"] == findings
    assert by_prefix(payload["namespaces"]) == per_namespace
    run = ReviewRun.objects.get(pk=payload["run"])
    nodes = list(run.node_runs.all())
    assert sorted(node.keys_scanned for node in nodes) == sorted(per_node)
    assert {node.address for node in nodes} == {f"127.0.0.1:{port}" for port in redis_cluster.ports}
    assert all(node.status == "succeeded" for node in nodes)
    assert (run.dbsize_before, run.dbsize_after, run.missing_nodes) == (len(specs), len(specs), [])
    # Billed: per node one DBSIZE before and after, the rest per batch and key, summed; and
    # the run's own CLUSTER NODES, two per primary (the primaries and their migrations when
    # the parts were planned, then the slot check at the end).
    assert run.billed_commands == sum(node.billed_commands for node in nodes) + 6
    assert run.topology_billed(nodes) == 6 and sum(node.billed_commands for node in nodes) > 2 * len(specs)
    assert run.samples.filter(finding="no_ttl").count() == min(100, findings["no_ttl"])


def _clear_of_bucket_edges(specs, margin=300):
    """The specs with each TTL moved `margin` seconds above a bucket's lower edge when it lies
    closer to it: the two reviews run one after the other, and a key must not cross into the
    next bucket down between them on a slow machine."""
    edges = [bound for _name, bound in TTL_BUCKETS[:-1]]
    return [dataclasses.replace(spec, ttl_seconds=spec.ttl_seconds + margin)
            if spec.ttl_seconds and any(0 <= spec.ttl_seconds - edge < margin for edge in edges) else spec
            for spec in specs]


def test_it_finds_the_same_as_a_standalone_server_holding_the_same_keys(typed_cluster_lucia, cluster_keys, monitored):
    specs = _clear_of_bucket_edges(demo.lucia_keyspace(2000, seed=5, violation_rate=0.05))
    demo.write_keyspace(cluster_keys, specs)
    demo.write_keyspace(monitored, specs)
    on_cluster = review.review_database(database=typed_cluster_lucia)
    typed_cluster_lucia.url_env = "REDIS_URL"
    alone = review.review_database(database=typed_cluster_lucia, persist=False)
    assert on_cluster.status == "succeeded"
    assert (on_cluster.keys_scanned, on_cluster.findings) == (alone.keys_scanned, alone.findings)
    # MEMORY USAGE differs between a cluster node and a standalone server: compare the rest.
    same = ("prefix", "keys", "ttl_histogram", "findings")
    assert [{k: row[k] for k in same} for row in on_cluster.namespaces] == [
        {k: row[k] for k in same} for row in alone.namespaces]
    assert all(row["bytes"] > 0 and len(row["top_keys"]) == 10 for row in on_cluster.namespaces)


def test_it_resumes_one_primary_from_its_checkpoint_after_its_worker_died(typed_cluster_lucia, cluster_keys, settings):
    specs = spread(cluster_keys, n=3000, seed=3)
    findings, _, _ = expected_from_specs(specs)
    run = review.start_review(database=typed_cluster_lucia, batch=50)
    token, _ = run.claim(settings.REVIEW_LEASE_SECONDS)
    nodes = parts_of(run)
    first = nodes[0]

    class Died(Exception):
        pass

    def die(tally):
        if tally.batches == 6:
            raise Died

    with pytest.raises(Died):
        review.review_node(first, checkpoint_every=2, on_batch=die)
    first.refresh_from_db()
    assert first.status == "running" and first.batches == 4 and first.cursor != "0"  # the last checkpoint
    assert review.review_node(first) == "running"  # its lease holds: left alone
    run.refresh_from_db()
    assert run.progress()[0] == first.keys_scanned > 0  # the page's progress: the parts' checkpoints
    ReviewNodeRun.objects.filter(pk=first.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert review.review_node(first) == "succeeded"
    for node in nodes[1:]:
        assert review.review_node(node) == "succeeded"
    run = review.finish(run)
    first.refresh_from_db()
    assert token and (run.status, run.keys_scanned, run.findings) == ("succeeded", len(specs), findings)
    assert first.resumes == 1


def test_it_ends_partial_naming_a_dead_primary_never_succeeded(lucia, disposable_cluster, monkeypatch, capsys,
                                                               viewer_client):
    from django.urls import reverse

    for name, kind in TYPES.items():
        Namespace.objects.filter(database=lucia, name=name).update(expected_type=kind)
    monkeypatch.setenv("LUCIA_CLUSTER_URL", disposable_cluster.url(0))
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_CLUSTER_URL")
    client = redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0])
    specs = spread(client, n=1500)
    client.close()
    alive = keys_per_node(disposable_cluster.ports[:2])
    disposable_cluster.kill(2)
    dead = f"127.0.0.1:{disposable_cluster.ports[2]}"

    with pytest.raises(CommandError) as failed:
        call_command("ttl_review", "--database", "lucia", "--json")
    payload = json.loads(capsys.readouterr().out)

    assert payload["status"] == "partial" and payload["missing_nodes"] == [dead]
    assert payload["keys_scanned"] == sum(alive) < len(specs)
    assert dead in payload["error"] and payload["error"].startswith("Partial review: 1 of 3 primaries")
    assert dead in str(failed.value)
    run = ReviewRun.objects.get(pk=payload["run"])
    assert (run.status, run.missing_nodes) == ("partial", [dead])
    assert run.node_runs.get(address=dead).status == "failed"
    page = viewer_client.get(reverse("continuity:review_detail", args=[run.pk])).content.decode()
    assert 'data-testid="review-status">partial: 1 primary not read<' in page
    assert f'data-testid="review-missing-nodes">Primaries not read: {dead}.' in page
    assert page.count('data-testid="review-node"') == 3 and 'data-testid="finding-no_ttl"' in page


# --- fanned out on a real Celery worker (conftest: celery_app, celery_worker_parameters, empty_broker) ---

def cluster_record(url_env, url, monkeypatch):
    from continuity import seed
    from dashboard.models import RedisDatabase

    seed.seed_all()
    lucia = RedisDatabase.objects.get(name="lucia")
    for name, kind in TYPES.items():
        Namespace.objects.filter(database=lucia, name=name).update(expected_type=kind)
    monkeypatch.setenv(url_env, url)
    RedisDatabase.objects.filter(pk=lucia.pk).update(url_env=url_env)
    lucia.refresh_from_db()
    return lucia


def finished(run_id):
    return lambda: (run := ReviewRun.objects.get(pk=run_id)).status not in ReviewRun.ACTIVE and run


@pytest.mark.django_db(transaction=True)
def test_it_fans_a_review_out_per_primary_on_the_worker_and_merges_it_exactly(
        empty_broker, redis_cluster, cluster_keys, monkeypatch, celery_worker):
    from continuity.operations import review_requests

    lucia = cluster_record("LUCIA_CLUSTER_URL", redis_cluster.url(1), monkeypatch)
    specs = spread(cluster_keys, n=3000, seed=21)
    findings, per_namespace, foreign = expected_from_specs(specs)
    per_node = keys_per_node(redis_cluster.ports)
    run, created = review_requests.request_review(database=lucia)
    assert created
    done = wait_for(finished(run.pk), 60, "the chord's callback")
    assert (done.status, done.error, done.missing_nodes) == ("succeeded", "", [])
    assert (done.keys_scanned, done.foreign_keys, done.findings) == (len(specs), foreign, findings)
    assert {s.label: s.keys for s in done.namespace_stats.all()} == per_namespace
    nodes = list(done.node_runs.all())
    assert sorted(node.keys_scanned for node in nodes) == sorted(per_node)
    assert all(node.status == "succeeded" and node.aggregates == {} for node in nodes)
    assert done.billed_commands == sum(node.billed_commands for node in nodes) + 6  # + the run's CLUSTER NODES


@pytest.mark.django_db(transaction=True)
def test_it_ends_partial_on_the_worker_when_a_primary_is_dead_and_alerts_partial(
        empty_broker, disposable_cluster, monkeypatch, settings, celery_worker, receiver):
    from continuity.operations import review_requests
    from dashboard.models import AlertChannel, AlertDelivery

    settings.REVIEW_TASK_MAX_RETRIES = 0  # no backoff in a test: the first refusal is final
    AlertChannel.objects.create(name="ops", kind="webhook", url=receiver.url("/hook"))
    lucia = cluster_record("LUCIA_DISPOSABLE_URL", disposable_cluster.url(0), monkeypatch)
    writer = redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0])
    specs = spread(writer, n=1500)
    writer.close()
    alive = keys_per_node(disposable_cluster.ports[:2])
    disposable_cluster.kill(2)
    dead = f"127.0.0.1:{disposable_cluster.ports[2]}"

    run, _ = review_requests.request_review(database=lucia)
    done = wait_for(finished(run.pk), 90, "the chord's callback")
    assert (done.status, done.missing_nodes) == ("partial", [dead])
    assert done.keys_scanned == sum(alive) < len(specs)
    assert done.error.startswith(f"Partial review: 1 of 3 primaries could not be read ({dead}: ")
    assert done.node_runs.get(address=dead).status == "failed"
    delivery = wait_for(lambda: AlertDelivery.objects.filter(event="review.partial").first(), 30, "the alert")
    assert delivery.title == "TTL review of lucia is partial: 1 primary not read"
    assert dead in delivery.text
    assert not AlertDelivery.objects.filter(event="review.findings").exists()


def test_it_fails_the_run_when_a_slot_moved_during_the_review(lucia, disposable_cluster, monkeypatch, settings):
    from continuity.keyspace import cluster as keyspace_cluster

    monkeypatch.setenv("LUCIA_DISPOSABLE_URL", disposable_cluster.url(0))
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_DISPOSABLE_URL")
    lucia.refresh_from_db()
    writer = redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0])
    spread(writer, n=500)
    writer.close()
    run = review.start_review(database=lucia)
    run.claim(settings.REVIEW_LEASE_SECONDS)
    nodes = parts_of(run)
    for node in nodes:
        assert review.review_node(node) == "succeeded"
    # A resharding between the parts and the merge: an empty slot of the first primary moves to the second.
    first, second = nodes[0], nodes[1]
    with redis.Redis(port=int(first.address.rsplit(":", 1)[1])) as owner:
        slot = next(s for s in range(first.slots[0][0], first.slots[0][1] + 1)
                    if not owner.execute_command("CLUSTER", "COUNTKEYSINSLOT", s))
    for port in disposable_cluster.ports:
        with redis.Redis(port=port) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", second.node_id)
    with redis.Redis(port=disposable_cluster.ports[0]) as here:
        now = {n.address: n.slot_count for n in keyspace_cluster.cluster_nodes(here) if n.role == "primary"}
    assert now[first.address] == sum(b - a + 1 for a, b in first.slots) - 1

    run = review.finish(run)
    assert run.status == "failed" and run.keys_scanned == 500
    assert run.error.startswith(f"The cluster's topology changed during the review: the slots of {first.address}")
    assert not run.namespace_stats.exists()


def _empty_slot_and_peer(cluster, first_address):
    """An empty slot served by `first_address`, and another primary's address and id."""
    from continuity.tests.test_cluster_purge_topology import node_ids

    ids = node_ids(cluster.ports)
    with redis.Redis(port=int(first_address.rsplit(":", 1)[1])) as owner:
        ranges = [r for r in owner.execute_command("CLUSTER", "SLOTS") if f"127.0.0.1:{r[2][1]}" == first_address]
        first, last = ranges[0][0], ranges[0][1]
        slot = next(s for s in range(first, last + 1) if not owner.execute_command("CLUSTER", "COUNTKEYSINSLOT", s))
    peer = next(address for address in ids if address != first_address)
    return slot, peer, ids


def _start_migrating(slot, source, target, ids):
    """IMPORTING on `target`, MIGRATING on `source`, as a resharding does before moving keys."""
    with redis.Redis(port=int(target.rsplit(":", 1)[1])) as node:
        node.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    with redis.Redis(port=int(source.rsplit(":", 1)[1])) as node:
        node.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])


def test_it_refuses_a_review_while_a_slot_is_being_migrated(lucia, disposable_cluster, monkeypatch):
    """MIGRATING/IMPORTING when the review starts: refused before any key is read, never succeeded."""
    point_at(lucia, monkeypatch, disposable_cluster)
    with redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0]) as writer:
        spread(writer, n=500)
    source = f"127.0.0.1:{disposable_cluster.ports[0]}"
    slot, target, ids = _empty_slot_and_peer(disposable_cluster, source)
    _start_migrating(slot, source, target, ids)
    result = review.review_database(database=lucia)
    run = ReviewRun.objects.get(pk=result.run.pk)
    assert (run.status, run.keys_scanned) == ("failed", 0) and not run.node_runs.exists()
    assert run.error == (f"slot {slot} is migrating from {source} to {target}: a review would miss keys or read "
                         f"some twice. Nothing was reviewed.")


def test_it_fails_a_review_whose_slot_is_still_being_migrated_at_its_end(lucia, disposable_cluster, monkeypatch,
                                                                         settings):
    """A migration that began during the review and is still running at its end (no owner
    changed yet): failed, never succeeded."""
    point_at(lucia, monkeypatch, disposable_cluster)
    with redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0]) as writer:
        spread(writer, n=500)
    run = review.start_review(database=lucia)
    parts = parts_of(run)
    for part in parts:
        assert review.review_node(part) == "succeeded"
    slot, target, ids = _empty_slot_and_peer(disposable_cluster, parts[0].address)
    _start_migrating(slot, parts[0].address, target, ids)
    run = review.finish(run)
    assert run.status == "failed" and run.keys_scanned == 500 and not run.namespace_stats.exists()
    assert run.error.startswith(f"Slot {slot} is being migrated from {parts[0].address} to {target} at the end of "
                                "the review (MIGRATING/IMPORTING)")


def test_it_merges_parts_keeping_the_biggest_keys_and_capping_samples():
    parts = []
    for part in range(3):
        tally = review.Tally(keys_scanned=100, billed=7, commands=3, batches=2, elapsed_s=part)
        ns = tally.namespace("1")
        for i in range(8):
            ns.keys += 1
            ns.bytes += 10 * part + i
            ns.buckets[0] += 1
            ns.add_top(10 * part + i, f"k{part}-{i}".encode())
        tally.findings["no_ttl"] = 60
        for i in range(60):
            tally.sample("no_ttl", "1", f"s{part}-{i}".encode(), "string", None, 1)
        parts.append(review.Tally.from_json(tally.to_json()))  # as stored on the part's row
    merged = review.merge(parts)
    assert (merged.keys_scanned, merged.billed, merged.commands, merged.batches) == (300, 21, 9, 6)
    assert merged.findings["no_ttl"] == 180 and len(merged.samples["no_ttl"]) == review.SAMPLE_CAP
    ns = merged.namespaces["1"]
    assert (ns.keys, ns.buckets[0], ns.findings["no_ttl"]) == (24, 24, 0)
    assert sorted((m for m, _ in ns.top), reverse=True) == [27, 26, 25, 24, 23, 22, 21, 20, 17, 16]
    assert ns.top_floor == 16 and merged.elapsed_s == 2


def test_it_fails_a_review_whose_final_slot_check_no_node_answers(lucia, disposable_cluster, monkeypatch):
    """Every primary read, then the whole cluster gone before the merge: nothing can rule out
    that slots moved during the run, so it is not reported as succeeded."""
    point_at(lucia, monkeypatch, disposable_cluster)
    client = redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0])
    client.mset_nonatomic({f"lucia:session:{i}".encode(): b"v" for i in range(300)})
    client.close()
    run = review.start_review(database=lucia, batch=50)
    assert run.claim(60)[0]
    nodes = parts_of(run)
    for node in nodes:
        assert review.review_node(node) == "succeeded"
    disposable_cluster.stop()
    keyspace.forget_clients()
    run = review.finish(run)
    assert run.status == "failed" and run.missing_nodes == []
    assert "no node of the cluster answered CLUSTER NODES at the end" in run.error
    assert not run.namespace_stats.exists()
