"""Round trips over Upstash's REST API (issue 17, item 3): the jobs of `test_round_trips`
with the delay proxy in front of the local REST endpoint's HTTP port instead of the
redis-server, `lucia` reached by its REST pair only. A round trip is then one HTTP request:
`RestConnection` turns what the engine sends together (a pipeline: a page's script calls
with the next page's SCAN) into one `/pipeline` request, on a kept-alive connection.

Counted, never timed, on a link of 80 ms (see `test_round_trips`): each job takes the round
trips it takes over TCP (a preview one fewer: no cluster probe), every round trip is one
request the bridge answered, and none opens a connection (kept alive: `connections` 0; a new
process's client opens one, and sends no command of its own before the job's).
"""

import types

import pytest

from bench.proxy import DelayProxy
from conftest import REST_TOKEN, use_rest
from continuity import demo, keyspace
from continuity.keyspace import stream
from continuity.keyspace import purge as redis_purge
from continuity.operations import purge, review
from continuity.tests.test_review import billed_delta, calls
from continuity.tests.test_round_trips import PURGE_MORE, _fresh_process, _page_sizes, _pages_of, _shown

RTT_MS = 80
# A preview over REST: the instant estimate's DBSIZE, then a round trip per page. No cluster
# probe: a REST endpoint is one logical primary (`RestClient.topology`), where TCP asks
# INFO cluster (`test_round_trips.PREVIEW_MORE` is 2).
PREVIEW_MORE = 1


@pytest.fixture
def rest_link(rest_bridge, lucia, monkeypatch):
    """`lucia` over the REST API only (its URL variable unset), the delay proxy in front of the
    local REST endpoint (no delay until a test sets one)."""
    with DelayProxy(rest_bridge.server.server_address[1], keep=2000) as proxy:
        use_rest(monkeypatch, types.SimpleNamespace(url=f"http://127.0.0.1:{proxy.port}"), REST_TOKEN)
        yield proxy
        keyspace.forget_clients()


@pytest.fixture
def loaded(monitored):
    """5,000 keys of the demo keyspace, written directly (not through the proxy)."""
    demo.write_keyspace(monitored, demo.lucia_keyspace(5000, seed=17))
    return monitored


@pytest.fixture
def fixed_pages(settings):
    """Pages of REVIEW_SCAN_COUNT keys per script call whatever the machine's load (see
    `test_round_trips.fixed_pages`)."""
    settings.SCRIPT_BUDGET_MS = 10_000
    return settings.REVIEW_SCAN_COUNT


def _requests(bridge, seen, before):
    """Every round trip is one HTTP request that the bridge answered, on a kept-alive connection."""
    assert seen.counts.connections == 0, _shown(seen)
    assert bridge.requests - before == seen.counts.round_trips, _shown(seen)
    return [data.split(b" ", 2)[1] for _number, data in seen.bursts()]


def test_it_reviews_a_sample_of_2000_keys_in_three_requests(rest_link, rest_bridge, loaded, lucia):
    review.review_database(database=lucia, sample=2000)  # connected
    _fresh_process(lucia)
    rest_link.rtt_ms = RTT_MS
    before, requests = loaded.info("commandstats"), rest_bridge.requests
    with rest_link.measure() as seen:
        result = review.review_database(database=lucia, sample=2000)
    after = loaded.info("commandstats")
    assert result.sampled and result.status == "succeeded" and 1900 <= result.keys_scanned <= 2000
    assert result.billed_commands == billed_delta(before, after)
    # DBSIZE, the random SCANs together, the sample's metadata: one request each.
    assert _requests(rest_bridge, seen, requests) == [b"/", b"/pipeline", b"/pipeline"]


def test_it_reviews_a_sample_in_a_new_process_with_one_connection_more(rest_link, rest_bridge, loaded, lucia):
    """A new process's client: one TCP connection (its handshake), and no command of its own:
    over REST there is no PING, HELLO or AUTH (over TCP, two round trips more)."""
    review.review_database(database=lucia, sample=2000)  # the bridge's own Redis connections warm
    keyspace.forget_clients()
    rest_link.rtt_ms = RTT_MS
    requests = rest_bridge.requests
    with rest_link.measure() as seen:
        result = review.review_database(database=lucia, sample=2000)
    assert result.status == "succeeded" and 1900 <= result.keys_scanned <= 2000
    assert seen.counts.round_trips == rest_bridge.requests - requests == 3, _shown(seen)
    assert seen.counts.connections == 1


def test_it_reviews_exactly_in_one_request_per_page_and_three_more(rest_link, rest_bridge, loaded, lucia,
                                                                     fixed_pages, monkeypatch):
    """One script call per round trip: each page's metadata travels with the next page's
    SCAN, in one /pipeline request."""
    monkeypatch.setattr(stream.BatchSizer, "MAX_CALLS_PER_TRIP", 1)
    review.review_database(database=lucia, sample=2000)
    _fresh_process(lucia)
    rest_link.rtt_ms = RTT_MS
    sizes = _page_sizes(loaded, [fixed_pages])
    pages = len(sizes)
    before, requests = loaded.info("commandstats"), rest_bridge.requests
    with rest_link.measure() as seen:
        result = review.review_database(database=lucia)
    after = loaded.info("commandstats")
    assert result.status == "succeeded" and result.keys_scanned == loaded.dbsize()
    assert result.billed_commands == billed_delta(before, after)
    assert calls(after, "scan") - calls(before, "scan") == result.run.batches == pages
    # DBSIZE, the batch sizer's first reading (INFO), the first SCAN; then a page's metadata
    # with the next SCAN (the last page's with DBSIZE): as over TCP. Where SCAN's last page
    # came back empty (it can), DBSIZE has no metadata to travel with: one command, `/`.
    paths = _requests(rest_bridge, seen, requests)
    assert len(paths) == pages + 3, _shown(seen)
    last = [b"/"] if sizes[-1] == 0 else [b"/pipeline"]
    assert paths[:3] == [b"/", b"/", b"/"] and paths[3:] == [b"/pipeline"] * (pages - 1) + last, paths


def test_it_carries_several_script_calls_per_request_on_a_slow_link(rest_link, rest_bridge, loaded, lucia,
                                                                     fixed_pages):
    review.review_database(database=lucia, sample=2000)
    rest_link.rtt_ms = RTT_MS
    before, requests = loaded.info("commandstats"), rest_bridge.requests
    with rest_link.measure() as seen:
        result = review.review_database(database=lucia)
    after = loaded.info("commandstats")
    assert result.status == "succeeded" and result.keys_scanned == loaded.dbsize()
    assert result.billed_commands == billed_delta(before, after)
    # Pages of four calls' worth after the first two (`test_round_trips`), each page one request.
    pages = _pages_of(loaded, [fixed_pages, fixed_pages, 4 * fixed_pages])
    scans, scripts = calls(after, "scan") - calls(before, "scan"), calls(after, "evalsha_ro") - calls(before, "evalsha_ro")
    assert scans == result.run.batches == pages and scripts > pages
    assert len(_requests(rest_bridge, seen, requests)) == pages + 3, _shown(seen)


def test_it_previews_and_purges_a_prefix_in_one_request_per_page(rest_link, rest_bridge, loaded, lucia, operator,
                                                                 settings):
    settings.PURGE_CHECKPOINT_SECONDS = 3600
    pages = _pages_of(loaded, [settings.PURGE_BATCH_SIZE])
    purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:focus:", action="delete",
                        actor=operator)  # connected
    _fresh_process(lucia)
    rest_link.rtt_ms = RTT_MS
    before, requests = loaded.info("commandstats"), rest_bridge.requests
    with rest_link.measure() as previewing:
        preview = purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:session:", action="delete",
                                      actor=operator)
    after = loaded.info("commandstats")
    assert preview.matched == sum(1 for _ in loaded.scan_iter(match=b"lucia:session:*", count=1000))
    assert preview.billed == billed_delta(before, after)
    assert calls(after, "scan") - calls(before, "scan") == pages
    assert len(_requests(rest_bridge, previewing, requests)) == pages + PREVIEW_MORE, _shown(previewing)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="round trips",
                              actor=operator, source="cli")
    loaded.script_load(redis_purge.PURGE_SCRIPT.body)  # a server new to it: one more round trip, once
    before, requests = loaded.info("commandstats"), rest_bridge.requests
    with rest_link.measure() as purging:
        result = purge.execute_purge(run_id=run.pk, source="cli")
    after = loaded.info("commandstats")
    run.refresh_from_db()
    assert result.status == "succeeded" and result.done == preview.matched
    assert run.billed_commands == billed_delta(before, after)
    assert calls(after, "scan") - calls(before, "scan") == pages
    # The first SCAN with the marker, a round trip per page, the marker's DEL: as over TCP.
    assert len(_requests(rest_bridge, purging, requests)) == pages + PURGE_MORE, _shown(purging)
