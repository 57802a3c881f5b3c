"""Sampled TTL reviews of a real local 3-primary Redis Cluster: the sample is spread over
the primaries in proportion to their DBSIZE (a stratified sample) and the per-primary
counts are combined into one estimate with a 95% interval (`stratified_estimate`). Also:
what a cluster review bills, per primary and summed, against each node's INFO commandstats."""

import json
import math
import random
from datetime import timedelta
from io import StringIO

import pytest
import redis
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from continuity.models import FINDINGS, ReviewRun
from continuity.models.reviews import stratified_estimate
from continuity.operations import review
from continuity.tests.test_cluster_review import (cluster_record, finished, keys_per_node, spread,  # noqa: F401
                                                  typed_cluster_lucia)
from continuity.tests.test_review import billed_delta, expected_from_specs
from continuity.tests.waiting import wait_for


def stats_of(ports):
    out = []
    for port in ports:
        with redis.Redis(port=port) as node:
            out.append(node.info("commandstats"))
    return out


def billed_on_nodes(ports, before):
    """The billed commands each node executed since `before` (free ones left out)."""
    return [billed_delta(b, a) for b, a in zip(before, stats_of(ports))]


# --- the maths, without Redis ---------------------------------------------------------------
def wilson_width(p, n, z=1.96):
    return 2 * z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def test_it_allocates_the_sample_in_proportion_to_each_primarys_keys():
    assert review.allocate(2000, [50_000, 30_000, 20_000]) == [1000, 600, 400]
    # A primary holding no more keys than its share is read whole; at least MIN_SHARE keys each.
    assert review.allocate(1000, [100_000, 5, 0]) == [1000, None, None]
    assert review.allocate(1000, [100_000, 500, 0]) == [995, 30, None]
    assert review.allocate(1000, [400, 300, 200]) == [None, None, None]  # small keyspace: exact
    assert review.allocate(1000, [40_000, None, 20_000]) == [None, None, None]  # a DBSIZE refused


def test_the_stratified_interval_covers_the_truth_95_times_in_100():
    """Coverage of `stratified_estimate` on simulated finite strata with unequal finding
    rates, sampled without replacement in proportion to their size: a 95% interval must hold
    the true count in about 95% of draws (checked >= 93% over 2,000 draws, a fixed seed), and
    a finding no stratum saw still gets an upper bound above zero."""
    rng = random.Random(20261127)
    sizes, rates = [50_000, 30_000, 20_000], [0.002, 0.03, 0.01]
    planted = [round(size * rate) for size, rate in zip(sizes, rates)]
    truth = sum(planted)
    shares = review.allocate(1500, sizes)
    covered, widths = 0, []
    for _ in range(2000):
        strata = []
        for size, bad, share in zip(sizes, planted, shares):
            found = sum(1 for i in rng.sample(range(size), share) if i < bad)
            strata.append({"population": size, "keys": share, "findings": {"no_ttl": found}, "sampled": True})
        e = stratified_estimate(strata, "no_ttl")
        covered += e.low <= truth <= e.high
        # Never narrower than the Wilson interval of a simple random sample of the same size
        # at the same proportion (the n* cap).
        p = sum(size / sum(sizes) * s["findings"]["no_ttl"] / s["keys"] for size, s in zip(sizes, strata))
        widths.append((e.high - e.low) - sum(sizes) * wilson_width(p, sum(shares)))
    assert covered / 2000 >= 0.93
    assert min(widths) >= -2  # (rounding to whole keys)
    none = [{"population": size, "keys": share, "findings": {}, "sampled": True} for size, share in zip(sizes, shares)]
    zero = stratified_estimate(none, "no_ttl")
    assert (zero.value, zero.low) == (0, 0) and zero.high > 0 and zero.sampled
    # A stratum read whole adds its exact count with no width.
    whole = none + [{"population": 7, "keys": 7, "findings": {"no_ttl": 3}, "sampled": False}]
    assert (stratified_estimate(whole, "no_ttl").value, stratified_estimate(whole, "no_ttl").low) == (3, 3)


# --- sampled reviews of the real cluster -----------------------------------------------------
def test_it_samples_every_primary_and_the_interval_holds_the_planted_count(typed_cluster_lucia, cluster_keys,
                                                                           redis_cluster):
    """Each finding's estimate holds the count the generator planted (checked at z = 4, so
    the test fails by chance about once in 16,000 runs per finding, like the standalone one);
    the sample is spread in proportion to each primary's keys; billed = commandstats."""
    specs = spread(cluster_keys, n=30_000, seed=31)
    truth, _, _ = expected_from_specs(specs)
    per_node = keys_per_node(redis_cluster.ports)
    before = stats_of(redis_cluster.ports)

    result = review.review_database(database=typed_cluster_lucia, sample=1500)

    spent = billed_on_nodes(redis_cluster.ports, before)
    run = result.run
    assert result.status == "succeeded" and result.sampled and run.sampled and run.kind_label == "sampled"
    assert result.population == run.dbsize_before == 30_000 and run.missing_nodes == []
    nodes = {node.address: node for node in run.node_runs.all()}
    addresses = [f"127.0.0.1:{port}" for port in redis_cluster.ports]
    shares = review.allocate(1500, per_node)
    for address, size, share in zip(addresses, per_node, shares):
        node = nodes[address]
        assert (node.status, node.dbsize_before, node.sample_size) == ("succeeded", size, share)
        assert 0.9 * share <= node.keys_scanned <= share
    assert sorted(s["address"] for s in run.strata) == sorted(addresses) and all(s["sampled"] for s in run.strata)
    assert result.keys_scanned == sum(node.keys_scanned for node in nodes.values())
    for kind in FINDINGS:
        wide = stratified_estimate(run.strata, kind, z=4)
        assert wide.low <= truth[kind] <= wide.high, kind
        e = result.estimates()[kind]
        assert e.sampled and wide.low <= e.low <= e.value <= e.high <= wide.high, kind
        assert run.estimates()[kind] == e
    assert result.as_json()["estimates"]["no_ttl"] == {
        "value": result.estimates()["no_ttl"].value, "low_95": result.estimates()["no_ttl"].low,
        "high_95": result.estimates()["no_ttl"].high}
    # Billed per primary: that node's own commandstats delta; the run's is their sum (each node
    # also ran two of the run's own CLUSTER NODES: when the parts were planned, and at the end).
    assert [nodes[a].billed_commands + 2 for a in addresses] == spent
    assert run.billed_commands == sum(spent) == result.billed_commands


def test_a_sampled_review_costs_about_the_sample_whatever_the_keyspace(typed_cluster_lucia, cluster_keys, redis_cluster):
    """Bounded: per primary one DBSIZE and a few SCANs, then PTTL, TYPE and MEMORY USAGE of
    each sampled key in one script call over the sample's keys. Doubling the keyspace barely
    moves it; an exact review of the same keyspace costs over ten times more."""
    spread(cluster_keys, n=15_000, seed=41)
    before = stats_of(redis_cluster.ports)
    small = review.review_database(database=typed_cluster_lucia, sample=1000)
    assert sum(billed_on_nodes(redis_cluster.ports, before)) == small.billed_commands
    assert small.sampled and small.population == 15_000
    # reads + 3 DBSIZEs + at most 4 * (share // 100) + 20 SCAN windows a primary + a script call
    # a primary (and its first NOSCRIPT and SCRIPT LOAD) + 6 CLUSTER NODES
    assert small.billed_commands <= 3 * small.keys_scanned + 3 + (4 * 1000 // 100 + 60) + 3 * 3 + 6
    assert small.run.strategy == "declared_keys"

    spread(cluster_keys, n=15_000, seed=42)  # 30,000 keys now
    before = stats_of(redis_cluster.ports)
    big = review.review_database(database=typed_cluster_lucia, sample=1000)
    assert sum(billed_on_nodes(redis_cluster.ports, before)) == big.billed_commands
    assert big.population == 30_000 and big.billed_commands < small.billed_commands * 1.3
    exact = review.review_database(database=typed_cluster_lucia)
    assert not exact.sampled and exact.keys_scanned == 30_000 and exact.billed_commands > 10 * big.billed_commands


def test_it_runs_a_sampled_cluster_review_from_ttl_review_and_shows_it(typed_cluster_lucia, cluster_keys, redis_cluster,
                                                                        viewer_client):
    spread(cluster_keys, n=12_000, seed=43)
    out = StringIO()
    call_command("ttl_review", "--database", "lucia", "--sample", "900", stdout=out)
    text = out.getvalue()
    run = ReviewRun.objects.get()
    assert run.status == "succeeded" and run.sampled and len(run.strata) == 3
    assert f"lucia: sampled {run.keys_scanned} of 12000 keys" in text and "no_ttl ≈" in text

    out = StringIO()
    call_command("ttl_review", "--database", "lucia", "--sample", "900", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["status"] == "succeeded" and data["sampled"] is True and data["population"] == 12_000
    assert set(data["estimates"]) == set(FINDINGS) and "missing_nodes" not in data
    assert sorted(s["population"] for s in data["strata"]) == sorted(keys_per_node(redis_cluster.ports))
    assert sum(s["keys"] for s in data["strata"]) == data["keys_scanned"]
    second = ReviewRun.objects.get(pk=data["run"])
    assert data["estimates"]["no_ttl"]["value"] == second.estimates()["no_ttl"].value

    page = viewer_client.get(reverse("continuity:review_detail", args=[second.pk])).content.decode()
    e = second.estimates()["no_ttl"]
    assert 'data-testid="review-kind"' in page and ">sampled<" in page
    assert f'data-testid="interval-no_ttl">95%: {e.low:,}–{e.high:,}<' in page
    assert page.count('data-testid="review-node"') == 3 and 'data-testid="sampled-note"' in page
    for node in second.node_runs.all():
        assert f'data-testid="node-billed">{node.billed_commands:,}<' in page
        assert f'data-testid="node-sample">{node.keys_scanned:,} of {node.dbsize_before:,}<' in page


def test_a_sampled_review_with_a_dead_primary_is_partial_never_succeeded(lucia, disposable_cluster, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv("LUCIA_DISPOSABLE_URL", disposable_cluster.url(0))
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_DISPOSABLE_URL")
    writer = redis.RedisCluster(host="127.0.0.1", port=disposable_cluster.ports[0])
    spread(writer, n=9000, seed=44)
    writer.close()
    alive = keys_per_node(disposable_cluster.ports[:2])
    disposable_cluster.kill(2)
    dead = f"127.0.0.1:{disposable_cluster.ports[2]}"

    with pytest.raises(CommandError) as failed:
        call_command("ttl_review", "--database", "lucia", "--sample", "900", "--json")
    payload = json.loads(capsys.readouterr().out)
    assert payload["status"] == "partial" and payload["missing_nodes"] == [dead] and dead in str(failed.value)
    assert payload["sampled"] is True and payload["population"] == sum(alive)  # what the estimates cover
    run = ReviewRun.objects.get(pk=payload["run"])
    assert sorted(s["address"] for s in run.strata) == sorted(f"127.0.0.1:{p}" for p in disposable_cluster.ports[:2])
    assert run.node_runs.get(address=dead).status == "failed"
    assert run.error.startswith(f"Partial review: 1 of 3 primaries could not be read ({dead}: ")


# --- billed commands per primary, both strategies ---------------------------------------------
@pytest.mark.parametrize("strategy", ["scan_script", "declared_keys"])
def test_billed_commands_are_each_primarys_commandstats_delta_summed(typed_cluster_lucia, cluster_keys, redis_cluster,
                                                                     settings, strategy, viewer_client,
                                                                     steady_batches):
    """An exact review: each part's `billed_commands` is what its node executed for it
    (INFO commandstats, script-internal calls included, free commands left out), the run's
    the sum of the three, shown per primary on the page. With declared_keys a cluster node
    runs the metadata script over the batch's keys undeclared (declared KEYS must share one
    slot there)."""
    specs = spread(cluster_keys, n=4000, seed=45)
    findings, _, _ = expected_from_specs(specs)
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            node.script_flush()  # a first EVALSHA answers NOSCRIPT: executed, billed and counted
    before = stats_of(redis_cluster.ports)
    # steady_batches: the bounds below are two commands per batch, one script call per round trip; on a loaded
    # machine the batch sizer could choose another shape (its counts exact all the same).
    result = review.review_database(database=typed_cluster_lucia, batch=200, strategy=strategy)
    spent = billed_on_nodes(redis_cluster.ports, before)
    run = result.run
    assert run.status == "succeeded" and run.findings == findings and run.keys_scanned == 4000
    assert run.strategy == strategy
    nodes = {node.address: node for node in run.node_runs.all()}
    addresses = [f"127.0.0.1:{port}" for port in redis_cluster.ports]
    # Each node also ran the run's own CLUSTER NODES twice: when its parts were planned (the
    # primaries, and any slot being migrated) and at the end (the slot check).
    assert run.topology_billed(nodes.values()) == 6
    assert [nodes[a].billed_commands + 2 for a in addresses] == spent
    assert run.billed_commands == sum(spent)
    # PTTL, TYPE and MEMORY USAGE per key; per batch a script call, and a SCAN beside it for
    # declared_keys; a NOSCRIPT and a SCRIPT LOAD per node; 2 DBSIZEs a node.
    reads = 3 * (4000 - run.foreign_keys)
    per_batch = 2  # SCAN and EVALSHA: the SCAN inside the script, or beside it
    fixed = 6 + 6 + 6  # DBSIZE before and after on each node; NOSCRIPT + SCRIPT LOAD per node; 6 CLUSTER NODES
    assert reads + per_batch * run.batches + fixed <= run.billed_commands <= reads + per_batch * run.batches + fixed + 6
    page = viewer_client.get(reverse("continuity:review_detail", args=[run.pk])).content.decode()
    for address in addresses:
        assert f'data-testid="node-billed">{nodes[address].billed_commands:,}<' in page
    assert 'data-testid="topology-billed">6<' in page
    assert f'data-testid="nodes-billed-total">{run.billed_commands:,}<' in page


# --- the beat-seeded schedule on a real worker --------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_seeded_15_minute_schedule_reviews_the_cluster_sampled(empty_broker, redis_cluster, cluster_keys,
                                                                    monkeypatch, settings, celery_worker):
    """Beat ticks the seeded 'ttl review' (sampled, REVIEW_SAMPLE_SIZE keys) into the broker; the
    worker queues a review of the cluster database, fans it out per primary, and the chord's
    callback ends it succeeded and sampled (it was refused before)."""
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from dashboard.celery import app

    lucia = cluster_record("LUCIA_CLUSTER_URL", redis_cluster.url(2), monkeypatch)
    spread(cluster_keys, n=6000, seed=46)
    task = PeriodicTask.objects.get(name="ttl review")
    assert json.loads(task.kwargs) == {"sample": settings.REVIEW_SAMPLE_SIZE} == {"sample": 2000}
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=timezone.now() - timedelta(hours=1))
    DatabaseScheduler(app=app).tick()

    run = wait_for(lambda: ReviewRun.objects.filter(database=lucia).first(), 30, "the scheduled review")
    done = wait_for(finished(run.pk), 60, "the chord's callback")
    assert (done.status, done.triggered_by, done.sampled, done.dbsize_before) == ("succeeded", "schedule", True, 6000)
    assert len(done.strata) == 3 and sum(s["keys"] for s in done.strata) == done.keys_scanned
    assert 0.9 * 2000 <= done.keys_scanned <= 2000
    assert all(node.status == "succeeded" and node.sample_size for node in done.node_runs.all())
