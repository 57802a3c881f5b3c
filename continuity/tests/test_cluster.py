"""Redis Cluster: detection, topology, and the refusals that stand in for reviews, purges
and browsing across primaries, against a real local 3-primary cluster (`redis_cluster`)."""

import redis


def test_it_runs_a_real_three_primary_cluster(redis_cluster, cluster_keys):
    assert all(port <= 55535 for port in redis_cluster.ports)
    for index in range(3):
        assert redis_cluster.cluster_info(index)["cluster_state"] == "ok"
    cluster_keys.mset_nonatomic({f"lucia:session:{i}".encode(): b"x" for i in range(300)})
    per_node = [redis.Redis(port=port).dbsize() for port in redis_cluster.ports]
    assert sum(per_node) == 300 and all(count > 0 for count in per_node)
