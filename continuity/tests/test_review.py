import json
from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from continuity import demo, keyspace
from continuity.keyspace import capabilities
from continuity.models import FINDINGS, Namespace, ReviewRun, ReviewSample
from continuity.operations import review
from dashboard.models import RedisDatabase

pytestmark = pytest.mark.usefixtures("transport")

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


def billed_delta(before, after):
    """Commands Redis executed between two `INFO commandstats`, free ones (INFO, CONFIG, …) left out."""
    free = {"info", "config", "config|resetstat", "config|get", "config|set", "ping", "auth", "hello", "select",
            "command", "reset", "quit", "client|setinfo", "client|setname"}
    total = 0
    for name, stats in after.items():
        command = name.removeprefix("cmdstat_")
        if command not in free and command.split("|")[0] not in free:
            total += stats["calls"] - before.get(name, {}).get("calls", 0)
    return total


@pytest.mark.parametrize("strategy", ["scan_script", "declared_keys"])
def test_it_bills_exactly_what_redis_executes(monitored, typed_lucia, settings, strategy):
    """`billed_commands` equals the INFO commandstats delta: every command Redis ran for the
    review, inside scripts included, free ones left out; with the seeded policies (types
    expected here) that is PTTL, TYPE and MEMORY USAGE per key plus a SCAN per page and an
    EVALSHA per script call (one per batch; several per round trip on a slow link)."""
    load(monitored, 3000, seed=4)
    monitored.script_flush()  # the first EVALSHA answers NOSCRIPT: billed and counted too
    before = monitored.info("commandstats")
    result = review.review_database(database=typed_lucia, batch=250, strategy=strategy)
    after = monitored.info("commandstats")
    assert result.billed_commands == billed_delta(before, after)
    assert result.run.billed_commands == result.billed_commands and result.run.strategy == strategy
    read = 3000 - result.foreign_keys
    pages = calls(after, "scan") - calls(before, "scan")  # inside the script or sent alone
    scripts = calls(after, "evalsha", "evalsha_ro") - calls(before, "evalsha", "evalsha_ro")
    assert pages >= 3000 // 250 // 4 and scripts >= result.run.batches  # batches shrink on a loaded machine
    assert 3 * read + pages + scripts <= result.billed_commands <= 3 * read + pages + scripts + 6
    assert result.as_json()["estimated_cost_usd"] == pytest.approx(result.billed_commands * 0.2 / 100_000)


def test_it_reads_only_what_the_policies_need_on_upstash(monitored, lucia):
    """The seeded policies (a TTL band and a size limit, no expected type) on an Upstash
    database: PTTL and MEMORY USAGE per key, no TYPE: at most 2.05 billed commands per key;
    without any size limit, at most 1.05. Findings stay exact."""
    specs = load(monitored, 4000, seed=8)
    before = monitored.info("commandstats")
    result = review.review_database(database=lucia, persist=False)
    after = monitored.info("commandstats")
    keys = result.keys_scanned
    assert result.strategy == "declared_keys" and calls(after, "type") == calls(before, "type")
    assert result.billed_commands == billed_delta(before, after) and result.billed_commands / keys <= 2.05
    assert result.findings["no_ttl"] == sum(1 for s in specs if s.violation == "no_ttl")
    Namespace.objects.filter(database=lucia).update(max_payload_bytes=0)
    before = monitored.info("commandstats")
    lean = review.review_database(database=lucia, persist=False)
    after = monitored.info("commandstats")
    assert calls(after, "memory|usage") == calls(before, "memory|usage")
    assert lean.billed_commands == billed_delta(before, after) and lean.billed_commands / keys <= 1.05
    assert lean.findings == {**result.findings, "oversized": 0}


def test_it_counts_exactly_what_the_generator_planted(monitored, typed_lucia, settings, steady_batches):
    specs = load(monitored, 6000)
    labels = Counter(s.violation for s in specs)
    findings, per_namespace, foreign = expected_from_specs(specs)
    before = monitored.info("commandstats")

    # steady_batches: the client-level list below is the scan script's path, one call per round trip; on a
    # loaded machine the batch sizer could choose another shape (its counts exact all the same).
    result = review.review_database(database=typed_lucia, batch=250, strategy="scan_script")

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
    # Three reviews run here, seconds apart on a loaded machine: no key may expire meanwhile (the
    # demo's shortest TTL is 10 s), and the TTL histogram is compared by its totals below (a key
    # near a bucket's edge crosses it as the seconds pass).
    keys = list(monitored.scan_iter(count=1000))
    pipe = monitored.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    ttls = pipe.execute()
    for key, pttl in zip(keys, ttls):
        if 0 < pttl < 600_000:
            pipe.pexpire(key, pttl + 600_000)
    pipe.execute()
    reference = review.review_database(database=typed_lucia, batch=200)

    class Crash(Exception):
        pass

    def crash(tally):
        if tally.batches == 7:  # after the checkpoint at batch 6, before the one at 9
            raise Crash

    with pytest.raises(Crash):
        review.review_database(database=typed_lucia, batch=200, checkpoint_every=3, on_batch=crash)
    run = ReviewRun.objects.get(status=ReviewRun.RUNNING)
    part = run.node_runs.get()  # a standalone server: one part, holding the checkpoint
    assert part.batches == 6 and part.cursor != "0" and part.aggregates["keys_scanned"] == part.keys_scanned > 0

    # Another worker cannot take it while the lease holds…
    with pytest.raises(review.ReviewBusy):
        review.review_database(database=typed_lucia, run=run)
    # …and resumes it once the lease has expired.
    ReviewRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    run.node_runs.update(heartbeat_at=timezone.now() - timedelta(hours=1))
    resumed = review.review_database(database=typed_lucia, run=run, checkpoint_every=3)

    assert resumed.run.resumes == 1 and resumed.run.node_runs.get().resumes == 1
    assert resumed.status == ReviewRun.SUCCEEDED
    assert resumed.keys_scanned == reference.keys_scanned == 5000
    assert resumed.findings == reference.findings

    def timeless(namespaces):
        return [{**row, "ttl_histogram": sum(row["ttl_histogram"].values())} for row in namespaces]

    assert timeless(resumed.namespaces) == timeless(reference.namespaces)
    assert resumed.run.samples.count() == reference.run.samples.count()


def test_it_runs_one_review_per_database_at_a_time(monitored, typed_lucia):
    first = review.start_review(database=typed_lucia)
    with pytest.raises(review.ReviewBusy) as busy:
        review.start_review(database=typed_lucia)
    assert busy.value.run == first
    token, _ = first.claim(lease_seconds=60)
    assert token and first.claim(lease_seconds=60) == (None, False)
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
    run.refresh_from_db()
    # Handed back: still running, its lease lapsed at once, for the retry to take over.
    assert run.status == ReviewRun.RUNNING and run.heartbeat_at is None and "unreachable" in run.error.lower()
    assert list(ReviewRun.objects.stalled(60)) == [run]


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


def test_it_estimates_findings_from_a_random_sample_at_a_cost_independent_of_size(monitored, lucia):
    """A sampled review reads ~N keys whatever the keyspace: its billed commands hardly move
    when the keyspace doubles, and each estimate's interval holds the true count (checked
    at z = 4, so the test fails by chance about once in 16,000 runs)."""
    from continuity.models.reviews import estimate

    specs = load(monitored, 20_000, seed=31, rate=0.05)
    small = review.review_database(database=lucia, sample=1000)
    assert small.sampled and small.run.sampled and 900 <= small.keys_scanned <= 1000
    assert small.population == 20_000 and small.run.kind_label == "sampled" and small.run.duration_s > 0
    truth = sum(1 for s in specs if s.ttl_seconds is None and s.violation != "foreign"
                and s.key.split(b":")[1].decode() in TYPES)
    wide = estimate(small.findings["no_ttl"], small.keys_scanned, 20_000, z=4)
    assert wide.low <= truth <= wide.high
    e = small.estimates()["no_ttl"]
    assert e.sampled and wide.low <= e.low <= e.value <= e.high <= wide.high
    assert small.as_json()["estimates"]["no_ttl"] == {"value": e.value, "low_95": e.low, "high_95": e.high}
    load(monitored, 20_000, seed=32)  # 40,000 keys now
    big = review.review_database(database=lucia, sample=1000)
    assert big.population == 40_000 and big.billed_commands < small.billed_commands * 1.3
    exact = review.review_database(database=lucia)
    assert not exact.sampled and exact.billed_commands > 20 * big.billed_commands


def test_it_reviews_a_keyspace_smaller_than_the_sample_exactly(monitored, lucia):
    specs = load(monitored, 300, seed=33)
    result = review.review_database(database=lucia, sample=2000)
    assert not result.sampled and result.keys_scanned == 300
    findings, _, _ = expected_from_specs(specs)
    assert result.findings["no_ttl"] == findings["no_ttl"]


def test_it_runs_a_sampled_review_from_the_command_line_and_says_so(monitored, lucia):
    load(monitored, 5000, seed=34)
    out = StringIO()
    call_command("ttl_review", "--database", "lucia", "--sample", "500", stdout=out)
    text = out.getvalue()
    assert "sampled" in text and "of 5000 keys" in text and "no_ttl ≈" in text
    out = StringIO()
    call_command("ttl_review", "--database", "lucia", "--sample", "500", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["sampled"] is True and data["population"] == 5000 and set(data["estimates"]) >= {"no_ttl"}
    out = StringIO()
    call_command("ttl_review", "--database", "lucia", "--json", stdout=out)
    assert json.loads(out.getvalue())["sampled"] is False  # exact unless asked


def test_it_counts_a_key_with_several_findings_once_in_the_share_inside_policy(monitored, typed_lucia):
    """Inside policy: keys with no finding at all. A session key without TTL that is also too
    big has two findings and is one key outside; a sampled review gives the share an interval."""
    pipe = monitored.pipeline()
    for i in range(6):
        pipe.set(f"lucia:session:{i}", b"x", ex=1800)  # inside
    pipe.set("lucia:session:big", b"x" * 40_000)  # no TTL and oversized: two findings, one key
    pipe.set("lucia:session:long", b"x", ex=7200)  # above the 1 h maximum
    pipe.execute()
    run = review.review_database(database=typed_lucia).run
    session = run.namespace_stats.select_related("run").get(label="lucia:session:")
    assert (session.keys, session.breaking_keys, sum(session.findings.values())) == (8, 2, 3)
    share = session.inside_policy()
    assert (share.value, share.low, share.high, share.sampled) == (75.0, 75.0, 75.0, False)
    session.breaking_keys = None  # a review from before the count: each finding counted as a key
    assert session.inside_policy().value == 62.5
    session.breaking_keys, session.run.sampled = 2, True
    share = session.inside_policy()
    assert share.sampled and round(share.low, 1) == 40.9 and round(share.high, 1) == 92.9
