"""The key browser filtered by finding: within the same scan budget per request, saying how
many keys it examined and read, continued with its cursor until every offender was seen —
on a real redis-server and on the real 3-primary cluster."""

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from continuity.tests.test_cluster import cluster_lucia  # noqa: F401 — the fixture

NO_TTL = {b"lucia:focus:nottl:%d" % i for i in range(7)}
ABOVE = {b"lucia:focus:long:%d" % i for i in range(2)}
OVERSIZED = {b"lucia:action:big:1"}
UNKNOWN = {b"lucia:legacy:1"}


def browse_url(**params):
    return reverse("continuity:browse", args=["lucia"]) + "?" + urlencode(params)


def fill(client, *, cluster=False):
    keys = {b"lucia:focus:%05d" % i: b"v" for i in range(3000)}
    writes = {**keys, **{key: b"v" for key in NO_TTL | ABOVE | UNKNOWN}, **{key: b"x" * 40_000 for key in OVERSIZED}}
    if cluster:
        client.mset_nonatomic(writes)
    else:
        client.mset(writes)
    pipe = client.pipeline(transaction=False)  # fine keys expire in 10 minutes
    for key in list(keys) + list(OVERSIZED):
        pipe.expire(key, 600)
    for key in ABOVE:
        pipe.expire(key, 200_000)  # above focus's 24 h maximum
    pipe.execute()
    return len(writes)


def follow(client, **params):
    """Every page of a filtered browse, from the first request to "done"."""
    pages, state = [], {}
    while True:
        response = client.get(browse_url(**params, **state))
        assert response.status_code == 200
        result = response.context["result"]
        pages.append((response, result))
        if result.done:
            return pages
        assert len(pages) < 100, "the scan never finished"
        state = {"cursor": result.cursor, "examined": result.examined_total, "matched": result.matched_total,
                 "read": result.read_total}


def rows(pages):
    return [row.key for _, result in pages for row in result.rows]


@pytest.mark.parametrize("finding,expected", [
    ("no_ttl", NO_TTL), ("ttl_above_max", ABOVE), ("oversized", OVERSIZED), ("unknown_namespace", UNKNOWN),
    ("any", NO_TTL | ABOVE | OVERSIZED | UNKNOWN),
])
def test_it_lists_only_the_keys_with_the_finding_within_the_budget(viewer_client, monitored, lucia, settings,
                                                                   finding, expected):
    settings.KEYSPACE_SCAN_BUDGET = 1000
    total = fill(monitored)
    pages = follow(viewer_client, prefix="lucia:", finding=finding)
    found = rows(pages)
    assert sorted(found) == sorted(expected)  # each exactly once
    assert all(result.examined <= 1000 for _, result in pages)  # the same budget per request
    assert len(pages) >= 3  # 3,011 keys do not fit one budget
    last = pages[-1][1]
    assert last.read_total == total
    body = pages[-1][0].content.decode()
    assert f'data-testid="scan-read">{total:,}</span> read' in body
    assert f'data-testid="scan-matched">{len(expected)}</span> with the finding' in body


def test_the_filter_stops_at_a_full_page(viewer_client, monitored, lucia, settings):
    settings.KEYSPACE_PAGE_SIZE = 3
    fill(monitored)
    response = viewer_client.get(browse_url(prefix="lucia:focus:", finding="no_ttl"))
    result = response.context["result"]
    assert 3 <= len(result.rows) <= 7 and not result.done  # the page is full before the budget
    assert {row.key for row in result.rows} <= NO_TTL
    assert all(row.status.code == "no_ttl" for row in result.rows)
    assert 'data-testid="continue"' in response.content.decode()


def test_it_filters_across_a_clusters_primaries(viewer_client, cluster_lucia, cluster_keys, settings):
    settings.KEYSPACE_SCAN_BUDGET = 800
    fill(cluster_keys, cluster=True)
    pages = follow(viewer_client, prefix="lucia:", finding="any")
    assert sorted(rows(pages)) == sorted(NO_TTL | ABOVE | OVERSIZED | UNKNOWN)
    assert pages[-1][1].read_total == 3011 and all(result.examined <= 800 for _, result in pages)
