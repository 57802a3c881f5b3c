"""A job started over one transport and resumed over the other (issue 17, leftover 1).

The record's `REDIS_URL` emptied between the two attempts and the REST pair set (or the
reverse): the same standalone redis-server, reached at another address (the REST endpoint's
host:port instead of the server's). Its one recorded node is adopted whatever its address
(`keyspace.nodes.adopted`): a purge killed at each point of its loop finishes with `done`
equal to the keys Redis deleted and `billed_commands` equal to the `INFO commandstats` delta
of both attempts; a finding purge keeps its stored key list; an exact review keeps its
checkpoint. A run recorded on a Redis Cluster cannot continue over REST (one logical
primary): it is refused, saying so, and nothing is sent to the REST endpoint.
"""

import pytest

from conftest import REST_TOKEN, use_rest
from continuity import keyspace
from continuity.billing import FREE
from continuity.keyspace import purge as redis_purge
from continuity.models import ReviewRun
from continuity.operations import purge, review
from continuity.tests.clusters import point_at
from continuity.tests.test_engine_exactness import Crash, killed_at

SESSIONS, FOCUS = 600, 100


class Server:
    """The test redis-server's db 0 (behind the bridge too): planting, counting, switching."""

    def __init__(self, client, monkeypatch, url, bridge):
        self.client, self.monkeypatch, self.url, self.bridge = client, monkeypatch, url, bridge

    def over(self, transport):
        """`lucia` reached over `transport` from now on (new clients)."""
        if transport == "rest":
            use_rest(self.monkeypatch, self.bridge)
        else:
            self.monkeypatch.setenv("REDIS_URL", self.url)
            self.monkeypatch.delenv("UPSTASH_REDIS_REST_URL", raising=False)
            keyspace.forget_clients()

    def address(self, transport):
        host, port = (self.bridge.server.server_address[:2] if transport == "rest"
                      else ("127.0.0.1", self.client.connection_pool.connection_kwargs["port"]))
        return f"{host}:{port}"

    def plant(self):
        self.client.mset({f"lucia:session:{i:04d}".encode(): b"v" for i in range(SESSIONS)})
        for i in range(FOCUS):
            self.client.set(f"lucia:focus:{i:04d}".encode(), b"v", ex=600)

    def billed_since(self, before):
        total = 0
        for name, row in self.client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command.split("|")[0] not in FREE:
                total += row["calls"] - before.get(name, {}).get("calls", 0)
        return total


@pytest.fixture
def server(lucia, monitored, monkeypatch, redis_server, rest_bridge, settings):
    settings.PURGE_CHECKPOINT_SECONDS = 3600  # a checkpoint at the first page and at the end only
    yield Server(monitored, monkeypatch, redis_server.url(0), rest_bridge)
    keyspace.forget_clients()


def confirmed(database, operator, **target):
    preview = purge.preview_purge(database=database, actor=operator, batch_size=50, **target)
    return purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="transport switch",
                               actor=operator, source="cli")


SWITCHES = [("tcp", "rest"), ("rest", "tcp")]


@pytest.mark.parametrize("first,then", SWITCHES)
@pytest.mark.parametrize("point,nth", [("scanned", 5), ("acted", 5), ("checkpointed", 1), ("cleared", 1)])
def test_it_resumes_a_purge_over_the_other_transport_exactly(server, lucia, operator, first, then, point, nth):
    server.plant()
    server.over(first)
    run = confirmed(lucia, operator, kind="prefix", value=b"lucia:session:", action="delete", rate_cap=0)
    size, before = server.client.dbsize(), server.client.info("commandstats")
    with pytest.raises(Crash):
        purge.execute_purge(run_id=run.pk, fault=killed_at(point, nth))
    server.over(then)
    result = purge.execute_purge(run_id=run.pk, lease_seconds=0)
    run.refresh_from_db()
    assert result.status == "succeeded" and result.resumed
    assert run.billed_commands == server.billed_since(before)  # (before the DBSIZE below)
    assert run.done == size - server.client.dbsize() == SESSIONS  # what Redis deleted, once
    assert run.matched - run.skipped == SESSIONS and run.skipped <= 50
    # One node, under the address it was finished at: nothing counted twice, no node started again.
    assert list(run.node_stats) == [server.address(then)] and list(run.node_cursors) == [server.address(then)]
    assert run.node_stats[server.address(then)]["billed"] == run.billed_commands
    assert server.client.dbsize() == FOCUS and not server.client.exists(redis_purge.MARKER_PREFIX + str(run.pk).encode())


@pytest.mark.parametrize("first,then", SWITCHES)
def test_it_executes_a_finding_purge_previewed_over_the_other_transport(server, lucia, operator, first, then):
    server.plant()
    server.over(first)
    found = review.review_database(database=lucia, batch=200).run
    run = confirmed(lucia, operator, kind="finding", review_id=found.pk, finding="no_ttl", action="delete")
    assert run.target_keys.count() == SESSIONS  # stored under `first`'s address
    size, before = server.client.dbsize(), server.client.info("commandstats")
    server.over(then)  # killed over the other transport, then resumed over the first again
    with pytest.raises(Crash):
        purge.execute_purge(run_id=run.pk, fault=killed_at("acted", 3))
    server.over(first)
    purge.execute_purge(run_id=run.pk, lease_seconds=0)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.billed_commands == server.billed_since(before)  # (before the DBSIZE below)
    assert run.done == size - server.client.dbsize() == SESSIONS and run.matched == SESSIONS
    assert list(run.node_stats) == [server.address(first)]


@pytest.mark.parametrize("first,then", SWITCHES)
def test_it_resumes_an_exact_review_over_the_other_transport_exactly(server, lucia, first, then):
    server.plant()
    server.over(first)
    before = server.client.info("commandstats")
    with pytest.raises(Crash):  # right after its first checkpoint: nothing read and unrecorded
        review.review_database(database=lucia, batch=50, checkpoint_every=1, fault=killed_at("checkpointed", 1))
    run = ReviewRun.objects.get(status="running")
    (part,) = run.node_runs.all()
    assert part.address == server.address(first) and int(part.cursor) > 0
    run.node_runs.update(heartbeat_at=None)
    ReviewRun.objects.filter(pk=run.pk).update(heartbeat_at=None)
    server.over(then)
    result = review.review_database(database=lucia, run=run, checkpoint_every=3)
    run.refresh_from_db()
    assert result.status == "succeeded"
    assert run.keys_scanned == SESSIONS + FOCUS  # every key once: the checkpoint's cursor, not a new scan
    assert run.findings["no_ttl"] == SESSIONS
    assert run.billed_commands == server.billed_since(before)
    assert [p.address for p in run.node_runs.all()] == [server.address(then)]


# --- a Redis Cluster cannot be reached over REST ------------------------------------------------------
@pytest.fixture
def cluster_lucia(server, lucia, monkeypatch, request):
    """`lucia` on the test cluster (its sessions planted), and db 0 of the standalone server
    (the bridge's) holding the same key names: a purge over REST must not reach them."""
    cluster = request.getfixturevalue("redis_cluster")
    writer = request.getfixturevalue("cluster_keys")
    writer.mset_nonatomic({f"lucia:session:{i:04d}".encode(): b"v" for i in range(SESSIONS)})
    server.plant()
    return point_at(lucia, monkeypatch, cluster), writer


def over_rest_instead_of_the_cluster(server):
    server.monkeypatch.setenv("LUCIA_CLUSTER_URL", "")  # the record's URL variable emptied
    server.over("rest")


def test_it_refuses_to_resume_a_cluster_purge_over_rest(server, cluster_lucia, operator):
    database, writer = cluster_lucia
    run = confirmed(database, operator, kind="prefix", value=b"lucia:session:", action="delete", rate_cap=0)
    with pytest.raises(Crash):
        purge.execute_purge(run_id=run.pk, fault=killed_at("acted", 4))
    checkpointed = type(run).objects.get(pk=run.pk)
    left = len(list(writer.scan_iter(match=b"lucia:session:*")))
    over_rest_instead_of_the_cluster(server)
    requests = server.bridge.requests
    with pytest.raises(purge.PurgeRefused) as refused:
        purge.execute_purge(run_id=run.pk, lease_seconds=0)
    run.refresh_from_db()
    message = str(refused.value)
    assert run.status == "failed" and run.error == message
    assert "recorded on 3 primaries of a Redis Cluster" in message
    assert f"reached by its REST API ({server.bridge.url})" in message and "one logical primary" in message
    assert REST_TOKEN not in message
    assert f"matched {checkpointed.matched:,}, deleted {checkpointed.done:,}" in message
    assert (run.matched, run.done) == (checkpointed.matched, checkpointed.done)  # its checkpoint's, as said
    assert server.bridge.requests == requests  # nothing sent over REST
    assert server.client.dbsize() == SESSIONS + FOCUS  # the server behind the REST endpoint untouched
    assert len(list(writer.scan_iter(match=b"lucia:session:*"))) == left  # nor the cluster


def test_it_refuses_to_resume_a_cluster_review_over_rest(server, cluster_lucia):
    database, _writer = cluster_lucia
    with pytest.raises(Crash):
        review.review_database(database=database, batch=50, checkpoint_every=1, fault=killed_at("checkpointed", 1))
    run = ReviewRun.objects.get(status="running")
    run.node_runs.update(heartbeat_at=None)
    ReviewRun.objects.filter(pk=run.pk).update(heartbeat_at=None)
    over_rest_instead_of_the_cluster(server)
    requests = server.bridge.requests
    result = review.review_database(database=database, run=run)
    run.refresh_from_db()
    assert result.status == "failed" and server.bridge.requests == requests
    for part in run.node_runs.all():
        assert part.status == "failed" and "a Redis Cluster cannot be reached over REST" in part.error, part.error
        assert f"reached by its REST API ({server.bridge.url})" in part.error
    assert "a Redis Cluster cannot be reached over REST" in run.error
