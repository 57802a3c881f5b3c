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

import re

import pytest
import redis
from django.urls import reverse

from bench.proxy import DelayProxy
from continuity import demo, key_links, keyspace
from continuity.keyspace import capabilities, stream
from continuity.keyspace import purge as redis_purge
from continuity.models import ReviewRun
from continuity.operations import purge, review
from continuity.tests.test_review import billed_delta, calls

# Every count is taken on a link of 80 ms: a writer starved of CPU for less than a round
# trip cannot split one pipeline into two bursts at the proxy (`bench.proxy`, rule 1).
RTT_MS = PAGE_RTT_MS = 80
PREVIEW_MORE = 2  # a new process's preview: the cluster probe, the instant estimate's DBSIZE, then the SCANs
PURGE_MORE = 2  # a purge: the first SCAN with the marker's SET, a round trip per page, the marker's DEL


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


def test_it_answers_a_sparse_prefix_in_at_most_three_round_trips(viewer_client, link, loaded, settings):
    """A prefix matching few keys: the second SCAN looks as far as the budget allows, and the
    page, with fewer rows than it holds, says how far it looked and offers to continue."""
    settings.KEYSPACE_SCAN_BUDGET = 2000  # less than the keyspace: the scan is not done
    for i in range(40):
        loaded.set(f"lucia:rare:{i}".encode(), b"1", ex=600)
    link.rtt_ms = PAGE_RTT_MS
    url = reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:rare:"
    response, seen = _get_twice(viewer_client, link, url)
    result = response.context["result"]
    assert result.calls == 2 and result.examined == 2000 and not result.done
    assert {row.key for row in result.rows} <= {f"lucia:rare:{i}".encode() for i in range(40)}
    body = response.content.decode()
    assert f"examined ~2,000 of ~{loaded.dbsize():,} keys, {len(result.rows)} matched" in body
    assert 'data-testid="continue"' in body
    assert seen.counts.round_trips == 3 and seen.counts.connections == 0, _shown(seen)


@pytest.mark.parametrize("kind", ["string", "hash"])
def test_it_answers_a_keys_detail_in_at_most_three_round_trips(viewer_client, link, loaded, lucia, kind):
    key = b"lucia:focus:rtt"  # not a sensitive namespace: the viewer is shown the value
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


# --- jobs at 80 ms ------------------------------------------------------------------------------------
def _scan_counts(seen):
    """The COUNT of each SCAN the client sent, in order (a page's SCAN leads its round trip)."""
    counts = []
    for _number, data in seen.bursts():
        match = re.match(rb"\*4\r\n\$4\r\nSCAN\r\n\$\d+\r\n\d+\r\n\$5\r\nCOUNT\r\n\$\d+\r\n(\d+)\r\n", data)
        if match:
            counts.append(int(match.group(1)))
    return counts


def _page_sizes(client, counts):
    """The keys of each SCAN call from cursor 0 to the end, the i-th asking COUNT counts[i]
    (the last, after)."""
    cursor, sizes = 0, []
    while True:
        cursor, keys = client.scan(cursor=cursor, count=counts[min(len(sizes), len(counts) - 1)])
        sizes.append(len(keys))
        if cursor == 0:
            return sizes


def _pages_of(client, counts):
    """SCAN calls from cursor 0 to the end, the i-th asking COUNT counts[i] (the last, after)."""
    return len(_page_sizes(client, counts))


@pytest.fixture
def fixed_pages(settings):
    """Pages of REVIEW_SCAN_COUNT keys per script call whatever the machine's load: the batch
    sizer shrinks a call's batch where Redis is slow (`test_review_stream`), which would make
    the number of pages depend on the load."""
    settings.SCRIPT_BUDGET_MS = 10_000
    return settings.REVIEW_SCAN_COUNT


def test_it_reviews_a_sample_of_2000_keys_in_three_round_trips(link, loaded, lucia):
    review.review_database(database=lucia, sample=2000)  # connected, the scripts loaded
    _fresh_process(lucia)
    link.rtt_ms = RTT_MS
    before = loaded.info("commandstats")
    with link.measure() as seen:
        result = review.review_database(database=lucia, sample=2000)
    after = loaded.info("commandstats")
    assert result.sampled and result.status == "succeeded" and 1900 <= result.keys_scanned <= 2000
    assert result.billed_commands == billed_delta(before, after)
    # The cluster probe with DBSIZE, the random SCANs together, the sample's metadata.
    assert seen.counts.round_trips == 3 and seen.counts.connections == 0, _shown(seen)


def test_it_reviews_exactly_in_one_round_trip_per_page_and_three_more(link, loaded, lucia, fixed_pages, monkeypatch):
    """One script call per round trip (a link that costs less than a batch's work in Redis)."""
    monkeypatch.setattr(stream.BatchSizer, "MAX_CALLS_PER_TRIP", 1)
    review.review_database(database=lucia, sample=2000)
    _fresh_process(lucia)
    link.rtt_ms = RTT_MS
    pages = _pages_of(loaded, [fixed_pages])
    before = loaded.info("commandstats")
    with link.measure() as seen:
        result = review.review_database(database=lucia)
    after = loaded.info("commandstats")  # before the test's own DBSIZE
    assert result.status == "succeeded" and result.keys_scanned == loaded.dbsize()
    assert result.billed_commands == billed_delta(before, after)
    scans = calls(after, "scan") - calls(before, "scan")
    assert _scan_counts(seen) == [fixed_pages] * pages and scans == result.run.batches == pages
    # The probe with DBSIZE, the batch sizer's first reading, the first SCAN alone; then each
    # page's metadata with the next SCAN (the last page's with DBSIZE).
    assert seen.counts.round_trips == pages + 3 and seen.counts.connections == 0, _shown(seen)


def test_it_carries_several_script_calls_per_round_trip_on_a_slow_link(link, loaded, lucia, fixed_pages):
    review.review_database(database=lucia, sample=2000)
    link.rtt_ms = RTT_MS
    before = loaded.info("commandstats")
    with link.measure() as seen:
        result = review.review_database(database=lucia)
    after = loaded.info("commandstats")  # before the test's own DBSIZE
    assert result.status == "succeeded" and result.keys_scanned == loaded.dbsize()
    assert result.billed_commands == billed_delta(before, after)
    # The first two SCANs ask one call's worth (the second leaves with the first page's
    # metadata, before the sizer has timed a call); then pages of four calls' worth: 80 ms
    # is more than four calls of 1,000 keys cost Redis.
    counts = _scan_counts(seen)
    pages = _pages_of(loaded, [fixed_pages, fixed_pages, 4 * fixed_pages])
    assert counts == [fixed_pages] * 2 + [4 * fixed_pages] * (pages - 2), counts
    scans, scripts = calls(after, "scan") - calls(before, "scan"), calls(after, "evalsha_ro") - calls(before, "evalsha_ro")
    assert scans == result.run.batches == pages and scripts > pages
    # DBSIZE (this process knows the server), the sizer's first reading, the first SCAN; then
    # a round trip per page: its script calls with the next page's SCAN.
    assert seen.counts.round_trips == pages + 3 and seen.counts.connections == 0, _shown(seen)


def test_it_previews_and_purges_a_prefix_in_one_round_trip_per_page(link, loaded, lucia, operator, settings):
    settings.PURGE_CHECKPOINT_SECONDS = 3600
    pages = _pages_of(loaded, [settings.PURGE_BATCH_SIZE])
    purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:focus:", action="delete",
                        actor=operator)  # connected
    _fresh_process(lucia)
    link.rtt_ms = RTT_MS
    before = loaded.info("commandstats")
    with link.measure() as previewing:
        preview = purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:session:", action="delete",
                                      actor=operator)
    after = loaded.info("commandstats")
    assert preview.matched == sum(1 for _ in loaded.scan_iter(match=b"lucia:session:*", count=1000))
    assert preview.billed == billed_delta(before, after)
    assert calls(after, "scan") - calls(before, "scan") == pages
    assert previewing.counts.round_trips == pages + PREVIEW_MORE, _shown(previewing)
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
    assert calls(after, "scan") - calls(before, "scan") == pages
    # The first SCAN with the marker, a round trip per page, the marker's DEL.
    assert purging.counts.round_trips == pages + PURGE_MORE, _shown(purging)


# --- exactness on the slow-link path ---------------------------------------------------------------
class Crash(Exception):
    """Stands in for a worker killed at a fault point."""


def _killed_at_checkpoint(nth):
    seen = []

    def fault(name, node):
        if name == "checkpointed":
            seen.append(node)
            if len(seen) == nth:
                raise Crash

    return fault


@pytest.fixture
def noro(link, lucia, redis_server, monkeypatch):
    """`lucia` through the link as a user that may not run read-only scripts: refused before
    execution, not billed; the review falls back to EVALSHA."""
    admin = redis.Redis(port=redis_server.port)
    admin.execute_command("ACL", "SETUSER", "noro", "reset", "on", ">pw-for-tests", "~*", "&*", "+@all",
                          "-evalsha_ro", "-eval_ro")
    monkeypatch.setenv("LUCIA_NORO_URL", f"redis://noro:pw-for-tests@127.0.0.1:{link.port}/0")
    type(lucia).objects.filter(pk=lucia.pk).update(url_env="LUCIA_NORO_URL")
    lucia.refresh_from_db()
    keyspace.forget_clients()
    yield
    admin.execute_command("ACL", "DELUSER", "noro")
    admin.close()


@pytest.mark.parametrize("way", ["resumed after a kill", "NOSCRIPT", "ACL refusal"])
def test_it_bills_a_slow_link_review_exactly_however_it_ends(link, loaded, lucia, fixed_pages, request, way):
    """Pages of four script calls of 250 keys, the next round trip on its way on a helper
    thread while a page is counted: a checkpoint has nothing in flight (a kill there loses
    nothing), and the run's billed commands equal the commandstats delta of every attempt."""
    reference = review.review_database(database=lucia)
    if way == "ACL refusal":
        request.getfixturevalue("noro")
    link.rtt_ms = RTT_MS
    if way == "NOSCRIPT":
        loaded.script_flush()
    before = loaded.info("commandstats")
    if way == "resumed after a kill":
        with pytest.raises(Crash):
            review.review_database(database=lucia, batch=250, checkpoint_every=2, fault=_killed_at_checkpoint(1))
        run = ReviewRun.objects.get(status=ReviewRun.RUNNING)
        part = run.node_runs.get()
        assert part.batches == 2 and part.cursor != "0"
        run.node_runs.update(heartbeat_at=None)
        ReviewRun.objects.filter(pk=run.pk).update(heartbeat_at=None)
        result = review.review_database(database=lucia, run=run, checkpoint_every=2)
    else:
        result = review.review_database(database=lucia, batch=250)
    after = loaded.info("commandstats")
    assert result.run.billed_commands == billed_delta(before, after), way
    scripts = calls(after, "evalsha", "evalsha_ro") - calls(before, "evalsha", "evalsha_ro")
    assert result.status == ReviewRun.SUCCEEDED and result.keys_scanned == reference.keys_scanned == loaded.dbsize()
    # (the TTL histograms move with the clock between the two reviews: the keys and findings do not)
    assert result.findings == reference.findings and _keys_by_namespace(result) == _keys_by_namespace(reference)
    assert scripts > result.run.batches  # several script calls per round trip


def _keys_by_namespace(result):
    return {row["prefix"]: row["keys"] for row in result.namespaces}
