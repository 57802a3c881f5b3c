import json
from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from continuity import demo, keyspace
from continuity.keyspace import capabilities, meta
from continuity.models import FINDINGS, Namespace, ReviewRun, ReviewSample
from continuity.operations import review
from dashboard.models import RedisDatabase

TYPES = {"session": "string", "distress": "hash", "focus": "string", "action": "string", "rate": "string"}


@pytest.fixture
def typed_lucia(lucia):
    for name, kind in TYPES.items():
        Namespace.objects.filter(database=lucia, name=name).update(expected_type=kind)
    return lucia


def expected_from_specs(specs):
    """What a review must find, derived from the generator's own specs and labels."""
    findings, per_namespace, foreign = Counter(), Counter(), 0
    for spec in specs:
        if spec.violation == "foreign":
            foreign += 1
            continue
        ns = spec.key.split(b":")[1].decode()
        if ns not in TYPES:
            findings["unknown_namespace"] += 1
            per_namespace["(no namespace)"] += 1
            continue
        per_namespace[f"lucia:{ns}:"] += 1
        if spec.ttl_seconds is None:
            findings["no_ttl"] += 1
        elif spec.ttl_seconds > demo.MAX_TTL[ns]:
            findings["ttl_above_max"] += 1
        if spec.violation == "oversized":
            findings["oversized"] += 1
        if spec.type != TYPES[ns]:
            findings["wrong_type"] += 1
    return {kind: findings[kind] for kind in FINDINGS}, dict(per_namespace), foreign


def load(monitored, n, seed=11, rate=0.02):
    specs = list(demo.lucia_keyspace(n, seed=seed, violation_rate=rate))
    demo.write_keyspace(monitored, specs)
    return specs


def calls(stats, *commands):
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in commands)


def test_it_counts_exactly_what_the_generator_planted(monitored, typed_lucia):
    specs = load(monitored, 6000)
    labels = Counter(s.violation for s in specs)
    findings, per_namespace, foreign = expected_from_specs(specs)
    before = monitored.info("commandstats")

    result = review.review_database(database=typed_lucia, batch=250)

    after = monitored.info("commandstats")
    assert result.keys_scanned == 6000
    assert result.foreign_keys == foreign == labels["foreign"]
    assert result.findings == findings
    # The planted labels, one for one (wrong_type also catches oversized distress keys,
    # which the generator turned into strings).
    for kind in ("no_ttl", "ttl_above_max", "oversized", "unknown_namespace"):
        assert result.findings[kind] == labels[kind], kind
    assert result.findings["wrong_type"] >= labels["wrong_type"]
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    # Every command this client sent is counted: one EVALSHA per batch (SCAN, PTTL, TYPE
    # and MEMORY USAGE run inside it), DBSIZE twice, a SCRIPT LOAD on a server new to the
    # script. commandstats also lists the calls made inside scripts: those are the SCANs.
    client_level = ("evalsha_ro", "eval_ro", "evalsha", "eval", "script|load", "script", "dbsize")
    issued = calls(after, *client_level) - calls(before, *client_level)
    batches = calls(after, "scan") - calls(before, "scan")
    assert result.commands == issued <= batches + 4
    assert batches >= 6000 / 250 and calls(after, "pttl") - calls(before, "pttl") == 6000 - foreign
    run = result.run
    assert run.status == ReviewRun.SUCCEEDED and run.keys_scanned == 6000 and run.findings == findings
    assert run.dbsize_before == run.dbsize_after == 6000 and not run.keyspace_changed()
    stats = {s.label: s for s in run.namespace_stats.all()}
    session = stats["lucia:session:"]
    assert sum(session.ttl_histogram.values()) == session.keys == per_namespace["lucia:session:"]
    assert session.findings["no_ttl"] == sum(1 for s in specs if s.violation == "no_ttl" and b":session:" in s.key)
    sizes = [size for _, size in session.top_keys]
    assert len(sizes) == review.TOP_N and sizes == sorted(sizes, reverse=True) and sizes[0] > 20_000
    for kind in FINDINGS:
        samples = list(run.samples.filter(finding=kind))
        assert len(samples) == min(findings[kind], review.SAMPLE_CAP)
    planted_no_ttl = {s.key for s in specs if s.violation == "no_ttl"}
    assert {bytes(s.key) for s in run.samples.filter(finding="no_ttl")} <= planted_no_ttl


def test_it_caps_samples_at_one_hundred_per_finding(monitored, typed_lucia):
    pipe = monitored.pipeline()
    for i in range(250):
        pipe.set(f"lucia:legacy:{i}".encode(), b"x")
    pipe.execute()
    result = review.review_database(database=typed_lucia)
    assert result.findings["unknown_namespace"] == 250
    assert ReviewSample.objects.filter(run=result.run, finding="unknown_namespace").count() == 100


def test_it_keeps_odd_keys_byte_exact_and_uses_the_longest_prefix(monitored, typed_lucia):
    Namespace.objects.create(database=typed_lucia, name="session-vip", prefix="lucia:session:vip:",
                             max_ttl_seconds=60, ttl_required=True)
    odd = [b"lucia:session:\xff\xfe", b"lucia:session:a*b?[c]", b"lucia:session:back\\slash\n",
           b"lucia:session:vip:1", b"lucia:sessio", b"lucia:\x00legacy"]
    for key in odd:
        monitored.set(key, b"v")
    monitored.set(b"not-lucia:\xff", b"v")

    result = review.review_database(database=typed_lucia)

    by_prefix = {row["prefix"]: row for row in result.namespaces}
    assert by_prefix["lucia:session:"]["keys"] == 3
    assert by_prefix["lucia:session:vip:"]["keys"] == 1
    assert by_prefix["(no namespace)"]["keys"] == 2
    assert result.foreign_keys == 1
    assert result.findings["no_ttl"] == 4 and result.findings["unknown_namespace"] == 2
    stored = {bytes(s.key) for s in result.run.samples.filter(finding="no_ttl")}
    assert stored == set(odd[:4])
    sample = result.run.samples.get(finding="no_ttl", key=b"lucia:session:\xff\xfe")
    assert keyspace.decode_key(sample.token) == b"lucia:session:\xff\xfe"
    assert sample.display == "lucia:session:\\xff\\xfe"


def test_it_falls_back_to_a_pipeline_for_a_user_without_eval(monitored, typed_lucia, redis_server, monkeypatch):
    specs = load(monitored, 1500, seed=5)
    findings, per_namespace, foreign = expected_from_specs(specs)
    monitored.execute_command("ACL", "SETUSER", "noeval", "on", "nopass", "~*", "+@all", "-@scripting")
    monkeypatch.setenv("NOEVAL_URL", f"redis://noeval@127.0.0.1:{redis_server.port}/0")
    restricted = RedisDatabase.objects.create(name="restricted", key_prefix="lucia:", url_env="NOEVAL_URL")
    for ns in Namespace.objects.filter(database=typed_lucia):
        ns.pk, ns.database = None, restricted
        ns.save()
    try:
        before = monitored.info("commandstats")
        result = review.review_database(database=restricted, batch=500)
        after = monitored.info("commandstats")
    finally:
        monitored.execute_command("ACL", "DELUSER", "noeval")
    assert capabilities.of(keyspace.client_for(restricted)).script is False
    assert result.findings == findings and result.foreign_keys == foreign
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    assert calls(after, "pttl") - calls(before, "pttl") == 1500 - foreign
    assert calls(after, "evalsha", "evalsha_ro") == calls(before, "evalsha", "evalsha_ro")


def test_it_sees_each_key_once_while_the_table_grows_mid_scan(monitored, typed_lucia):
    specs = load(monitored, 3000, seed=3)
    findings, per_namespace, _ = expected_from_specs(specs)

    def grow(tally):
        if tally.batches == 3:  # writes that force the hash table to grow (and rehash) mid-scan
            pipe = monitored.pipeline(transaction=False)
            for i in range(40_000):
                pipe.set(f"zz-other:{i}".encode(), b"1")
            pipe.execute()

    result = review.review_database(database=typed_lucia, batch=100, on_batch=grow)
    assert result.findings == findings
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    assert result.run.keyspace_changed()


def test_it_resumes_from_the_checkpoint_without_double_counting(monitored, typed_lucia, settings):
    load(monitored, 5000, seed=13)
    reference = review.review_database(database=typed_lucia, batch=200)

    class Crash(Exception):
        pass

    def crash(tally):
        if tally.batches == 7:  # after the checkpoint at batch 6, before the one at 9
            raise Crash

    with pytest.raises(Crash):
        review.review_database(database=typed_lucia, batch=200, checkpoint_every=3, on_batch=crash)
    run = ReviewRun.objects.get(status=ReviewRun.RUNNING)
    assert run.batches == 6 and run.cursor != "0" and run.aggregates["keys_scanned"] == run.keys_scanned > 0

    # Another worker cannot take it while the lease holds…
    with pytest.raises(review.ReviewBusy):
        review.review_database(database=typed_lucia, run=run)
    # …and resumes it once the lease has expired.
    ReviewRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    resumed = review.review_database(database=typed_lucia, run=run, checkpoint_every=3)

    assert resumed.run.resumes == 1 and resumed.status == ReviewRun.SUCCEEDED
    assert resumed.keys_scanned == reference.keys_scanned == 5000
    assert resumed.findings == reference.findings
    assert resumed.namespaces == reference.namespaces
    assert resumed.run.samples.count() == reference.run.samples.count()


def test_it_runs_one_review_per_database_at_a_time(monitored, typed_lucia):
    first = review.start_review(database=typed_lucia)
    with pytest.raises(review.ReviewBusy) as busy:
        review.start_review(database=typed_lucia)
    assert busy.value.run == first
    token = first.claim(lease_seconds=60)
    assert token and first.claim(lease_seconds=60) is None
    first.cancel()
    assert review.start_review(database=typed_lucia).status == ReviewRun.QUEUED


def test_it_returns_a_finished_run_without_reviewing_again(monitored, typed_lucia):
    monitored.set(b"lucia:session:1", b"v")
    done = review.review_database(database=typed_lucia)
    monitored.set(b"lucia:session:2", b"v")
    again = review.review_database(database=typed_lucia, run=done.run)
    assert again.keys_scanned == 1 and again.run.pk == done.run.pk


def test_it_stops_at_the_next_checkpoint_when_cancelled(monitored, typed_lucia):
    load(monitored, 2000, seed=2)

    def cancel(tally):
        if tally.batches == 2:
            ReviewRun.objects.active().get().cancel()

    result = review.review_database(database=typed_lucia, batch=100, checkpoint_every=2, on_batch=cancel)
    assert result.status == ReviewRun.CANCELLED
    assert result.run.namespace_stats.count() == 0


def test_it_hands_the_run_back_when_redis_is_down(typed_lucia, monkeypatch):
    monkeypatch.setenv("DOWN_URL", "redis://127.0.0.1:1/0")
    down = RedisDatabase.objects.create(name="down", url_env="DOWN_URL")
    with pytest.raises(review.ReviewInterrupted) as interrupted:
        review.review_database(database=down)
    run = interrupted.value.run
    assert run.status == ReviewRun.QUEUED and "unreachable" in run.error.lower()


def test_it_reviews_without_postgres_writes_when_asked(monitored, typed_lucia):
    specs = load(monitored, 1000, seed=4)
    findings, _, foreign = expected_from_specs(specs)
    result = review.review_database(database=typed_lucia, persist=False)
    assert result.findings == findings and result.foreign_keys == foreign and result.run is None
    assert not ReviewRun.objects.exists()


def test_it_prints_the_review_as_json_from_the_command(monitored, typed_lucia):
    specs = load(monitored, 1200, seed=9)
    findings, per_namespace, foreign = expected_from_specs(specs)
    out = StringIO()
    call_command("ttl_review", "--database", "lucia", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["database"] == "lucia" and data["keys_scanned"] == 1200
    assert data["findings"] == findings and data["foreign_keys"] == foreign
    assert {row["prefix"]: row["keys"] for row in data["namespaces"]} == per_namespace
    assert data["commands"] >= 3 and data["duration_s"] > 0
    assert ReviewRun.objects.get().status == ReviewRun.SUCCEEDED
