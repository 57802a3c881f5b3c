"""Redis Cluster: detection, topology, reviews across primaries and the refusals that
remain, against a real local 3-primary cluster (`redis_cluster`). Browsing across
primaries: test_cluster_browse.py."""

import pytest
import redis

from continuity import keyspace
from continuity.keyspace import capabilities
from continuity.keyspace import cluster as keyspace_cluster
from continuity.keyspace import nodes
from continuity.tests.clusters import point_at


@pytest.fixture
def cluster_lucia(lucia, redis_cluster, cluster_keys, monkeypatch):
    """The seeded `lucia` record (its five namespaces) pointed at node 0 of the cluster."""
    return point_at(lucia, monkeypatch, redis_cluster)


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
    with nodes.primaries(lucia) as keyspace_of:  # a keyspace of one node: the URL's
        assert [node.address for node in keyspace_of.nodes] == [nodes.address_of(keyspace.client_for(lucia))]
        assert not keyspace_of.is_cluster and keyspace_of.check() is None


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
    # Its primaries come from CLUSTER NODES, which this user may not run: jobs say so.
    with pytest.raises(redis.exceptions.NoPermissionError) as refused, nodes.primaries(cluster_lucia):
        pass
    assert keyspace.describe_error(refused.value).startswith(
        "This Redis user may not run CLUSTER NODES (ACL): on a Redis Cluster the slot map and the primaries come "
        "from CLUSTER NODES: +cluster|nodes.")


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


# --- reviews across primaries, and the refusals that remain ---------------------------------
def write_keyspace(cluster_keys, count=600):
    """`count` session keys without a TTL (a finding, and a purge target), spread over the
    primaries by a cluster client."""
    cluster_keys.mset_nonatomic({f"lucia:session:{i}".encode(): b"v" for i in range(count)})
    return count


def reset_stats(redis_cluster):
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            node.config_resetstat()


def calls_per_node(redis_cluster, *commands):
    """{port: calls of `commands` since reset_stats} on every node (script-internal calls included)."""
    out = {}
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            stats = node.info("commandstats")
        out[port] = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in commands)
    return out


def keys_per_node(redis_cluster):
    out = []
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            out.append(node.dbsize())
    return out


NO_READS = ("scan", "evalsha", "eval", "pttl", "type", "memory|usage", "get", "exists", "randomkey")


def test_it_reviews_a_cluster_across_its_primaries_in_one_run(cluster_lucia, cluster_keys, redis_cluster):
    from continuity.models import ReviewRun
    from continuity.operations import review

    count = write_keyspace(cluster_keys)
    per_node = keys_per_node(redis_cluster)
    reset_stats(redis_cluster)
    result = review.review_database(database=cluster_lucia)
    run = ReviewRun.objects.get(pk=result.run.pk)
    assert (result.status, run.status, run.error, result.error) == ("succeeded", "succeeded", "", "")
    assert (run.keys_scanned, result.findings["no_ttl"], run.missing_nodes) == (count, count, [])
    assert sorted(node.keys_scanned for node in run.node_runs.all()) == sorted(per_node)
    # Every primary was scanned (inside the scan script: EVALSHA on each node).
    assert all(calls > 0 for calls in calls_per_node(redis_cluster, "scan").values())


def test_it_reviews_a_cluster_unsaved_too(cluster_lucia, cluster_keys):
    from continuity.operations import review

    count = write_keyspace(cluster_keys)
    result = review.review_database(database=cluster_lucia, persist=False)
    assert (result.status, result.keys_scanned, result.findings["no_ttl"]) == ("succeeded", count, count)


def test_it_samples_every_primary_for_a_sampled_review_of_a_cluster(cluster_lucia, cluster_keys, redis_cluster):
    """No longer refused: every primary gives its share of the sample (in proportion to its
    keys) and the estimate holds the count (every key is a no_ttl finding here)."""
    from continuity.models import ReviewRun
    from continuity.operations import review

    count = write_keyspace(cluster_keys)
    reset_stats(redis_cluster)
    result = review.review_database(database=cluster_lucia, sample=100)
    run = ReviewRun.objects.get(pk=result.run.pk)
    assert (run.status, run.sampled, run.dbsize_before) == ("succeeded", True, count)
    assert all(scans > 0 for scans in calls_per_node(redis_cluster, "scan").values())
    assert run.node_runs.filter(status="succeeded", sample_size__gt=0).count() == 3
    e = run.estimates()["no_ttl"]
    # Every key drawn had no TTL: the estimate is all of them, the interval below it a little.
    assert e.sampled and e.value == e.high == count and count * 0.9 < e.low < count


def test_it_fans_the_review_task_out_in_a_chord_eagerly(cluster_lucia, cluster_keys, redis_cluster, eager,
                                                        django_capture_on_commit_callbacks):
    from continuity.operations import review_requests
    from continuity.tasks.review import review_database_task

    count = write_keyspace(cluster_keys)
    run, created = review_requests.request_review(database=cluster_lucia)
    with django_capture_on_commit_callbacks(execute=True):  # the chord is sent when the task's work commits
        outcome = review_database_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert created and outcome.state == "SUCCESS"
    assert (run.status, run.keys_scanned, run.findings["no_ttl"]) == ("succeeded", count, count)
    assert run.node_runs.filter(status="succeeded").count() == 3


def test_it_still_reviews_a_standalone_database_as_before(lucia, monitored):
    from continuity.operations import review

    monitored.mset({f"lucia:session:{i}".encode(): b"v" for i in range(600)})
    monitored.set(b"lucia:focus:1", b"v", ex=60)
    result = review.review_database(database=lucia)
    assert (result.status, result.error, result.keys_scanned) == ("succeeded", "", 601)
    assert result.findings["no_ttl"] >= 600
    assert "error" not in result.as_json()


# --- the database page's topology region ------------------------------------------------------
def node_rows(page):
    """[{address, role, slots, keys, reachable}] of the topology table in `page`."""
    import html
    import re

    rows = []
    for row in re.findall(r'<tr data-testid="topology-node">(.*?)</tr>', page, re.S):
        cells = dict(re.findall(r'data-testid="node-(\w+)">(.*?)</td>', row, re.S))
        rows.append({name: html.unescape(re.sub(r"<[^>]+>", "", value)).strip() for name, value in cells.items()})
    return rows


def slots_of(ranges):
    covered = []
    for part in filter(None, ranges.split(", ")):
        first, _, last = part.partition("-")
        covered.extend(range(int(first), int(last or first) + 1))
    return covered


def topology_url(name="lucia"):
    from django.urls import reverse

    return reverse("dashboard:database_topology", args=[name])


def test_it_shows_each_primary_with_its_slots_and_keys(viewer_client, cluster_lucia, cluster_keys, redis_cluster):
    written = write_keyspace(cluster_keys, 1000)
    response = viewer_client.get(topology_url(), HTTP_HX_REQUEST="true")
    page = response.content.decode()
    rows = node_rows(page)
    assert response.status_code == 200 and "<html" not in page  # the region alone
    assert sorted(row["address"] for row in rows) == sorted(f"127.0.0.1:{p}" for p in redis_cluster.ports)
    assert [row["role"] for row in rows] == ["primary"] * 3 and [row["reachable"] for row in rows] == ["yes"] * 3
    covered = [slot for row in rows for slot in slots_of(row["slots"])]
    assert sorted(covered) == list(range(16384))  # every slot once
    by_address = {row["address"]: int(row["keys"]) for row in rows}
    assert sum(by_address.values()) == written
    for port, count in zip(redis_cluster.ports, keys_per_node(redis_cluster)):
        assert by_address[f"127.0.0.1:{port}"] == count > 0
    assert "Redis Cluster: 3 primaries, 16,384 of 16,384 slots assigned, 1,000 keys." in page
    assert "refuse a cluster" not in page  # reviews, purges and the browser do work across primaries
    assert "Reviews, purges and the key browser work across every primary" in page


def test_it_loads_the_topology_into_the_database_page(viewer_client, cluster_lucia, cluster_keys, redis_cluster):
    from django.urls import reverse

    write_keyspace(cluster_keys, 10)
    page = viewer_client.get(reverse("dashboard:database_detail", args=["lucia"])).content.decode()
    assert f'hx-get="{topology_url()}" hx-trigger="load"' in page and "Asking Redis…" in page
    assert "<th>Cluster mode</th><td>Detect (INFO cluster)</td>" in page
    full = viewer_client.get(topology_url()).content.decode()  # without htmx: the whole page, region filled
    assert "<html" in full and "Database reference" in full and len(node_rows(full)) == 3


def test_it_shows_standalone_for_a_standalone_database(viewer_client, lucia, monitored):
    page = viewer_client.get(topology_url(), HTTP_HX_REQUEST="true").content.decode()
    assert 'data-testid="topology-mode">Standalone: one Redis node.<' in page and node_rows(page) == []


def test_it_shows_a_redis_failure_in_the_region(viewer_client, cluster_lucia, monkeypatch):
    cluster_lucia.cluster_mode = "standalone"
    cluster_lucia.save(update_fields=["cluster_mode"])
    response = viewer_client.get(topology_url(), HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200 and 'data-testid="topology-error"' in page
    assert "lucia is marked standalone on its record, but the server reports cluster_enabled:1" in page
    monkeypatch.delenv("LUCIA_CLUSTER_URL")
    page = viewer_client.get(topology_url(), HTTP_HX_REQUEST="true").content.decode()
    assert "The environment variable LUCIA_CLUSTER_URL is not set" in page and 'data-testid="topology-error"' in page


def test_it_shows_a_killed_node_as_unreachable(viewer_client, lucia, disposable_cluster, monkeypatch):
    import time

    monkeypatch.setenv("LUCIA_CLUSTER_URL", disposable_cluster.url(0))
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_CLUSTER_URL")
    killed = f"127.0.0.1:{disposable_cluster.ports[1]}"
    disposable_cluster.kill(1)  # SIGKILL: no goodbye to the other nodes

    page = viewer_client.get(topology_url(), HTTP_HX_REQUEST="true").content.decode()
    rows = {row["address"]: row for row in node_rows(page)}
    assert len(rows) == 3 and rows[killed]["keys"] == "—"
    assert rows[killed]["reachable"].startswith("no: Redis is unreachable")
    assert [rows[f"127.0.0.1:{p}"]["reachable"] for p in (disposable_cluster.ports[0], disposable_cluster.ports[2])] \
        == ["yes", "yes"]
    assert "1 node did not answer:" in page and "keys unknown (a primary did not answer)" in page

    # Once the primaries agree it failed, the page says so too; the others still answer.
    deadline = time.monotonic() + 30
    while disposable_cluster.cluster_info(0).get("cluster_state") != "fail" and time.monotonic() < deadline:
        time.sleep(0.2)
    page = viewer_client.get(topology_url(), HTTP_HX_REQUEST="true").content.decode()
    rows = {row["address"]: row for row in node_rows(page)}
    assert rows[killed]["role"] == "primary cluster says fail" and rows[killed]["reachable"].startswith("no:")
    assert sum(row["reachable"] == "yes" for row in rows.values()) == 2

    # The node the URL names is down: a message in the region, not a 500.
    monkeypatch.setenv("LUCIA_CLUSTER_URL", disposable_cluster.url(1))
    response = viewer_client.get(topology_url(), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Redis is unreachable" in response.content.decode()
    assert 'data-testid="topology-error"' in response.content.decode()


def test_it_lets_an_operator_declare_the_cluster_mode_with_audit(operator_client, viewer_client, lucia):
    from django.urls import reverse

    from dashboard.models import AuditEntry

    url = reverse("dashboard:database_edit", args=["lucia"])
    data = {"name": "lucia", "environment": "production", "provider": "Upstash", "key_prefix": "lucia:",
            "url_env": "REDIS_URL"}
    assert viewer_client.post(url, {**data, "cluster_mode": "cluster"}).status_code == 403
    assert 'name="cluster_mode"' in operator_client.get(url).content.decode()
    assert operator_client.post(url, {**data, "cluster_mode": "cluster"}).status_code == 302
    lucia.refresh_from_db()
    assert lucia.cluster_mode == "cluster"
    entry = AuditEntry.objects.filter(action="database.edit").latest("id")
    assert (entry.before["cluster_mode"], entry.after["cluster_mode"]) == ("auto", "cluster")
    assert operator_client.post(url, data).status_code == 302  # a post without the field keeps it
    lucia.refresh_from_db()
    assert lucia.cluster_mode == "cluster"
    response = operator_client.post(url, {**data, "cluster_mode": "sharded"})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()


def test_it_shows_a_review_of_a_cluster_on_its_page(operator_client, cluster_lucia, cluster_keys, eager, redis_cluster,
                                                    django_capture_on_commit_callbacks):
    from django.urls import reverse

    from continuity.models import ReviewRun

    count = write_keyspace(cluster_keys)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("continuity:review_start", args=["lucia"]))
    run = ReviewRun.objects.get()
    assert (run.status, run.error, run.keys_scanned) == ("succeeded", "", count)
    page = operator_client.get(response["Location"]).content.decode()
    assert 'data-testid="review-error"' not in page and 'data-testid="review-nodes"' in page
    for port in redis_cluster.ports:
        assert f"127.0.0.1:{port}" in page
