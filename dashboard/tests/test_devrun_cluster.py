"""`DEMO_CLUSTER=1 make run`: the demo keyspace written across a real local 3-primary cluster."""

import redis

from continuity import demo
from dashboard.devtools import devrun


def test_it_writes_the_demo_keyspace_across_every_primary_of_the_cluster(redis_cluster, cluster_keys):
    assert devrun.cluster_demo_keyspace(redis_cluster.ports, keys=900, seed=3) == 900
    on_nodes = {}
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            on_nodes[port] = set(node.scan_iter(count=1000))
    assert all(len(keys) > 200 for keys in on_nodes.values())  # ~300 each: slots spread the keys
    specs = list(demo.lucia_keyspace(900, seed=3, violation_rate=0.01))
    assert set().union(*on_nodes.values()) == {spec.key for spec in specs}
    assert sum(len(keys) for keys in on_nodes.values()) == 900  # each key on exactly one primary
    assert {spec.violation for spec in specs} > {None}  # the demo's deliberate violations are in it
