"""One engine, exact on both topologies (issue 16, items 1 and 4), against a real redis-server
and a real 3-primary Redis Cluster.

- A purge killed at each named point of its loop (`execute_purge(fault=…)`: a page read and
  not acted on, acted on and not checkpointed, checkpointed, markers deleted and the final
  row not written) is resumed by a new call: `done` is what Redis deleted, and the run's
  billed commands are the INFO commandstats delta of both attempts, on each topology.
- The same through a Postgres outage: the run stops resumable, then finishes exactly.
- Every job kind × {standalone, cluster} × {clean, resumed after a kill, NOSCRIPT, ACL
  refusal}: the run's `billed_commands` equals the commandstats delta summed over the nodes,
  free commands (`billing.FREE`, the app's own list) left out.
- A review stopped by a Redis error (its worker alive) bills what Redis executed: the reads
  since its checkpoint and the round trip in flight.
"""

import pytest
import redis

from continuity.billing import FREE
from continuity.keyspace import purge as redis_purge
from continuity.models import Namespace, PolicyReport, PurgeRun, ReviewRun
from continuity.operations import purge, review
from continuity.tests.clusters import point_at

pytestmark = pytest.mark.usefixtures("transport")

SESSIONS, FOCUS = 600, 100


class Crash(Exception):
    """Stands in for a worker killed at a fault point."""


class Space:
    """The keyspace a test works on: `lucia` pointed at a standalone redis-server or at a
    3-primary cluster, a client that writes to it, and its nodes' ports."""

    def __init__(self, kind, database, writer, ports):
        self.kind, self.database, self.writer, self.ports = kind, database, writer, ports

    def nodes(self):
        return [redis.Redis(port=port) for port in self.ports]

    def stats(self):
        out = []
        for node in self.nodes():
            with node:
                out.append(node.info("commandstats"))
        return out

    def billed_since(self, before):
        """Commands the nodes executed since `before`, free ones left out: what Upstash bills."""
        total = 0
        for was, now in zip(before, self.stats()):
            for name, row in now.items():
                command = name.removeprefix("cmdstat_")
                if command.split("|")[0] not in FREE:
                    total += row["calls"] - was.get(name, {}).get("calls", 0)
        return total

    def keys(self, match):
        found = set()
        for node in self.nodes():
            with node:
                found.update(node.scan_iter(match=match, count=1000))
        return found

    def flush_scripts(self):
        for node in self.nodes():
            with node:
                node.script_flush()

    def plant(self):
        self.writer.mset_nonatomic({f"lucia:session:{i:04d}".encode(): b"v" for i in range(SESSIONS)}) \
            if self.kind == "cluster" else self.writer.mset({f"lucia:session:{i:04d}".encode(): b"v"
                                                              for i in range(SESSIONS)})
        for i in range(FOCUS):
            self.writer.set(f"lucia:focus:{i:04d}".encode(), b"v", ex=60)


@pytest.fixture(params=["standalone", "cluster"])
def space(request, lucia, monkeypatch, redis_server):
    if request.param == "standalone":
        client = redis.Redis.from_url(redis_server.url(0))
        client.flushdb()
        yield Space("standalone", lucia, client, [redis_server.port])
        client.close()
        return
    cluster = request.getfixturevalue("redis_cluster")
    writer = request.getfixturevalue("cluster_keys")  # every primary flushed
    yield Space("cluster", point_at(lucia, monkeypatch, cluster), writer, cluster.ports)


def queued(space, operator, **target):
    preview = purge.preview_purge(database=space.database, actor=operator, **{"action": "delete", **target})
    return purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="exactness",
                               actor=operator, source="cli")


def killed_at(point, nth):
    """A fault hook that kills the job the `nth` time it reaches `point`."""
    seen = []

    def fault(name, node):
        if name == point:
            seen.append(node)
            if len(seen) == nth:
                raise Crash(f"killed at {point}")

    return fault


# --- a purge killed at each point of its loop ---------------------------------------------------
@pytest.mark.parametrize("point,nth", [
    ("scanned", 5),       # a page read (its SCAN recorded by the marker written before it), not acted on
    ("acted", 5),         # acted on and recorded in Redis, not checkpointed in Postgres
    ("checkpointed", 1),  # the first page, checkpointed
    ("cleared", 1),       # every marker deleted (and that checkpointed), the final row not written
])
def test_a_purge_killed_at_each_point_resumes_exactly(space, operator, settings, point, nth):
    settings.PURGE_CHECKPOINT_SECONDS = 3600  # a checkpoint at the first page and at the end only
    space.plant()
    run = queued(space, operator, kind="prefix", value=b"lucia:session:", batch_size=50, rate_cap=0)
    before = space.stats()
    with pytest.raises(Crash):
        purge.execute_purge(run_id=run.pk, fault=killed_at(point, nth))
    run.refresh_from_db()
    assert run.status == "running"
    result = purge.execute_purge(run_id=run.pk, lease_seconds=0)
    run.refresh_from_db()
    assert run.billed_commands == space.billed_since(before)  # (before this test's own SCANs below)
    assert result.resumed and result.status == "succeeded"
    # What Redis did, exactly: every session key deleted once, nothing else touched; a key
    # SCAN returned twice (the table shrinks as keys go) is the only skip.
    assert space.keys(b"lucia:session:*") == set() and len(space.keys(b"lucia:focus:*")) == FOCUS
    assert run.done == SESSIONS and run.matched - run.skipped == SESSIONS and run.skipped <= 50
    assert sum(row["done"] for row in run.node_stats.values()) == run.done
    assert sum(row["billed"] for row in run.node_stats.values()) == run.billed_commands
    assert space.keys(redis_purge.MARKER_PREFIX + b"*") == set()  # the dashboard leaves nothing behind


@pytest.mark.django_db(transaction=True)  # a Postgres restart ends every open transaction
def test_a_purge_rides_out_a_postgres_outage_and_finishes_exactly(space, operator, settings, outage):
    settings.PURGE_CHECKPOINT_SECONDS = 0
    settings.JOB_DB_OUTAGE_SECONDS = 1
    space.plant()
    run = queued(space, operator, kind="prefix", value=b"lucia:session:", batch_size=50, rate_cap=0)
    before = space.stats()
    acted = []

    def stop_postgres(name, node):  # after the third page is acted on, before its checkpoint
        if name == "acted":
            acted.append(node)
            if len(acted) == 3:
                outage.stop()

    with pytest.raises(purge.PurgeStopped):
        purge.execute_purge(run_id=run.pk, fault=stop_postgres)
    outage.start()
    run.refresh_from_db()
    assert run.status == "running" and run.done < SESSIONS  # not failed: resumable
    result = purge.execute_purge(run_id=run.pk, lease_seconds=0)
    run.refresh_from_db()
    assert run.billed_commands == space.billed_since(before)
    assert result.status == "succeeded" and run.done == SESSIONS
    assert space.keys(b"lucia:session:*") == set()


# --- billed = commandstats: every job kind, both topologies, four ways ------------------------------
def _review(space, operator, sample=None, crash=False):
    if crash:  # killed right after its first checkpoint, then resumed by a new call
        # A checkpoint after every page: the first page is one batch of 50 of the 700 keys, so
        # the kill lands however many batches a round trip carries later (a slow link: up to 4).
        with pytest.raises(Crash):
            review.review_database(database=space.database, batch=50, checkpoint_every=1,
                                   fault=killed_at("checkpointed", 1))
        run = ReviewRun.objects.get(status="running")
        run.node_runs.update(heartbeat_at=None)
        ReviewRun.objects.filter(pk=run.pk).update(heartbeat_at=None)
        return review.review_database(database=space.database, run=run, checkpoint_every=3).run
    return review.review_database(database=space.database, batch=50, sample=sample).run


def _preview(space, operator, crash=False):
    return purge.preview_purge(database=space.database, kind="prefix", value=b"lucia:session:", action="expire",
                               actor=operator, batch_size=50).run


def _execute(run, crash):
    """Execute `run`, killed once after its third page when `crash`, then resumed."""
    if crash:
        with pytest.raises(Crash):
            purge.execute_purge(run_id=run.pk, fault=killed_at("acted", 3))
        purge.execute_purge(run_id=run.pk, lease_seconds=0)
    else:
        purge.execute_purge(run_id=run.pk)
    run.refresh_from_db()
    return run


def _purge(space, operator, crash=False, **target):
    return _execute(queued(space, operator, batch_size=50, rate_cap=0, **target), crash)


def _finding(space, operator, crash=False):
    reviewed = review.review_database(database=space.database).run
    preview = purge.preview_purge(action="delete",
                                  database=space.database, kind="finding", review_id=reviewed.pk, finding="no_ttl",
                                  actor=operator, batch_size=50)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="exactness",
                              actor=operator, source="cli")
    return _execute(run, crash)


def _policy(space, operator, crash=False):
    Namespace.objects.filter(database=space.database, name="session").update(violation_action="delete")
    outcome = purge.policy_purge(database=space.database)
    (result,) = outcome.runs
    return result.run


JOBS = {
    "exact review": lambda space, operator, crash: _review(space, operator, crash=crash),
    "sampled review": lambda space, operator, crash: _review(space, operator, sample=200),
    "preview": _preview,
    "prefix purge": lambda space, operator, crash: _purge(space, operator, crash, kind="prefix",
                                                          value=b"lucia:session:"),
    "pattern purge": lambda space, operator, crash: _purge(space, operator, crash, kind="pattern",
                                                           value=b"lucia:session:0*", action="expire"),
    "finding purge": _finding,
    "policy purge": lambda space, operator, crash: _policy(space, operator),
}
WAYS = ("clean", "resumed after a kill", "NOSCRIPT", "ACL refusal")
# Resumed after a kill: every purge (a policy purge's runs are purge runs like these), and a
# review killed right after a checkpoint. A sampled review and a preview are short dry runs
# that start over when their worker dies: they have no resume to test.
RESUMABLE = ("exact review", "prefix purge", "pattern purge", "finding purge")
CASES = [(job, way) for job in JOBS for way in WAYS if way != "resumed after a kill" or job in RESUMABLE]


@pytest.fixture
def acl_refused(space, monkeypatch):
    """`lucia` reading through a user that may not run read-only scripts (EVALSHA_RO,
    EVAL_RO): refused before execution, not billed; the jobs fall back to EVALSHA."""
    rules = ("reset", "on", ">pw-for-tests", "~*", "&*", "+@all", "-evalsha_ro", "-eval_ro")
    for node in space.nodes():
        with node:
            node.execute_command("ACL", "SETUSER", "noro", *rules)
    monkeypatch.setenv("LUCIA_NORO_URL", f"redis://noro:pw-for-tests@127.0.0.1:{space.ports[0]}/0")
    type(space.database).objects.filter(pk=space.database.pk).update(url_env="LUCIA_NORO_URL")
    space.database.refresh_from_db()
    yield
    for node in space.nodes():
        with node:
            node.execute_command("ACL", "DELUSER", "noro")


@pytest.mark.parametrize("job,way", CASES)
def test_billed_commands_equal_commandstats(space, operator, settings, request, job, way):
    settings.PURGE_CHECKPOINT_SECONDS = 3600
    space.plant()
    if way == "ACL refusal":
        request.getfixturevalue("acl_refused")
    if way == "NOSCRIPT":
        space.flush_scripts()  # the first call on every node answers NOSCRIPT: executed, billed, counted
    before = space.stats()
    run = JOBS[job](space, operator, way == "resumed after a kill")
    run.refresh_from_db()
    # Every run a job made records what it cost: the reviews, each purge's preview (its
    # instant estimate included) and its execution, a policy purge's report.
    recorded = sum(r.billed_commands for r in ReviewRun.objects.filter(database=space.database))
    recorded += sum(r.billed_commands + r.preview_billed_commands for r in PurgeRun.objects.filter(
        database=space.database))
    recorded += sum(r.billed_commands for r in PolicyReport.objects.filter(database=space.database))
    assert recorded == space.billed_since(before), (job, way)
    assert run.status in ("succeeded", "previewed"), run.error


# --- a review stopped by a Redis error: the worker lives, and says what it sent ---------------------
@pytest.mark.parametrize("at_batch", [2, 3])  # the batch a checkpoint (every 2) follows, and one past one
@pytest.mark.parametrize("noscript", [False, True], ids=["loaded", "NOSCRIPT"])
def test_a_review_stopped_by_a_redis_error_bills_what_redis_executed(space, at_batch, noscript):
    """A Redis error in the middle of a part (here raised by the batch callback, with the next
    round trip already in flight): the part is handed back with its checkpoint's counts and
    every command sent since, the round trip in flight read and counted, and the run that ends
    without the part still counts them. Over TCP on a standalone server the stream keeps one
    request in flight (the scan script); over REST and on a cluster, a page's round trip."""
    space.plant()
    if noscript:
        space.flush_scripts()
    before = space.stats()

    def fail_at(tally):
        if tally.batches == at_batch:
            raise redis.ConnectionError("the link went away (test)")

    result = review.review_database(database=space.database, batch=50, checkpoint_every=2, on_batch=fail_at)
    run = result.run
    run.refresh_from_db()
    # A node of the cluster holds about 230 keys: 4 or 5 batches of 50, so every part stops.
    assert run.status == "failed" and "the link went away" in run.error
    parts = list(run.node_runs.all())
    assert all(part.batches == 2 * ((at_batch - 1) // 2) for part in parts)  # counts: the last checkpoint's
    assert run.billed_commands == space.billed_since(before) > 0
