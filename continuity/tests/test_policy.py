"""One table, every implementation of the namespace policy: `Policy.findings`, the key
browser's badge, the TTL review's hot loop, the purge's re-check script (Lua) and its
pipeline fallback, and the continuity store's write check must give the same answers.

Each case is a namespace policy and one key (TTL, type, size). The key is written to a
real redis-server under a namespace of its own, so the Redis-side implementations judge
the real key: MEMORY USAGE of the small value is well under 100 bytes and of the large one
well above 16 KiB, so the limits below are never near the boundary."""

import pytest

from continuity import keyspace, store
from continuity.keyspace import purge as redis_purge
from continuity.keyspace.nodes import Node
from continuity.keyspace.meta import KeyMeta
from continuity.models import Namespace
from continuity.operations import review
from continuity.policy import KEY_FINDINGS, Policy
from dashboard.models import RedisDatabase

SMALL, LARGE = b"v", b"x" * 50_000
SIZES = {"small": (SMALL, 60), "large": (LARGE, 50_100)}  # value, a MEMORY USAGE for the pure check

REQUIRED = dict(ttl_required=True, max_ttl_seconds=3600, max_payload_bytes=16384)
OPTIONAL_WITH_MAX = dict(ttl_required=False, max_ttl_seconds=3600, max_payload_bytes=16384)
REQUIRED_NO_MAX = dict(ttl_required=True, max_ttl_seconds=None, max_payload_bytes=16384)
FREE_HASH = dict(ttl_required=False, max_ttl_seconds=None, max_payload_bytes=0, expected_type="hash")
TIGHT_STRING = dict(ttl_required=True, max_ttl_seconds=60, max_payload_bytes=100, expected_type="string")

# (policy, TTL seconds or None, type, size, findings worst first)
CASES = [
    (REQUIRED, 1800, "string", "small", ()),
    (REQUIRED, None, "string", "small", ("no_ttl",)),
    (REQUIRED, 7200, "string", "small", ("ttl_above_max",)),
    (REQUIRED, 1800, "string", "large", ("oversized",)),
    (REQUIRED, None, "string", "large", ("no_ttl", "oversized")),
    (REQUIRED, 1800, "hash", "small", ()),                      # no type expected
    (OPTIONAL_WITH_MAX, None, "string", "small", ()),           # no TTL is allowed; the max bounds set TTLs
    (OPTIONAL_WITH_MAX, 7200, "string", "small", ("ttl_above_max",)),
    (REQUIRED_NO_MAX, 999_999, "string", "small", ()),
    (REQUIRED_NO_MAX, None, "string", "small", ("no_ttl",)),
    (FREE_HASH, None, "hash", "large", ()),                     # no size limit
    (FREE_HASH, None, "string", "small", ("wrong_type",)),
    (TIGHT_STRING, 30, "string", "small", ()),
    (TIGHT_STRING, 7200, "hash", "large", ("ttl_above_max", "oversized", "wrong_type")),
    (TIGHT_STRING, None, "hash", "small", ("no_ttl", "wrong_type")),
]
IDS = [f"{i}-{'+'.join(case[4]) or 'ok'}" for i, case in enumerate(CASES)]


def namespace(database, i, rules):
    return Namespace.objects.create(database=database, name=f"case-{i}", prefix=f"lucia:case{i}:", **rules)


def write(client, key, ttl, kind, size):
    value = SIZES[size][0]
    if kind == "hash":
        client.hset(key, b"f", value)
    else:
        client.set(key, value)
    if ttl:
        client.expire(key, ttl)


@pytest.fixture
def cases(monitored, db):
    """Every case as a namespace of its own and one real key in it."""
    database = RedisDatabase.objects.create(name="policy-cases", key_prefix="lucia:", url_env="REDIS_URL")
    out = []
    for i, (rules, ttl, kind, size, expected) in enumerate(CASES):
        ns = namespace(database, i, rules)
        key = ns.prefix.encode() + b"1"
        write(monitored, key, ttl, kind, size)
        out.append((ns, key, expected))
    return database, out


@pytest.mark.parametrize("rules,ttl,kind,size,expected", CASES, ids=IDS)
def test_it_states_the_rules_once_in_policy_findings(rules, ttl, kind, size, expected):
    policy = Policy(prefix=b"lucia:x:", **rules)
    memory = SIZES[size][1]
    assert policy.findings(None if ttl is None else ttl * 1000, kind, memory) == expected
    assert policy.findings(None if ttl is None else ttl * 1000, kind.encode(), memory) == expected  # TYPE as bytes


@pytest.mark.parametrize("rules,ttl,kind,size,expected", CASES, ids=IDS)
def test_it_badges_a_key_in_the_browser_by_its_worst_finding(rules, ttl, kind, size, expected):
    ns = Namespace(name="x", prefix="lucia:x:", **rules)
    meta = KeyMeta(key=b"lucia:x:1", type=kind, ttl_ms=None if ttl is None else ttl * 1000, memory=SIZES[size][1])
    assert ns.classify(meta).code == (expected[0] if expected else "ok")


def test_it_counts_the_same_findings_in_a_review(cases):
    database, items = cases
    result = review.review_database(database=database, persist=False)
    by_prefix = {row["prefix"]: row["findings"] for row in result.namespaces}
    for ns, _key, expected in items:
        counted = {finding for finding, count in by_prefix[ns.prefix].items() if count}
        assert counted == set(expected), ns.prefix


def _recheck_answers(client, items):
    """{prefix: findings the purge's re-check says the key still has}, one count per finding."""
    answers = {}
    for ns, key, _expected in items:
        policy = ns.policy()
        found = set()
        for finding in KEY_FINDINGS:
            result = redis_purge.act(Node("one", client), [key], action="count", policies=[policy],
                                     want=(finding,))
            assert result.done + result.skipped == 1
            if result.done:
                found.add(finding)
        exists = redis_purge.act(Node("one", client), [key], action="count", policies=[policy])
        assert exists.done == 1  # with no finding asked for: the key still exists
        answers[ns.prefix] = found
    return answers


def test_it_rechecks_the_same_findings_in_the_purge_script(cases, monitored):
    _database, items = cases
    monitored.config_resetstat()
    answers = _recheck_answers(monitored, items)
    assert answers == {ns.prefix: set(expected) for ns, _key, expected in items}
    # A count writes nothing: it runs read-only (EVALSHA_RO).
    assert monitored.info("commandstats").get("cmdstat_evalsha_ro", {}).get("calls", 0) >= len(items)


def test_it_rechecks_the_same_findings_without_scripting(cases, monitored):
    _database, items = cases
    port = monitored.connection_pool.connection_kwargs["port"]
    monitored.execute_command("ACL", "SETUSER", "policy-noscript", "on", "nopass", "~*", "+@all", "-@scripting")
    client = keyspace.make_client(f"redis://policy-noscript@127.0.0.1:{port}/0")
    try:
        answers = _recheck_answers(client, items)
    finally:
        client.close()
        monitored.execute_command("ACL", "DELUSER", "policy-noscript")
    assert answers == {ns.prefix: set(expected) for ns, _key, expected in items}


@pytest.mark.parametrize("rules,ttl,kind,size,expected", CASES, ids=IDS)
def test_it_refuses_exactly_the_writes_with_findings_in_the_store(monitored, lucia, rules, ttl, kind, size,
                                                                   expected):
    """The store writes with a TTL, or gives a write without one the policy maximum: a case
    without TTL under a policy with a maximum is written with the maximum, so only the
    findings of that write are expected."""
    ns = namespace(lucia, 99, rules)
    if ttl is None and ns.max_ttl_seconds:
        ttl_written = ns.max_ttl_seconds
        expected = tuple(f for f in expected if f != "no_ttl")
    else:
        ttl_written = ttl
    adapter = store.ContinuityStore(lucia, namespaces=[ns], client=monitored)
    value = {"f": SIZES[size][0].decode()} if kind == "hash" else SIZES[size][0]
    key = ns.prefix.encode() + b"w"
    if expected:
        with pytest.raises(store.PolicyViolation):
            adapter.put_key(key, value, ttl_seconds=ttl, as_hash=kind == "hash")
        assert not monitored.exists(key)  # nothing was written
    else:
        result = adapter.put_key(key, value, ttl_seconds=ttl, as_hash=kind == "hash")
        assert result.ttl_seconds == ttl_written and not result.degraded
        assert monitored.type(key) == kind.encode()
