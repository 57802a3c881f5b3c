"""Purges across the primaries of a real local 3-primary Redis Cluster: a prefix purge
deletes (or repairs the TTL of) exactly the matching keys on every node, the preview
counts per node, and a dead primary fails the run naming it, never succeeded."""

import pytest
import redis

from continuity.models import PurgeRun
from continuity.operations import purge
from continuity.tests.clusters import point_at
from continuity.tests.test_cluster import cluster_lucia  # noqa: F401 — the fixture
from dashboard.models import AuditEntry


def write(client, sessions=600, focus=300):
    """Session keys without a TTL (the target) and focus keys (never touched), written
    through a cluster client so that they spread over the primaries."""
    client.mset_nonatomic({f"lucia:session:{i}".encode(): b"v" for i in range(sessions)})
    client.mset_nonatomic({f"lucia:focus:{i}".encode(): b"v" for i in range(focus)})


def per_node(ports, match):
    """{host:port: [keys matching `match`]} read from each node directly."""
    out = {}
    for port in ports:
        with redis.Redis(port=port) as node:
            out[f"127.0.0.1:{port}"] = sorted(node.scan_iter(match=match, count=500))
    return out


def confirmed(database, operator, action="delete"):
    preview = purge.preview_purge(database=database, kind="prefix", value=b"lucia:session:", action=action,
                                  actor=operator)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="tidy up",
                              actor=operator, source="cli")
    return preview, run


def planted(lucia, monkeypatch, cluster):
    """`lucia` pointed at `cluster`'s first node, `write`'s keyspace planted there; the
    planted `lucia:session:` keys, sorted."""
    point_at(lucia, monkeypatch, cluster)
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    write(client)
    client.close()
    return sorted(key for found in per_node(cluster.ports, "lucia:session:*").values() for key in found)


def test_it_previews_and_deletes_exactly_the_matching_keys_on_every_primary(
        cluster_lucia, cluster_keys, redis_cluster, operator, viewer_client):  # noqa: F811
    from django.urls import reverse

    write(cluster_keys)
    sessions = per_node(redis_cluster.ports, "lucia:session:*")
    focus = per_node(redis_cluster.ports, "lucia:focus:*")
    assert all(len(keys) > 100 for keys in sessions.values())  # spread over the three primaries
    preview = purge.preview_purge(action="delete",
                                  database=cluster_lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    assert (preview.matched, preview.actionable) == (600, 600)
    assert preview.run.preview_nodes == {address: len(keys) for address, keys in sessions.items()}
    assert preview.namespaces == {"lucia:session:": 600}
    page = viewer_client.get(reverse("continuity:purge_detail", args=[preview.run.pk])).content.decode()
    for address, keys in sessions.items():
        assert f'<td class="key">{address}</td><td class="has-text-right">{len(keys)}</td>' in page
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="tidy up",
                              actor=operator, source="cli")
    assert per_node(redis_cluster.ports, "lucia:session:*") == sessions  # the preview touched nothing
    result = purge.execute_purge(run_id=run.pk)
    run.refresh_from_db()
    assert (result.status, run.matched, run.done, run.skipped) == ("succeeded", 600, 600, 0)
    assert run.node_cursors == dict.fromkeys(sessions, "end")
    assert per_node(redis_cluster.ports, "lucia:session:*") == dict.fromkeys(sessions, [])
    assert per_node(redis_cluster.ports, "lucia:focus:*") == focus  # nothing else touched
    assert AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).count() == 1


def test_it_applies_the_policy_ttl_on_every_primary(cluster_lucia, cluster_keys, redis_cluster,
                                                    operator):  # noqa: F811
    write(cluster_keys, sessions=450)
    cluster_keys.set(b"lucia:session:short", b"v", ex=60)  # within the policy: left alone
    preview, run = confirmed(cluster_lucia, operator, action="expire")
    assert (preview.matched, preview.actionable) == (451, 450)
    result = purge.execute_purge(run_id=run.pk)
    assert (result.status, result.matched, result.done, result.skipped) == ("succeeded", 451, 450, 1)
    ttls = []
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            keys = list(node.scan_iter(match="lucia:session:*", count=500))
            assert keys  # every primary held some
            ttls += [node.ttl(key) for key in keys if key != b"lucia:session:short"]
            assert all(node.ttl(key) == -1 for key in node.scan_iter(match="lucia:focus:*"))
    assert len(ttls) == 450 and all(3500 < ttl <= 3600 for ttl in ttls)
    assert 0 < cluster_keys.ttl(b"lucia:session:short") <= 60


def test_it_resumes_from_each_primary_s_cursor_after_its_worker_died(
        cluster_lucia, cluster_keys, redis_cluster, operator, settings):  # noqa: F811
    settings.PURGE_CHECKPOINT_SECONDS = 0  # a checkpoint after every page
    write(cluster_keys)
    _, run = confirmed(cluster_lucia, operator)
    PurgeRun.objects.filter(pk=run.pk).update(batch_size=50)
    pages = []

    def die(checkpointed):
        pages.append(dict(checkpointed.node_cursors))
        if len(pages) == 4:
            raise KeyboardInterrupt("worker killed")

    with pytest.raises(KeyboardInterrupt):
        purge.execute_purge(run_id=run.pk, progress=die)
    run.refresh_from_db()
    assert run.status == "running" and run.node_cursors == pages[-1] and 0 < run.done < 600
    left = sum(len(keys) for keys in per_node(redis_cluster.ports, "lucia:session:*").values())
    assert left == 600 - run.done
    result = purge.execute_purge(run_id=run.pk)
    assert (result.status, result.resumed, result.matched, result.done, result.skipped) == (
        "succeeded", True, 600, 600, 0)
    assert not any(per_node(redis_cluster.ports, "lucia:session:*").values())
    assert sum(len(keys) for keys in per_node(redis_cluster.ports, "lucia:focus:*").values()) == 300


def test_it_fails_naming_a_dead_primary_never_succeeded(lucia, disposable_cluster, monkeypatch, operator):
    planted(lucia, monkeypatch, disposable_cluster)
    _, run = confirmed(lucia, operator)
    disposable_cluster.kill(2)
    dead = f"127.0.0.1:{disposable_cluster.ports[2]}"
    with pytest.raises(redis.ConnectionError) as stopped:
        purge.execute_purge(run_id=run.pk)
    assert f"Primary {dead} of lucia is unreachable" in str(stopped.value)
    run.refresh_from_db()
    assert run.status == "running" and run.claim_token == ""  # resumable: the task retries it
    assert run.node_cursors.get(dead, "0") == "0"  # the dead node's keys: not one read
    purge.fail_purge(run_id=run.pk, error=str(stopped.value))  # after the task's last retry
    run.refresh_from_db()
    assert run.status == "failed" and dead in run.error
    assert AuditEntry.objects.filter(action="purge.fail", target_id=str(run.pk)).count() == 1
    assert not AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).exists()
