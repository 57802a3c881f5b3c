"""The keyspace watch against real redis-servers restarted for the test: a restart that loses
every key, one that keeps them (AOF), a FLUSHALL (a loss without a restart), the loss share's
boundary, a primary of a Redis Cluster restarted empty, and the beat task and command."""

import io
import re
import shutil
import tempfile

import pytest
import redis
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from continuity.keyspace import watch
from continuity.models import KeyspaceCheck
from continuity.models.watch import dropped_beyond
from continuity.operations import keyspace_watch
from continuity.tests.clusters import point_at
from dashboard.devtools import localservers
from dashboard.models import AlertChannel


@pytest.fixture
def hook(db, receiver):
    return AlertChannel.objects.create(name="ops", kind="webhook", url=receiver.url("/hook"))


def _events(receiver):
    return [r["json"]["event"] for r in receiver.requests]


class Private:
    """A redis-server of the test's own, restarted by the test; `lucia`'s URL names it."""

    def __init__(self, persistent):
        self.datadir = tempfile.mkdtemp(prefix="dashboard-test-watch-")
        self.server = localservers.LocalRedis(self.datadir, localservers.free_port(), persistent=persistent).start()

    def client(self):
        return redis.Redis.from_url(self.server.url(0))

    def fill(self, count, prefix="lucia:session:", ttl=None):
        with self.client() as client:
            pipe = client.pipeline(transaction=False)
            for number in range(count):
                pipe.set(f"{prefix}{number}", "x", ex=ttl)
            pipe.execute()

    def stop(self):
        self.server.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)


@pytest.fixture
def volatile(lucia, monkeypatch):
    """A redis-server without persistence (as `make run`'s and the issue's): a restart empties it."""
    private = Private(persistent=False)
    monkeypatch.setenv("REDIS_URL", private.server.url(0))
    yield private
    private.stop()


@pytest.fixture
def durable(lucia, monkeypatch):
    """A redis-server with an append-only file: a restart keeps its keys."""
    private = Private(persistent=True)
    monkeypatch.setenv("REDIS_URL", private.server.url(0))
    yield private
    private.stop()


def _check(lucia, capture):
    with capture(execute=True):
        return keyspace_watch.check_database(lucia)


@pytest.mark.parametrize("before, after, share, beyond", [
    (1000, 500, 0.5, False),  # exactly the share: not beyond it
    (1000, 499, 0.5, True),  # one key past it
    (1000, 700, 0.3, False),  # 0.3 × 1000 is 300 exactly, not 300.00000000000006
    (1000, 699, 0.3, True),
    (3, 0, 0.5, True),
    (0, 0, 0.5, False),  # nothing to lose
    (1000, 1200, 0.5, False),
    (1000, None, 0.5, False),  # the count is unknown: no verdict
    (None, 0, 0.5, False),
])
def test_it_calls_a_drop_a_loss_only_beyond_the_share(before, after, share, beyond):
    assert dropped_beyond(before, after, share) is beyond


def test_it_raises_the_alarm_once_when_redis_restarts_empty(lucia, volatile, hook, receiver, eager,
                                                            django_capture_on_commit_callbacks):
    volatile.fill(300, ttl=3600)
    volatile.fill(20, prefix="lucia:focus:")  # no TTL
    first = _check(lucia, django_capture_on_commit_callbacks)
    assert (first.ok, first.keys, first.keys_without_ttl, first.event) == (True, 320, 20, "")
    assert first.persistence == watch.OFF and first.alerted == ["redis.persistence_off"]
    assert _check(lucia, django_capture_on_commit_callbacks).alerted == []  # still off: no repeat

    volatile.server.restart()  # a real restart: a new process, no file to load
    volatile.fill(5)
    lost = _check(lucia, django_capture_on_commit_callbacks)
    assert (lost.ok, lost.keys, lost.event) == (True, 5, KeyspaceCheck.LOST)
    address = next(iter(lost.nodes))
    assert f"lucia lost 315 of 320 keys (98%)" in lost.event_text
    assert re.search(rf"{address} restarted \(run id changed, uptime \d s\) and read back 0 keys from disk\.$",
                     lost.event_text)
    assert lost.alerted == ["keyspace.lost"]

    later = _check(lucia, django_capture_on_commit_callbacks)
    assert (later.event, later.alerted) == ("", [])  # compared with the check after the loss
    assert _events(receiver) == ["redis.persistence_off", "keyspace.lost"]
    alarm = receiver.requests[1]["json"]
    assert alarm["severity"] == "critical" and alarm["title"] == "Redis lucia lost keys"
    assert "315 of 320 keys" in alarm["text"] and alarm["link"].endswith("/")


def test_a_restart_that_keeps_the_keys_is_a_restart_not_a_loss(lucia, durable, hook, receiver, eager,
                                                               django_capture_on_commit_callbacks):
    durable.fill(200, ttl=3600)
    first = _check(lucia, django_capture_on_commit_callbacks)
    assert (first.keys, first.persistence, first.alerted) == (200, "aof", [])
    uptime_before = first.nodes[next(iter(first.nodes))]["uptime"]
    durable.server.restart()
    after = _check(lucia, django_capture_on_commit_callbacks)
    node = after.nodes[next(iter(after.nodes))]
    assert node["uptime"] <= uptime_before + 1 and node["run_id"] != first.nodes[next(iter(first.nodes))]["run_id"]
    assert (after.keys, after.event, after.alerted) == (200, KeyspaceCheck.RESTARTED, ["redis.restarted"])
    assert "restarted (run id changed" in after.event_text and "200 keys then, 200 now" in after.event_text
    assert _check(lucia, django_capture_on_commit_callbacks).alerted == []
    assert _events(receiver) == ["redis.restarted"]
    assert receiver.requests[0]["json"]["severity"] == "warning"


def test_flushall_is_a_loss_without_a_restart(lucia, volatile, hook, receiver, eager,
                                              django_capture_on_commit_callbacks):
    volatile.fill(100, ttl=3600)
    _check(lucia, django_capture_on_commit_callbacks)
    with volatile.client() as client:
        client.flushall()
    lost = _check(lucia, django_capture_on_commit_callbacks)
    assert (lost.keys, lost.event) == (0, KeyspaceCheck.LOST)
    assert "lost 100 of 100 keys (100%)" in lost.event_text and "No primary restarted" in lost.event_text
    assert _events(receiver) == ["redis.persistence_off", "keyspace.lost"]


def test_a_drop_of_exactly_the_share_is_not_alerted_and_one_key_more_is(lucia, volatile, hook, receiver, eager,
                                                                         settings, django_capture_on_commit_callbacks):
    settings.ALERT_KEYSPACE_LOSS_SHARE = 0.5
    volatile.fill(1000, ttl=3600)
    _check(lucia, django_capture_on_commit_callbacks)
    with volatile.client() as client:
        client.delete(*[f"lucia:session:{n}" for n in range(500)])
    at_share = _check(lucia, django_capture_on_commit_callbacks)
    assert (at_share.keys, at_share.event) == (500, "")
    with volatile.client() as client:
        client.delete(*[f"lucia:session:{n}" for n in range(500, 751)])  # 251 of 500: one past half
    past = _check(lucia, django_capture_on_commit_callbacks)
    assert (past.keys, past.event) == (249, KeyspaceCheck.LOST)
    assert _events(receiver) == ["redis.persistence_off", "keyspace.lost"]


def test_uptime_going_backwards_is_a_restart_where_the_run_id_is_not_said(lucia):
    then = KeyspaceCheck(database=lucia, keys=10, nodes={"a:1": watch.NodeState("a:1", keys=10, uptime=5000).to_json()})
    same = [watch.NodeState("a:1", keys=10, uptime=5060)]
    back = [watch.NodeState("a:1", keys=10, uptime=40)]
    assert keyspace_watch.compare(lucia, then, same, share=0.5) is None
    finding = keyspace_watch.compare(lucia, then, back, share=0.5)
    assert finding.event == KeyspaceCheck.RESTARTED
    assert "a:1 restarted (uptime went back from 5,000 s to 40 s)" in finding.text


def test_an_unreachable_redis_is_recorded_and_not_compared(lucia, monkeypatch, hook, receiver, eager,
                                                           django_capture_on_commit_callbacks):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    check = _check(lucia, django_capture_on_commit_callbacks)
    assert (check.ok, check.keys, check.event) == (False, None, "")
    assert "unreachable" in check.error
    assert receiver.requests == []  # an outage is the monitored redis check's alert, after its grace period


def test_it_counts_over_every_primary_of_a_cluster_and_names_the_one_that_restarted_empty(
        lucia, disposable_cluster, monkeypatch, hook, receiver, eager, settings, django_capture_on_commit_callbacks):
    settings.ALERT_KEYSPACE_LOSS_SHARE = 0.2  # one primary of three holds about a third of the keys
    point_at(lucia, monkeypatch, disposable_cluster)
    client = redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0])
    for number in range(600):
        client.set(f"lucia:session:{number}", "x", ex=3600)
    sizes = {port: redis.Redis(port=port).dbsize() for port in disposable_cluster.ports}
    client.close()
    first = _check(lucia, django_capture_on_commit_callbacks)
    assert first.keys == 600 and sorted(first.nodes) == sorted(f"127.0.0.1:{p}" for p in disposable_cluster.ports)
    assert {address: node["keys"] for address, node in first.nodes.items()} == {
        f"127.0.0.1:{port}": size for port, size in sizes.items()}

    disposable_cluster.nodes[1].restart()  # no persistence: back with its slots (nodes.conf) and no keys
    disposable_cluster.wait_ok()
    restarted = f"127.0.0.1:{disposable_cluster.nodes[1].port}"
    lost = _check(lucia, django_capture_on_commit_callbacks)
    emptied = sizes[disposable_cluster.nodes[1].port]
    assert emptied > 120  # the slots spread the keys: well past the share
    assert (lost.keys, lost.event) == (600 - emptied, KeyspaceCheck.LOST)
    assert f"lost {emptied} of 600 keys" in lost.event_text and f"{restarted} restarted (run id changed" in lost.event_text
    assert [other for other in lost.nodes if other != restarted and other in lost.event_text] == []


def test_the_beat_task_and_its_command_twin_record_checks(lucia, volatile, hook):
    from continuity.tasks.watch import watch_keyspaces_task

    volatile.fill(7, ttl=60)
    assert PeriodicTask.objects.get(name="keyspace watch").task == "continuity.watch_keyspaces"
    assert watch_keyspaces_task.run() == ["redis.persistence_off"]
    out = io.StringIO()
    call_command("watch_keyspaces", stdout=out)
    assert out.getvalue() == "lucia: 7 keys, persistence off\n"
    assert list(KeyspaceCheck.objects.values_list("via", "keys")) == [("command", 7), ("worker", 7)]
    with volatile.client() as client:
        client.flushall()
    with pytest.raises(SystemExit) as exit_:
        call_command("watch_keyspaces", stdout=io.StringIO())
    assert exit_.value.code == 1


def test_a_look_bills_nothing_on_upstash_but_dbsize_of_an_empty_database(lucia, volatile):
    """Upstash bills every command but AUTH, HELLO, SELECT, COMMAND, CONFIG, INFO, PING, RESET
    and QUIT: INFO gives the key count (DBSIZE) of a database it lists."""
    free = {"info", "config|get", "config|resetstat", "ping", "auth", "hello", "select", "command", "client|setinfo"}

    def billed():
        with volatile.client() as client:
            stats = client.info("commandstats")
            client.config_resetstat()
        return {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()
                if name.removeprefix("cmdstat_") not in free}

    keyspace_watch.check_database(lucia)  # the first look also asks what kind of server this is
    billed()
    assert keyspace_watch.check_database(lucia).keys == 0
    assert billed() == {"dbsize": 1}  # INFO does not list an empty database
    volatile.fill(10, ttl=60)
    billed()
    check = keyspace_watch.check_database(lucia)
    assert (check.keys, check.keys_without_ttl) == (10, 0)
    assert billed() == {}


def test_a_finding_with_no_channel_is_recorded_once_and_not_called_alerted(lucia, volatile):
    volatile.fill(50, ttl=600)
    first = keyspace_watch.check_database(lucia)
    assert (first.persistence, first.alerted) == (watch.OFF, [])  # no channel: nothing was sent
    with volatile.client() as client:
        client.flushall()
    lost = keyspace_watch.check_database(lucia)
    assert (lost.event, lost.alerted) == (KeyspaceCheck.LOST, [])
    assert keyspace_watch.check_database(lucia).event == ""


def test_it_keeps_a_week_of_checks_and_every_finding(lucia, volatile):
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(days=7, minutes=1)
    recent = timezone.now() - timedelta(days=6, hours=23)
    stale = KeyspaceCheck.objects.create(database=lucia, checked_at=old, keys=1)
    finding = KeyspaceCheck.objects.create(database=lucia, checked_at=old, keys=1, event=KeyspaceCheck.LOST)
    kept = KeyspaceCheck.objects.create(database=lucia, checked_at=recent, keys=1)
    keyspace_watch.watch_keyspaces()
    remaining = set(KeyspaceCheck.objects.values_list("pk", flat=True))
    assert stale.pk not in remaining and {finding.pk, kept.pk} <= remaining and len(remaining) == 3
