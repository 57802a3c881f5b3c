"""Redis Cluster: detection, topology, and the refusals that stand in for reviews, purges
and browsing across primaries, against a real local 3-primary cluster (`redis_cluster`)."""

import pytest
import redis

from continuity import keyspace
from continuity.keyspace import capabilities
from continuity.keyspace import cluster as keyspace_cluster


@pytest.fixture
def cluster_lucia(lucia, redis_cluster, cluster_keys, monkeypatch):
    """The seeded `lucia` record (its five namespaces) pointed at node 0 of the cluster."""
    monkeypatch.setenv("LUCIA_CLUSTER_URL", redis_cluster.url(0))
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_CLUSTER_URL")
    lucia.refresh_from_db()
    return lucia


@pytest.fixture
def acl_user(redis_cluster):
    """Make `name` on every node (ACLs are per node) with `rules`; deleted after the test."""
    made = []

    def make(name, *rules):
        for port in redis_cluster.ports:
            node = redis.Redis(port=port)
            node.execute_command("ACL", "SETUSER", name, "reset", "on", ">pw-for-tests", "~*", "&*", *rules)
            node.close()
        made.append(name)
        return f"redis://{name}:pw-for-tests@127.0.0.1:{redis_cluster.ports[0]}/0"

    yield make
    for port in redis_cluster.ports:
        node = redis.Redis(port=port)
        for name in made:
            node.execute_command("ACL", "DELUSER", name)
        node.close()


def test_it_runs_a_real_three_primary_cluster(redis_cluster, cluster_keys):
    assert all(port <= 55535 for port in redis_cluster.ports)
    for index in range(3):
        assert redis_cluster.cluster_info(index)["cluster_state"] == "ok"
    cluster_keys.mset_nonatomic({f"lucia:session:{i}".encode(): b"x" for i in range(300)})
    per_node = [redis.Redis(port=port).dbsize() for port in redis_cluster.ports]
    assert sum(per_node) == 300 and all(count > 0 for count in per_node)


# --- detection ----------------------------------------------------------------------------
def test_it_detects_a_cluster_from_any_node_and_remembers_it_on_the_client(cluster_lucia, redis_cluster, monkeypatch):
    for index in range(3):
        monkeypatch.setenv("LUCIA_CLUSTER_URL", redis_cluster.url(index))
        client = keyspace.client_for(cluster_lucia)
        assert keyspace_cluster.mode_of(cluster_lucia) == "cluster"
        assert capabilities.of(client).cluster == "cluster"
    node = redis.Redis(port=redis_cluster.ports[2])
    node.config_resetstat()
    assert keyspace_cluster.mode_of(cluster_lucia) == "cluster"
    assert "cmdstat_info" not in node.info("commandstats")  # asked once per client, then remembered
    node.close()


def test_it_detects_a_standalone_server_as_before(lucia):
    assert keyspace_cluster.mode_of(lucia) == "standalone"
    assert capabilities.of(keyspace.client_for(lucia)).cluster == "standalone"
    assert keyspace.topology(lucia).mode == "standalone" and keyspace.topology(lucia).nodes == ()
    keyspace.refuse_partial(lucia, action="review")  # no refusal


def test_it_falls_back_to_cluster_myid_where_info_is_refused(cluster_lucia, acl_user, monkeypatch):
    monkeypatch.setenv("LUCIA_CLUSTER_URL", acl_user("noinfo", "+@all", "-info"))
    client = keyspace.client_for(cluster_lucia)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.info("cluster")
    assert keyspace_cluster.mode_of(cluster_lucia) == "cluster"


def test_it_trusts_the_declared_mode_only_where_the_server_cannot_say(cluster_lucia, acl_user, monkeypatch):
    monkeypatch.setenv("LUCIA_CLUSTER_URL", acl_user("blind", "+@all", "-info", "-cluster"))
    assert keyspace_cluster.detect(keyspace.client_for(cluster_lucia)) == "unknown"
    assert keyspace_cluster.mode_of(cluster_lucia) == "standalone"  # auto, undetectable: as before
    cluster_lucia.cluster_mode = "cluster"
    assert keyspace_cluster.mode_of(cluster_lucia) == "cluster"
    with pytest.raises(keyspace.ClusterNotSupported) as refused:
        keyspace.refuse_partial(cluster_lucia, action="review")
    assert str(refused.value) == ("lucia is marked as a Redis Cluster; reviews across primaries are not supported "
                                  "yet, so this review would see only one node's keys. Nothing was reviewed.")


def test_it_refuses_a_declared_mode_the_server_contradicts(cluster_lucia, lucia):
    cluster_lucia.cluster_mode = "standalone"
    with pytest.raises(keyspace_cluster.ClusterModeMismatch, match="lucia is marked standalone on its record, but "
                       "the server reports cluster_enabled:1"):
        keyspace_cluster.mode_of(cluster_lucia)
    cluster_lucia.cluster_mode = "cluster"
    assert keyspace_cluster.mode_of(cluster_lucia) == "cluster"
    cluster_lucia.url_env = "REDIS_URL"  # the standalone test server
    with pytest.raises(keyspace_cluster.ClusterModeMismatch, match="marked cluster on its record, but the server "
                       "reports cluster support disabled"):
        keyspace_cluster.mode_of(cluster_lucia)


def test_it_parses_cluster_nodes_with_replicas_migrations_and_failures():
    text = ("a1 10.0.0.1:6379@16379 myself,master - 0 0 1 connected 0-5000 5002 [5001->-b2]\n"
            "b2 10.0.0.2:6379@16379,node-b master,fail? - 0 0 2 connected 5001 5003-16383\n"
            "c3 10.0.0.3:6379@16379 slave a1 0 0 1 connected\n"
            "d4 :0@0 master,noaddr - 0 0 0 disconnected\n")
    nodes = keyspace_cluster.parse_nodes(text)
    assert [(n.node_id, n.role, n.address, n.slot_ranges) for n in nodes] == [
        ("a1", "primary", "10.0.0.1:6379", "0-5000, 5002"),
        ("b2", "primary", "10.0.0.2:6379", "5001, 5003-16383"),
        ("d4", "primary", "", ""),
        ("c3", "replica", "10.0.0.3:6379", ""),
    ]
    assert nodes[1].cluster_says_failing and not nodes[0].cluster_says_failing
    assert nodes[3].primary_id == "a1"
    assert sum(n.slot_count for n in nodes) == 16384
