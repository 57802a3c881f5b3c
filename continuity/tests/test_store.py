"""The continuity store adapter against real redis-servers: policy at write time,
continuity across a restart with persistence on, fallback while Redis is down, recovery."""

import shutil
import tempfile

import pytest

from continuity import keyspace
from continuity.store import ContinuityStore, LocalTTLCache, PolicyViolation
from dashboard.devtools import localservers
from dashboard.models import RedisDatabase


@pytest.fixture
def store(lucia, monitored):
    store = ContinuityStore(lucia, retry_seconds=0)
    yield store
    store.close()


def test_it_writes_within_policy_with_the_policy_ttl_by_default(store, monitored):
    result = store.put("session", "op-1", {"channel": "web"})
    assert result.key == b"lucia:session:op-1" and result.ttl_seconds == 3600 and not result.degraded
    assert 3_590_000 < monitored.pttl(b"lucia:session:op-1") <= 3_600_000
    assert store.get_json("session", "op-1") == {"channel": "web"}
    store.put("rate", "ip:1", "7", ttl_seconds=60)
    assert monitored.get(b"lucia:rate:ip:1") == b"7" and monitored.ttl(b"lucia:rate:ip:1") <= 60
    assert store.touch("rate", "ip:1", ttl_seconds=120) and monitored.ttl(b"lucia:rate:ip:1") > 60
    assert store.delete("rate", "ip:1") and store.get("rate", "ip:1") is None


def test_it_writes_hashes_for_hash_namespaces(store, monitored, lucia):
    from continuity.models import Namespace

    Namespace.objects.filter(name="distress").update(expected_type="hash")
    store = ContinuityStore(lucia)
    store.put("distress", "7", {"stage": 2, "streak": 5}, ttl_seconds=600)
    assert monitored.hgetall(b"lucia:distress:7") == {b"stage": b"2", b"streak": b"5"}
    assert store.get("distress", "7") == {b"stage": b"2", b"streak": b"5"}
    assert 0 < monitored.ttl(b"lucia:distress:7") <= 600


@pytest.mark.parametrize("call,message", [
    (lambda s: s.put("session", "x", "v", ttl_seconds=7200), "above the maximum"),
    (lambda s: s.put("session", "x", "v", ttl_seconds=60), "below the minimum"),
    (lambda s: s.put("session", "x", "v" * 20_000), "above the limit"),
    (lambda s: s.put("nonsense", "x", "v"), "No registered namespace"),
    (lambda s: s.put_key(b"lucia:legacy:x", "v"), "outside every registered namespace"),
    (lambda s: s.put_key(b"other:\xff", "v"), "outside every registered namespace"),
])
def test_it_refuses_writes_outside_policy(store, monitored, call, message):
    with pytest.raises(PolicyViolation, match=message):
        call(store)
    assert monitored.dbsize() == 0


def test_it_refuses_no_ttl_where_the_policy_requires_one(store, lucia, monitored):
    from continuity.models import Namespace

    Namespace.objects.filter(name="focus").update(max_ttl_seconds=None)
    with pytest.raises(PolicyViolation, match="a TTL is required"):
        ContinuityStore(lucia).put("focus", "1", "v")
    assert monitored.dbsize() == 0


@pytest.fixture
def own_redis(db, monkeypatch):
    """A persistent redis-server of its own (AOF, fsync always) behind a database record."""
    datadir = tempfile.mkdtemp(prefix="store-redis-")
    server = localservers.LocalRedis(datadir, localservers.free_port(), persistent=True).start()
    monkeypatch.setenv("STORE_REDIS_URL", server.url(0))
    record = RedisDatabase.objects.create(name="store-test", url_env="STORE_REDIS_URL", key_prefix="lucia:")
    from continuity import seed

    seed.seed_namespaces(record)
    yield server, record
    server.stop()
    shutil.rmtree(datadir, ignore_errors=True)


def test_it_keeps_continuity_across_a_redis_restart(own_redis):
    server, record = own_redis
    store = ContinuityStore(record)
    store.put("session", "op-9", {"turns": 3}, ttl_seconds=1800)
    store.put("focus", "t-1", "follow up", ttl_seconds=3600)
    server.restart()
    # The same process (its pooled connection died with the server) and a fresh one
    # (a redeploy) both read the state back, with the TTL still counting.
    assert store.get_json("session", "op-9") == {"turns": 3} and not store.degraded
    fresh = ContinuityStore(record)
    assert fresh.get("focus", "t-1") == b"follow up"
    assert 1700 < fresh.ttl_seconds("session", "op-9") <= 1800
    store.close()
    fresh.close()


def test_it_falls_back_while_redis_is_down_and_returns_when_it_is_back(own_redis, settings):
    settings.REDIS_CONNECT_TIMEOUT = 0.5
    server, record = own_redis
    now = [0.0]
    store = ContinuityStore(record, retry_seconds=0, fallback=LocalTTLCache(clock=lambda: now[0]))
    store.put("session", "before", "kept in redis", ttl_seconds=1800)
    server.stop()
    result = store.put("session", "during", "kept in process", ttl_seconds=1800)
    assert result.degraded and store.degraded
    assert store.get("session", "during") == b"kept in process"
    assert store.get("session", "before") is None  # not reachable meanwhile: the fallback note applies
    store.put("rate", "short", "1", ttl_seconds=1)
    assert store.get("rate", "short") == b"1"
    now[0] += 1.1
    assert store.get("rate", "short") is None  # the fallback cache honours TTLs
    server.start()
    assert store.get("session", "before") == b"kept in redis"
    assert not store.degraded
    # What was written during the outage is now in Redis, with its remaining TTL.
    direct = keyspace.make_client(server.url(0))
    assert direct.get(b"lucia:session:during") == b"kept in process"
    assert 1700_000 < direct.pttl(b"lucia:session:during") <= 1_800_000
    assert not direct.exists(b"lucia:rate:short")
    assert len(store.fallback) == 0
    direct.close()
    store.close()


def test_it_retries_redis_only_after_the_retry_interval(own_redis, settings):
    settings.REDIS_CONNECT_TIMEOUT = 0.5
    server, record = own_redis
    store = ContinuityStore(record, retry_seconds=60)
    server.stop()
    store.put("action", "a", "lock", ttl_seconds=60)
    server.start()
    assert store.get("action", "a") == b"lock" and store.degraded  # still inside the interval
    store.retry_seconds = 0  # as if the interval had passed
    assert store.get("action", "a") == b"lock" and not store.degraded
    store.close()


def test_it_bounds_the_fallback_cache():
    clock = [0.0]
    cache = LocalTTLCache(max_entries=2, clock=lambda: clock[0])
    cache.set(b"a", 1, 10)
    cache.set(b"b", 2, 100)
    cache.set(b"c", 3, 50)
    assert cache.get(b"a") is None and cache.get(b"b") == 2 and cache.get(b"c") == 3
    clock[0] = 60
    assert cache.get(b"c") is None and len(cache) == 1


def test_it_keeps_the_fallback_cache_it_is_given(lucia):
    cache = LocalTTLCache(clock=lambda: 0.0)
    assert ContinuityStore(lucia, fallback=cache).fallback is cache  # even while it is empty
