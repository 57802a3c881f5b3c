"""The review's fast paths: the send-ahead batch stream, the script cache flushed
mid-review, an early stop, MEMORY refused inside scripts, the prefix classifier, and how
many script calls a round trip carries."""

import pytest

import pytest

from continuity import keyspace
from continuity.keyspace.nodes import Node
from continuity.keyspace import capabilities
from continuity.keyspace import stream
from continuity.models import Namespace, ReviewRun
from continuity.operations import review
from continuity.policy import BUCKET_NAMES
from continuity.tests.test_review import calls, expected_from_specs, load, typed_lucia  # noqa: F401 — the fixture
from dashboard.models import RedisDatabase

pytestmark = pytest.mark.usefixtures("transport")


def test_it_reloads_the_script_when_the_cache_is_flushed_mid_review(monitored, typed_lucia, settings, steady_batches):
    specs = load(monitored, 3000, seed=21)
    findings, per_namespace, foreign = expected_from_specs(specs)
    before = monitored.info("commandstats")

    def flush(tally):
        if tally.batches == 2:  # the request for batch 3 is already on its way
            monitored.script_flush()

    # steady_batches: `counted` below is the scan script's path (no SCAN from the client); on a loaded machine
    # the batch sizer could choose another shape (its counts exact all the same).
    result = review.review_database(database=typed_lucia, strategy="scan_script", batch=200, on_batch=flush)

    after = monitored.info("commandstats")
    assert result.findings == findings and result.foreign_keys == foreign
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    # The refused EVALSHA, the SCRIPT LOAD and the retry are all counted (our own
    # SCRIPT FLUSH is not the review's).
    counted = ("evalsha_ro", "evalsha", "script|load", "dbsize")
    issued = calls(after, *counted) - calls(before, *counted)
    assert result.commands == issued
    assert calls(after, "script|load") - calls(before, "script|load") >= 1


def test_it_leaves_the_connection_clean_after_stopping_early(monitored, typed_lucia):
    specs = load(monitored, 2000, seed=22)
    findings, _, _ = expected_from_specs(specs)

    def cancel(tally):
        if tally.batches == 2:
            ReviewRun.objects.active().get().cancel()

    stopped = review.review_database(database=typed_lucia, batch=100, checkpoint_every=2, on_batch=cancel)
    assert stopped.status == ReviewRun.CANCELLED and stopped.keys_scanned < 2000

    # The reply of the request sent ahead was drained: the same pooled connection gives
    # the next review exact answers, and no connection stays checked out.
    client = keyspace.client_for(typed_lucia)
    assert not client.connection_pool._in_use_connections
    again = review.review_database(database=typed_lucia, batch=100)
    assert again.status == ReviewRun.SUCCEEDED and again.keys_scanned == 2000 and again.findings == findings
    assert not client.connection_pool._in_use_connections


def test_it_stops_the_stream_mid_scan_without_a_stray_reply(monitored):
    for i in range(500):
        monitored.set(f"lucia:session:{i}".encode(), b"v", px=60_000)
    client = keyspace.client_for(RedisDatabase(name="raw", url_env="REDIS_URL", rest_url_env="UPSTASH_REDIS_REST_URL",
                                                  rest_token_env="UPSTASH_REDIS_REST_TOKEN"))
    feed = stream.batches(Node("raw", client), cursor=0, count=50, prefix=b"lucia:")
    first, second = next(feed), next(feed)
    feed.close()
    assert first.cursor and second.cursor and len(first.rows) == 4 * (first.scanned - first.foreign)
    # A stray reply left on the connection would answer this PING with SCAN data.
    assert client.ping() is True and client.get(b"lucia:session:7") == b"v"
    total = sum(f.scanned for f in stream.batches(Node("raw", client), cursor=0, count=50, prefix=b"lucia:"))
    assert total == 500


def test_it_falls_back_to_the_metadata_script_when_memory_is_refused_in_scripts(
        monitored, typed_lucia, redis_server, monkeypatch, settings, steady_batches):
    specs = load(monitored, 1500, seed=23)
    findings, per_namespace, foreign = expected_from_specs(specs)
    monitored.execute_command("ACL", "SETUSER", "nomemory", "on", "nopass", "~*", "+@all", "-memory")
    monkeypatch.setenv("NOMEMORY_URL", f"redis://nomemory@127.0.0.1:{redis_server.port}/0")
    restricted = RedisDatabase.objects.create(name="nomemory", key_prefix="lucia:", url_env="NOMEMORY_URL")
    for ns in Namespace.objects.filter(database=typed_lucia):
        ns.pk, ns.database = None, restricted
        ns.save()
    try:
        before = monitored.info("commandstats")
        # steady_batches: the bound below is one metadata call per page; on a loaded machine the batch sizer
        # could choose another shape (its counts exact all the same).
        result = review.review_database(database=restricted, strategy="scan_script", batch=500)
        after = monitored.info("commandstats")
    finally:
        monitored.execute_command("ACL", "DELUSER", "nomemory")
    caps = capabilities.of(keyspace.client_for(restricted))
    assert caps.scan_script is False and caps.script is True
    # Without MEMORY USAGE sizes are unknown: nothing is oversized, every other count is exact.
    assert result.findings == {**findings, "oversized": 0} and result.foreign_keys == foreign
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    assert all(row["bytes"] == 0 and row["top_keys"] == [] for row in result.namespaces)
    assert calls(after, "memory|usage") == calls(before, "memory|usage")
    # SCAN + one metadata EVALSHA per batch, plus the refused scan script (counted too)
    # and DBSIZE twice. One SCAN ran inside the refused script: not a command we sent.
    counted = ("evalsha_ro", "evalsha", "scan", "script|load", "dbsize")
    issued = calls(after, *counted) - calls(before, *counted) - 1
    batches = calls(after, "scan") - calls(before, "scan") - 1
    assert result.commands == issued <= 2 * batches + 6


def brute_force(policies, key, unknown):
    matches = [prefix for prefix in policies if key.startswith(prefix)]
    return policies[max(matches, key=len)] if matches else unknown


def test_it_classifies_by_the_longest_prefix_with_a_bounded_memo():
    database = RedisDatabase(name="x", key_prefix="app:")
    prefixes = ["app:s:", "app:s:vip:", "app:s:vip:gold:", "app:rate:", "app:r", "app:session:"]
    classifier = review.Classifier(database, [Namespace(prefix=p, name=p) for p in prefixes])
    keys = [b"app:s:", b"app:s:v", b"app:s:vip:", b"app:s:vip:gold:1", b"app:s:vip:gol", b"app:r",
            b"app:rate:1", b"app:ra", b"app:", b"app", b"", b"other:s:", b"app:session:\xff", b"app:sess"]
    keys += [f"app:s:{i:06d}".encode() for i in range(2 * review.HEAD_MEMO_CAP)]
    keys += [f"app:s:vip:{i}".encode() for i in range(300)]
    for key in keys:
        assert classifier.policy(key) is brute_force(classifier.policies, key, classifier.unknown), key
    assert all(len(table) <= max(1, review.HEAD_MEMO_CAP) for _, table, _ in classifier.groups.values())

    # The hot loop gives the same answer as the slow path, memo hits included.
    tally = review.Tally()
    rows = []
    for key in keys * 2:
        rows += (key, -1, b"string", 10)
    review.count_batch(tally, classifier, rows)
    expected = {}
    for key in keys * 2:
        ident = brute_force(classifier.policies, key, classifier.unknown).ident
        expected[ident] = expected.get(ident, 0) + 1
    assert {ident: ns.keys for ident, ns in tally.namespaces.items()} == expected
    assert tally.findings["unknown_namespace"] == expected[review.NO_NAMESPACE]


def test_it_keeps_the_checkpoint_json_of_the_aggregates(typed_lucia):
    namespaces = list(Namespace.objects.for_database(typed_lucia))
    tally = review.Tally()
    review.count_batch(tally, review.Classifier(typed_lucia, namespaces),
                        [b"lucia:session:x", 90_000, b"string", 100, b"lucia:session:y", -1, b"hash", 70_000,
                         b"lucia:session:z", -2, b"none", -1])
    data = tally.to_json()
    session = data["namespaces"][str(next(ns.pk for ns in namespaces if ns.prefix == "lucia:session:"))]
    assert session["histogram"] == {**dict.fromkeys(BUCKET_NAMES, 0), "1m–15m": 1, "no TTL": 1}
    assert session["keys"] == 2 and session["bytes"] == 70_100 and data["vanished"] == 1
    assert data["findings"]["no_ttl"] == 1 and data["findings"]["wrong_type"] == 1
    assert review.Tally.from_json(data).to_json() == data


def test_it_shrinks_batches_to_keep_script_calls_within_the_budget(monitored, typed_lucia, settings):
    """BatchSizer reads the scripts' time per key from INFO commandstats and aims the average
    call at half SCRIPT_BUDGET_MS: a budget far below what 500 keys take shrinks the batches,
    and the review stays exact."""
    from continuity.keyspace import stream

    specs = load(monitored, 4000, seed=41)
    findings, _per_namespace, _foreign = expected_from_specs(specs)
    settings.SCRIPT_BUDGET_MS = 0.2  # ~0.2 ms: a few dozen keys per call
    seen = []
    real = stream.BatchSizer.next_count

    def spy(self, fetched):
        count = real(self, fetched)
        seen.append(count)
        return count

    stream.BatchSizer.next_count = spy
    try:
        result = review.review_database(database=typed_lucia, batch=500)
    finally:
        stream.BatchSizer.next_count = real
    assert result.findings == findings
    assert seen[0] < 500 and min(seen) >= 50 and result.run.batches > 4000 / 500


@pytest.mark.parametrize("round_trip_ms,batch_ms,calls", [
    (0.2, 0.01, 1),   # loopback: the one-connection stream hides the link
    (2.9, 0.5, 1),    # just under 3 ms (a LAN, or a loopback on a busy machine): one call per trip
    (3.0, 0.5, 4),    # from 3 ms: as many calls as cover the round trip…
    (3.0, 1.0, 3),
    (3.0, 3.0, 1),    # …none more where one call's work already covers it
    (3.0, 5.0, 1),
    (10.0, 4.0, 3),
    (20.0, 5.0, 4),
    (80.0, 5.0, 4),   # at most four: a page of four calls' worth, each within the budget
])
def test_it_carries_several_calls_per_round_trip_only_on_a_link_of_3_ms_or_more(round_trip_ms, batch_ms, calls):
    assert stream.calls_per_trip(round_trip_ms / 1000, batch_ms / 1000) == calls
