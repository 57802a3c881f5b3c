"""A cluster purge under a topology change and under a killed worker, on real clusters: a
slot migrated mid-purge (a real CLUSTER SETSLOT … MIGRATING/IMPORTING + MIGRATE) fails the
run naming the slot and its nodes, never succeeded with keys missed; a real Celery worker
SIGKILLed mid-purge is resumed by a new one from each node's cursor, with exact counts."""

import os
import signal

import pytest
import redis
from django.db import connection
from redis.crc import key_slot

from continuity.keyspace import cluster as keyspace_cluster
from continuity.models import PurgeRun
from continuity.operations import purge
from continuity.tests.test_cluster_purge import confirmed, per_node, planted
from continuity.tests.test_purge_tasks import _worker
from continuity.tests.waiting import wait_for
from dashboard.models import AuditEntry, RedisDatabase


def node_ids(ports):
    out = {}
    for port in ports:
        with redis.Redis(port=port) as node:
            out[f"127.0.0.1:{port}"] = node.execute_command("CLUSTER", "MYID").decode()
    return out


def migrate(ports, slot, source, target, *, complete):
    """Move `slot` from `source` to `target` (host:port) as `redis-cli --cluster reshard`
    does: IMPORTING on the target, MIGRATING on the source, MIGRATE its keys, then (when
    `complete`) SETSLOT NODE on every primary."""
    ids = node_ids(ports)
    src = redis.Redis(port=int(source.rsplit(":", 1)[1]))
    dst = redis.Redis(port=int(target.rsplit(":", 1)[1]))
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    if keys:
        src.execute_command("MIGRATE", "127.0.0.1", dst.connection_pool.connection_kwargs["port"], "", 0, 5000,
                            "KEYS", *keys)
    if complete:
        for port in ports:
            with redis.Redis(port=port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    src.close()
    dst.close()
    return keys


@pytest.mark.parametrize("complete", [True, False], ids=["moved", "migrating"])
def test_it_fails_naming_the_slot_that_moved_into_a_node_already_purged(lucia, disposable_cluster, monkeypatch,
                                                                         operator, complete):
    ports = disposable_cluster.ports
    planted(lucia, monkeypatch, disposable_cluster)
    order = sorted(f"127.0.0.1:{port}" for port in ports)  # the order the purge walks the primaries
    first, last = order[0], order[-1]
    with redis.Redis(port=ports[0]) as node:
        layout = keyspace_cluster.slot_map(node)
    # A slot of the last primary that holds target keys: moved into the first, already purged.
    slot = next(key_slot(key) for key in sorted(per_node(ports, "lucia:session:*")[last])
                if layout.owner_of(key_slot(key)) == last)
    _, run = confirmed(lucia, operator)
    PurgeRun.objects.filter(pk=run.pk).update(batch_size=50)
    moved = []

    def reshard(checkpointed):
        if not moved and checkpointed.node_cursors.get(first) == "end":
            moved.extend(migrate(ports, slot, last, first, complete=complete))

    with pytest.raises(purge.PurgeRefused) as stopped:
        purge.execute_purge(run_id=run.pk, progress=reshard)
    run.refresh_from_db()
    assert moved and all(key_slot(key) == slot for key in moved)
    assert f"slot {slot}" in str(stopped.value) and first in run.error and last in run.error
    assert ("moved from" if complete else "is migrating from") in run.error
    assert run.status == "failed" and "succeeded" not in run.error
    # The moved keys were missed (the first primary was done): a "succeeded" would have lied.
    left = per_node(ports, "lucia:session:*")
    assert set(moved) <= set(left[first])
    # Exact counts of what was done before it stopped; nothing outside the target touched.
    assert run.done == 600 - sum(len(keys) for keys in left.values()) and run.done > 0
    assert run.matched - run.skipped == run.done
    assert sum(len(keys) for keys in per_node(ports, "lucia:focus:*").values()) == 300
    assert AuditEntry.objects.filter(action="purge.fail", target_id=str(run.pk)).count() == 1
    assert not AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).exists()
    # A resume is refused too: the run is failed, and a new preview starts from the new layout.
    assert purge.execute_purge(run_id=run.pk).status == "failed"


def test_it_fails_a_finding_purge_whose_next_key_s_slot_moved_away_naming_it(lucia, disposable_cluster, monkeypatch,
                                                                             operator):
    """A finding purge walks its stored list and sends each slot group to the owner it knew:
    a slot moved meanwhile answers MOVED, and the run fails naming the slot and its new node."""
    ports = disposable_cluster.ports
    keys = planted(lucia, monkeypatch, disposable_cluster)
    preview = purge.preview_purge(action="delete",
                                  database=lucia, kind="finding", finding="no_ttl", keys=keys, actor=operator,
                                  batch_size=50)
    assert (preview.matched, preview.actionable) == (600, 600)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="r", actor=operator,
                              source="cli")
    with redis.Redis(port=ports[0]) as node:
        layout = keyspace_cluster.slot_map(node)
    last_key = keys[-1]  # in the last stored batch
    slot = key_slot(last_key)
    source = layout.owner_of(slot)
    target = next(address for address in sorted(layout.owners) if address != source)
    moved = []

    def reshard(checkpointed):
        if not moved:
            moved.extend(migrate(ports, slot, source, target, complete=True))

    with pytest.raises(purge.PurgeRefused) as stopped:
        purge.execute_purge(run_id=run.pk, progress=reshard)
    run.refresh_from_db()
    assert run.status == "failed" and last_key in moved
    assert run.error == str(stopped.value)
    if source == sorted(layout.owners)[0]:  # moved under the node being walked: its script found them gone
        assert f"slot {slot} is served by {target} now ({source} no longer serves it" in run.error
    else:  # moved before the purge reached that node: the slot check between nodes saw it
        assert f"slot {slot} moved from {source} to {target}" in run.error
    left = {key for found in per_node(ports, "lucia:session:*").values() for key in found}
    assert last_key in left and run.done == 600 - len(left) and run.done >= 50
    assert sum(row["done"] for row in run.node_stats.values()) == run.done
    assert AuditEntry.objects.filter(action="purge.fail", target_id=str(run.pk)).count() == 1


def test_it_refuses_an_explicit_key_preview_whose_slot_moves_under_it(lucia, disposable_cluster, monkeypatch,
                                                                     operator):
    """A preview of an explicit key list counts each node's keys where it knew them: a slot
    moved meanwhile leaves keys its node no longer serves, and the preview refuses as "being
    resharded", naming the node, instead of a raw Redis error; the run is left failed,
    nothing changed."""
    ports = disposable_cluster.ports
    keys = planted(lucia, monkeypatch, disposable_cluster)
    with redis.Redis(port=ports[0]) as node:
        layout = keyspace_cluster.slot_map(node)
    slot = key_slot(keys[-1])  # counted in the last page
    source = layout.owner_of(slot)
    target = next(address for address in sorted(layout.owners) if address != source)
    moved = []

    def reshard(read, stored):
        if not moved:
            moved.extend(migrate(ports, slot, source, target, complete=True))

    with pytest.raises(purge.PurgeRefused) as refused:
        purge.preview_purge(action="delete",
                            database=lucia, kind="finding", finding="no_ttl", keys=keys, actor=operator,
                            batch_size=50, progress=reshard)
    assert keys[-1] in moved
    assert f"is being resharded: {source} no longer serves" in str(refused.value)
    run = PurgeRun.objects.get()
    assert run.status == "failed" and run.error == str(refused.value)
    left = {key for found in per_node(ports, "lucia:session:*").values() for key in found}
    assert left == set(keys)  # a preview changes nothing


@pytest.mark.django_db(transaction=True)
def test_it_resumes_on_a_cluster_with_a_new_worker_after_one_is_killed_mid_purge(
        redis_cluster, redis_server, operator, tmp_path, monkeypatch):
    from continuity.tasks.purge import purge_task, resume_purges_task
    from continuity import seed

    seed.seed_all()
    monkeypatch.setenv("LUCIA_CLUSTER_URL", redis_cluster.url(0))
    RedisDatabase.objects.filter(name="lucia").update(url_env="LUCIA_CLUSTER_URL")
    lucia = RedisDatabase.objects.get(name="lucia")
    ports = redis_cluster.ports
    client = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    planted = {f"lucia:session:{i:06d}".encode() for i in range(6000)}
    survivors = {f"lucia:focus:{i:06d}".encode() for i in range(150)}
    for chunk in range(0, 6000, 1000):
        client.mset_nonatomic({f"lucia:session:{i:06d}".encode(): b"v" for i in range(chunk, chunk + 1000)})
    client.mset_nonatomic(dict.fromkeys(survivors, b"v"))
    broker = redis.Redis.from_url(redis_server.url(1))
    broker.flushdb()
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "REDIS_URL": redis_server.url(0), "LUCIA_CLUSTER_URL": redis_cluster.url(0),
           "CELERY_BROKER_URL": redis_server.url(1), "CACHE_URL": redis_server.url(2), "PURGE_LEASE_SECONDS": "2",
           "DJANGO_DEBUG": "0"}
    # 600 keys/s: the run takes ~10 s, so the kill below lands mid-purge, mid-node.
    _, run = confirmed(lucia, operator)
    PurgeRun.objects.filter(pk=run.pk).update(rate_cap=600, batch_size=100)
    log_path = tmp_path / "worker.log"
    workers = []
    try:
        with open(log_path, "wb") as log:
            workers.append(_worker(env, log))
            purge_task.delay(run.pk)
            wait_for(lambda: PurgeRun.objects.get(pk=run.pk).done >= 1000, 60, "the first worker to make progress")
            os.killpg(workers[0].pid, signal.SIGKILL)
            workers[0].wait(10)
            killed = PurgeRun.objects.get(pk=run.pk)
            assert killed.status == "running" and 1000 <= killed.done < 6000, log_path.read_text()[-3000:]
            assert set(killed.node_cursors.values()) != {"end"}  # some primary was left mid-way or untouched
            left_at_kill = sum(len(keys) for keys in per_node(ports, "lucia:session:*").values())
            # The resume runs uncapped: what is tested is that it resumes exactly, not its pace.
            PurgeRun.objects.filter(pk=run.pk).update(rate_cap=0)
            workers.append(_worker(env, log))
            wait_for(lambda: run.pk in purge.stalled_purges(lease_seconds=2), 30, "the lease to lapse")
            resume_purges_task.delay()
            final = wait_for(lambda: (r := PurgeRun.objects.get(pk=run.pk)).is_finished and r, 90,
                             "the second worker to resume and finish")
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(20)
        client.close()
    assert left_at_kill > 0, log_path.read_text()[-3000:]
    # The pages acted on but not checkpointed are taken from each node's marker: exact.
    # (Deleting shrinks a node's hash table, and SCAN may then return a key twice: the
    # second time it is already gone and counts as skipped.)
    assert (final.status, final.done, final.matched - final.skipped) == ("succeeded", 6000, 6000), \
        log_path.read_text()[-3000:]
    assert final.skipped <= 100 and final.resumes == 1
    assert set(final.node_cursors.values()) == {"end"}
    assert sum(row["done"] for row in final.node_stats.values()) == 6000
    assert sum(row["billed"] for row in final.node_stats.values()) == final.billed_commands
    remaining = {key for keys in per_node(ports, "*").values() for key in keys}
    assert remaining == survivors and not (remaining & planted)
    assert AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).count() == 1
