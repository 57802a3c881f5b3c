"""The cluster review benchmark (`bench.cluster`) end to end on 2,000 keys: its own Postgres,
broker, single redis-server and 3-primary cluster, real Celery workers, the production
review path. No timing assertions (speed is measured by `make bench`); what is asserted is
what the benchmark's figures rest on: the two sides review the same keys with the same
findings, and the billed commands the runs count are what Redis executed."""

import json
import subprocess
import sys

import pytest

from bench import cluster
from continuity import demo
from continuity.tests.test_review import expected_from_specs

KEYS = 2_000


@pytest.fixture(scope="module")
def report():
    """One benchmark run in a subprocess (it sets Django up on its own Postgres)."""
    done = subprocess.run([sys.executable, "-m", "bench.cluster", "--keys", str(KEYS), "--repeats", "1"],
                          cwd=cluster.ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_it_reviews_the_same_keys_with_the_same_findings_on_one_node_and_on_the_cluster(report):
    single, on_cluster = report["single"]["runs"][0], report["cluster"]["runs"][0]
    one_process = report["cluster_sequential"]["runs"][0]
    assert single["counts"] == on_cluster["counts"] == one_process["counts"] and report["exact"] is True
    # What the generator planted, derived from its specs as the review tests derive it.
    findings, per_namespace, foreign = expected_from_specs(cluster.static_keyspace(KEYS))
    assert single["counts"]["keys"] == KEYS and single["counts"]["foreign"] == foreign > 0
    assert single["counts"]["findings"] == findings and sum(findings.values()) > 0
    assert {label: ns["keys"] for label, ns in single["counts"]["namespaces"].items()} == per_namespace
    # Through the production path: one part per node, a chord of one per primary on the cluster.
    assert (single["strategy"], on_cluster["strategy"]) == ("scan_script", "scan_script")
    assert [node["keys"] for node in single["nodes"]] == [KEYS] and len(on_cluster["nodes"]) == report["primaries"] == 3
    assert sum(node["keys"] for node in on_cluster["nodes"]) == KEYS
    assert sorted(node["keys"] for node in on_cluster["nodes"]) == report["keys_per_node"]
    assert all(node["keys"] > 0 for node in on_cluster["nodes"])
    assert report["workers"] == {"single": 1, "cluster": 3, "cluster_sequential": 1}
    assert report["load_1m_before"]["cluster"][0] is not None
    assert report["ratio"] > 0 and report["projection"]["wall_s"]["1000000"]["1"] > 0


def test_it_counts_on_one_node_exactly_the_billed_commands_redis_executed(report):
    single = report["single"]["runs"][0]
    assert single["billed_commands"] == single["commandstats_billed"] > 2 * KEYS
    assert single["uncounted"] == 0 and report["single"]["billed_agrees_every_run"] is True


def test_it_counts_on_the_cluster_read_part_after_part_exactly_the_billed_commands_redis_executed(report):
    """One worker process: the parts run one after another and the last one ends the run.
    Each part's count equals its node's commandstats; the run adds its own CLUSTER NODES, two
    per primary (the primaries and their migrations when the parts are made, the slot check at
    the merge); the total equals the nodes' commandstats summed, to the command."""
    run = report["cluster_sequential"]["runs"][0]
    for node in run["nodes"]:
        topology_reads = node["commandstats_by_command"].get("cluster|nodes", 0)
        assert node["billed_commands"] == node["commandstats_billed"] - topology_reads > 2 * node["keys"]
    assert run["commandstats_by_command"]["cluster|nodes"] == 6
    assert run["billed_commands"] == sum(node["billed_commands"] for node in run["nodes"]) + 6
    assert run["billed_commands"] == run["commandstats_billed"] and run["uncounted"] == 0


def test_it_counts_per_primary_on_the_cluster_read_in_parallel(report):
    """Three worker processes: each part's count equals its node's commandstats, and the run
    counts the parts and its own CLUSTER NODES. Two parts ending at once both call `finish`;
    the run's row lock lets only one read the slot map, so nothing goes uncounted."""
    run = report["cluster"]["runs"][0]
    for node in run["nodes"]:
        topology_reads = node["commandstats_by_command"].get("cluster|nodes", 0)
        assert node["billed_commands"] == node["commandstats_billed"] - topology_reads > 2 * node["keys"]
    assert run["billed_commands"] == sum(node["billed_commands"] for node in run["nodes"]) + 6
    assert run["commandstats_by_command"]["cluster|nodes"] == 6
    assert run["uncounted"] == run["commandstats_billed"] - run["billed_commands"] == 0


def test_it_keeps_every_key_alive_and_every_finding_in_the_static_keyspace():
    original = list(demo.lucia_keyspace(5_000, seed=42))
    static = list(cluster.static_keyspace(5_000))
    assert [s.key for s in static] == [s.key for s in original]
    assert [s.violation for s in static] == [s.violation for s in original]
    assert all(s.ttl_seconds is None or s.ttl_seconds >= cluster.TTL_FLOOR_S for s in static)
    assert all(s.ttl_seconds == o.ttl_seconds for s, o in zip(static, original)
               if s.violation == "ttl_above_max" or o.ttl_seconds is None)
    # The floor is below every namespace's maximum: no in-policy key becomes a finding.
    assert cluster.TTL_FLOOR_S < min(demo.MAX_TTL.values())


def test_it_projects_the_wall_time_of_n_primaries_from_the_per_node_rate():
    assert cluster.project(node_rate=250_000, overhead_s=0.1, keys=1_000_000, primaries=1) == pytest.approx(4.1)
    assert cluster.project(node_rate=250_000, overhead_s=0.1, keys=1_000_000, primaries=4) == pytest.approx(1.1)
