"""Round trips as the measure of speed (issue 17, items 3 and 4): the pages and the jobs
through `bench.proxy.DelayProxy`, a link with a set round trip in front of the test's
redis-server, counting the round trips each makes (the times it waited on Redis), never
timing against the wall.

- At 80 ms: the key browser's first page, a key's detail and the overview each answer in at
  most 3 round trips (a kept-alive connection, as a running dashboard has).
- A sampled review of 2,000 keys: 3 round trips, the first job of a new process included.
- An exact review: one round trip per page and 3 more; on a 20 ms link, pages of several
  script calls' worth of keys: about half as many round trips as SCAN COUNT 1000 pages.
- A preview and a prefix purge: one round trip per page and a few more.
Every job's billed commands stay equal to the INFO commandstats delta.
"""

import pytest
from django.urls import reverse

from bench.proxy import DelayProxy
from continuity import demo, key_links, keyspace
from continuity.keyspace import capabilities
from continuity.keyspace import purge as redis_purge
from continuity.operations import purge, review
from continuity.tests.test_review import billed_delta

PAGE_RTT_MS = 80


def _pages(client, count):
    """SCAN calls of COUNT `count` over the whole keyspace: one round trip each, at best."""
    cursor, pages = 0, 0
    while True:
        cursor, _keys = client.scan(cursor=cursor, count=count)
        pages += 1
        if cursor == 0:
            return pages


def _shown(seen):
    return "\n".join(f"{number}: {data!r}" for number, data in seen.bursts())


@pytest.fixture
def link(redis_server, lucia, monkeypatch):
    """`lucia` reached through the delay proxy (no delay until a test sets one)."""
    with DelayProxy(redis_server.port, keep=2000) as proxy:
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{proxy.port}/0")
        keyspace.forget_clients()
        yield proxy
        keyspace.forget_clients()


@pytest.fixture
def loaded(monitored):
    """5,000 keys of the demo keyspace, written directly (not through the proxy)."""
    demo.write_keyspace(monitored, demo.lucia_keyspace(5000, seed=17))
    return monitored


def _fresh_process(database):
    """Forget what this client learned about its server, as a new worker process would
    (the connection stays: its set-up is not the job's)."""
    client = keyspace.client_for(database)
    client.__dict__.pop(capabilities._ATTRIBUTE, None)


# --- pages at 80 ms ------------------------------------------------------------------------------
def _get_twice(client, link, url, **headers):
    """The second answer to `url` (the first warms the connection and the server's scripts)
    and what it cost on the link."""
    assert client.get(url, headers=headers).status_code == 200
    with link.measure() as seen:
        response = client.get(url, headers=headers)
    return response, seen


def test_it_answers_the_browsers_first_page_in_at_most_three_round_trips(viewer_client, link, loaded):
    link.rtt_ms = PAGE_RTT_MS
    response, seen = _get_twice(viewer_client, link, reverse("continuity:browse", args=["lucia"]))
    result = response.context["result"]
    assert response.status_code == 200 and len(result.rows) >= 200 and result.dbsize == loaded.dbsize()
    assert seen.counts.round_trips <= 3 and seen.counts.connections == 0, _shown(seen)


def test_it_answers_a_sparse_prefix_in_at_most_three_round_trips(viewer_client, link, loaded):
    """A prefix matching few keys: the second SCAN looks as far as the budget allows."""
    for i in range(40):
        loaded.set(f"lucia:rare:{i}".encode(), b"1", ex=600)
    link.rtt_ms = PAGE_RTT_MS
    url = reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:rare:"
    response, seen = _get_twice(viewer_client, link, url)
    result = response.context["result"]
    assert result.calls == 2 and result.examined == 10_000 and {row.key for row in result.rows} <= {
        f"lucia:rare:{i}".encode() for i in range(40)} and len(result.rows) >= 1
    assert seen.counts.round_trips == 3 and seen.counts.connections == 0, _shown(seen)


@pytest.mark.parametrize("kind", ["string", "hash"])
def test_it_answers_a_keys_detail_in_at_most_three_round_trips(viewer_client, link, loaded, lucia, kind):
    key = b"lucia:session:rtt"
    if kind == "string":
        loaded.set(key, b'{"turn": 3}', ex=600)
    else:  # a hash too large for one HSCAN page of 100
        loaded.hset(key, mapping={f"field-{i}": i for i in range(1000)})
    link.rtt_ms = PAGE_RTT_MS
    url = reverse("continuity:key_detail", args=["lucia", key_links.url_token(key, lucia)])
    response, seen = _get_twice(viewer_client, link, url)
    preview = response.context["preview"]
    assert preview.meta.type == kind
    if kind == "string":
        assert preview.json_text == '{\n  "turn": 3\n}' and preview.length == 11
        assert seen.counts.round_trips == 2, _shown(seen)
    else:
        assert preview.length == 1000 and preview.shown == 100 and preview.truncated
        assert seen.counts.round_trips <= 3, _shown(seen)
    assert seen.counts.connections == 0


def test_it_answers_the_overview_in_at_most_three_round_trips(viewer_client, link, loaded):
    """The page itself (its banner's ping is cached) and its two regions: the server figures
    (one round trip) and the namespace sample (two)."""
    link.rtt_ms = PAGE_RTT_MS
    htmx = {"HX-Request": "true"}
    page, on_page = _get_twice(viewer_client, link, reverse("continuity:overview"))
    summary, on_summary = _get_twice(viewer_client, link, reverse("continuity:database_summary", args=["lucia"]),
                                     **htmx)
    stats, on_stats = _get_twice(viewer_client, link, reverse("continuity:namespace_stats", args=["lucia"]), **htmx)
    assert f"{loaded.dbsize():,}" in summary.content.decode()
    assert 'data-testid="stats"' in stats.content.decode() and "Redis is unreachable" not in stats.content.decode()
    counts = [seen.counts for seen in (on_page, on_summary, on_stats)]
    assert [c.round_trips for c in counts] == [0, 1, 2], "\n".join(_shown(s) for s in (on_page, on_summary, on_stats))
    assert sum(c.round_trips for c in counts) <= 3 and sum(c.connections for c in counts) == 0


# --- jobs ----------------------------------------------------------------------------------------------
def test_it_reviews_a_sample_of_2000_keys_in_three_round_trips(link, loaded, lucia):
    review.review_database(database=lucia, sample=2000)  # connected, the scripts loaded
    _fresh_process(lucia)
    before = loaded.info("commandstats")
    with link.measure() as seen:
        result = review.review_database(database=lucia, sample=2000)
    after = loaded.info("commandstats")
    assert result.sampled and result.status == "succeeded" and 1900 <= result.keys_scanned <= 2000
    assert result.billed_commands == billed_delta(before, after)
    # The cluster probe with DBSIZE, the random SCANs together, the sample's metadata.
    assert seen.counts.round_trips == 3 and seen.counts.connections == 0, _shown(seen)


def test_it_reviews_exactly_in_one_round_trip_per_page_and_three_more(link, loaded, lucia):
    pages = _pages(loaded, 1000)
    review.review_database(database=lucia, sample=2000)
    _fresh_process(lucia)
    before = loaded.info("commandstats")
    with link.measure() as seen:
        result = review.review_database(database=lucia)
    after = loaded.info("commandstats")  # before the test's own DBSIZE
    assert result.status == "succeeded" and result.keys_scanned == loaded.dbsize()
    assert result.billed_commands == billed_delta(before, after)
    # The probe with DBSIZE, the batch sizer's first reading, the first SCAN alone; then each
    # page's metadata with the next SCAN (the last with DBSIZE). A loaded machine may shrink
    # the batches (more pages), never add a round trip to a page.
    # (A pipeline whose pieces a CPU-starved machine writes milliseconds apart, the server
    # answering the first piece meanwhile, counts twice at the proxy: hence the upper margin.)
    scans = after["cmdstat_scan"]["calls"] - before["cmdstat_scan"]["calls"]
    assert scans + 3 <= seen.counts.round_trips <= scans + 3 + scans // 2, _shown(seen)
    assert result.run.batches == scans <= 2 * pages


def test_it_carries_several_script_calls_per_round_trip_on_a_slow_link(link, loaded, lucia, settings):
    pages = _pages(loaded, 1000)
    review.review_database(database=lucia, sample=2000)
    link.rtt_ms = 20
    before = loaded.info("commandstats")
    with link.measure() as seen:
        result = review.review_database(database=lucia)
    after = loaded.info("commandstats")  # before the test's own DBSIZE
    assert result.status == "succeeded" and result.keys_scanned == loaded.dbsize()
    assert result.billed_commands == billed_delta(before, after)
    assert seen.counts.round_trips <= pages // 2 + 4, _shown(seen)


def test_it_previews_and_purges_a_prefix_in_one_round_trip_per_page(link, loaded, lucia, operator, settings):
    settings.PURGE_CHECKPOINT_SECONDS = 3600
    pages = _pages(loaded, settings.PURGE_BATCH_SIZE)
    purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:focus:", actor=operator)  # connected
    _fresh_process(lucia)
    before = loaded.info("commandstats")
    with link.measure() as previewing:
        preview = purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    after = loaded.info("commandstats")
    assert preview.matched == sum(1 for _ in loaded.scan_iter(match=b"lucia:session:*", count=1000))
    assert preview.billed == billed_delta(before, after)
    assert pages <= previewing.counts.round_trips <= pages + 2, _shown(previewing)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="round trips",
                              actor=operator, source="cli")
    loaded.script_load(redis_purge.PURGE_SCRIPT.body)  # a server new to it: one more round trip, once
    before = loaded.info("commandstats")
    with link.measure() as purging:
        result = purge.execute_purge(run_id=run.pk, source="cli")
    after = loaded.info("commandstats")
    run.refresh_from_db()
    assert result.status == "succeeded" and result.done == preview.matched
    assert run.billed_commands == billed_delta(before, after)
    # The first SCAN with the marker, a round trip per page, the marker's DEL.
    assert pages <= purging.counts.round_trips <= pages + 2, _shown(purging)
