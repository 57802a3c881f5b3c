"""The benchmark harness works end to end on a small keyspace (no timing assertions:
speed is measured by `python -m bench.run`, not by tests)."""

from bench import run


def test_it_runs_the_benchmark_harness_in_smoke_mode():
    report = run.run_benchmark(sizes=(20_000,), repeats=1, browse=5, log=lambda line: None)
    entry = report["sizes"]["20000"]
    assert entry["keys"] == entry["reviewed_keys"] == 20_000
    assert sum(entry["findings"].values()) > 0 and entry["foreign"] > 0
    # What the engine billed is what Redis executed (INFO commandstats), on both plans, on
    # either path (the scan script, or SCAN from the client where the link measured slow).
    for plan in ("upstash", "self_hosted_cost"):
        assert entry[plan]["billed_commands"] == entry[plan]["commandstats_billed"] > 20_000, plan
    assert 0 < entry["redis_calls_per_review"] <= entry["engine_counted_commands"]
    assert entry["calls_inside_scripts"] > 20_000  # PTTL/TYPE/MEMORY ran inside the script
    assert entry["review_s_median"] > 0 and entry["memkeys_s_median"] > 0 and entry["peak_rss_mb_median"] > 0
    assert report["browse"]["pages"] == 5 and report["browse"]["p95_ms"] >= report["browse"]["median_ms"] > 0
    assert report["machine"]["cores"] >= 1 and "Redis server" in report["machine"]["redis"]
