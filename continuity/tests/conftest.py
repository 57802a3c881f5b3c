"""Fixtures of the continuity tests (the shared ones, servers and personas, are in the root conftest.py)."""

import math

import pytest

from continuity.keyspace import stream


@pytest.fixture
def steady_batches(monkeypatch, settings):
    """The review's batches, pinned: every SCAN asks for the review's `batch` keys and a round
    trip carries one script call, whatever the machine's load. Returns `pin(calls)`, which asks
    for `calls` script calls per round trip instead (a slow link's pages, from the second batch).

    `stream.BatchSizer` adapts a review to timings: the scripts' usec per key (INFO
    commandstats) against SCRIPT_BUDGET_MS, and the least INFO round trip against SLOW_LINK_S.
    On a loaded machine a loopback round trip can pass 3 ms, or a script's time per key the
    budget, in one run and not in the next: the review then pages differently (SCAN from the
    client, several calls per round trip, or smaller batches). Its counts stay exact, each equal
    to INFO commandstats, but a test that compares two runs, or that expects one client-side
    command list or a number of batches, would depend on the load. Tests of the sizer itself
    (`test_review_stream`, `test_round_trips`) do not use this."""

    def pin(calls=1):
        settings.SCRIPT_BUDGET_MS = 10_000  # no batch gets near it: COUNT stays the review's batch
        monkeypatch.setattr(stream, "calls_per_trip", lambda *_args, **_kwargs: calls)

    pin()
    return pin
