"""The test clusters are kept for the run and reset between tests (`LocalRedisCluster.reset`):
after a reset a cluster must be indistinguishable, for a test, from one just created."""

import redis
from redis.crc import key_slot


def node(port):
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True)


def owner_of(cluster, slot):
    with node(cluster.ports[0]) as first:
        return next(int(port) for start, end, (_host, port, *_rest), *_replicas in first.execute_command(
            "CLUSTER", "SLOTS") if start <= slot <= end)


def test_it_resets_keys_scripts_users_config_stats_and_moved_or_migrating_slots(disposable_cluster):
    cluster = disposable_cluster
    ports = cluster.ports
    with redis.RedisCluster(host="127.0.0.1", port=ports[0]) as writer:
        writer.mset_nonatomic({f"k{i}": "v" for i in range(300)})
    ids = {}
    for port in ports:
        with node(port) as client:
            ids[port] = client.execute_command("CLUSTER", "MYID")
            sha = client.script_load("return 1")
            client.execute_command("ACL", "SETUSER", "someone", "on", ">pw", "~*", "+@all")
            client.config_set("cluster-node-timeout", 500)
    # An empty slot moved and told to every node, as the slot-move tests do; a slot left
    # half-migrated with its key already on the importing node.
    moved = next(slot for slot in range(16384) if slot not in {key_slot(f"k{i}".encode()) for i in range(300)})
    source = owner_of(cluster, moved)
    target = next(port for port in ports if port != source)
    for port in ports:
        with node(port) as client:
            client.execute_command("CLUSTER", "SETSLOT", moved, "NODE", ids[target])
    migrating = key_slot(b"k2")
    half_from = owner_of(cluster, migrating)
    half_to = next(port for port in ports if port != half_from)
    with node(half_to) as client:
        client.execute_command("CLUSTER", "SETSLOT", migrating, "IMPORTING", ids[half_from])
    with node(half_from) as client:
        client.execute_command("CLUSTER", "SETSLOT", migrating, "MIGRATING", ids[half_to])
        client.execute_command("MIGRATE", "127.0.0.1", half_to, "", 0, 5000, "KEYS", "k2")
    assert owner_of(cluster, moved) == target != source

    cluster.reset()

    for port in ports:
        with node(port) as client:
            # Statistics first: only this connection's own set-up and INFO, nothing the test ran.
            assert set(client.info("commandstats")) <= {"cmdstat_hello", "cmdstat_client|setinfo", "cmdstat_info",
                                                        "cmdstat_config|resetstat"}
            assert client.dbsize() == 0 and client.acl_users() == ["default"]
            assert client.script_exists(sha) == [False]
            assert client.config_get("cluster-node-timeout") == {"cluster-node-timeout": "3000"}
            mine = next(line for line in client.execute_command("CLUSTER", "NODES").splitlines() if "myself" in line)
            assert "[" not in mine  # no slot left migrating or importing
            assert client.cluster("info")["cluster_state"] == "ok"
    assert owner_of(cluster, moved) == source and owner_of(cluster, migrating) == half_from


def test_it_fails_each_primary_back_to_where_it_was_created(failover_cluster):
    cluster = failover_cluster
    replicas = {port: cluster.replica_of(port) for port in cluster.ports}
    for port in cluster.ports[:2]:
        cluster.failover(replicas[port])
    assert [cluster.role_of(port) for port in cluster.ports] == ["slave", "slave", "master"]

    cluster.reset()

    assert [cluster.role_of(port) for port in cluster.ports] == ["master"] * 3
    assert {port: cluster.replica_of(port) for port in cluster.ports} == replicas
    assert all(cluster.replication(port)["master_link_status"] == "up" for port in cluster.replica_ports)
