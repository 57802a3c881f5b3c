"""`DEMO_REST=1 make run`: with REDIS_URL unset and only the REST pair set (the local REST
endpoint standing in for Upstash), the demo's steps work: the demo keyspace is written through
the REST API, the first sampled review runs, and the store adapter writes through it."""

import io
import os

from django.core.management import call_command

from continuity.store import ContinuityStore


def test_the_demo_runs_over_rest_only(lucia, over_rest, monitored):
    assert "REDIS_URL" not in os.environ and os.environ["UPSTASH_REDIS_REST_URL"] == over_rest.url
    before = over_rest.requests
    call_command("load_demo_keyspace", "--keys", "400", stdout=io.StringIO())
    assert monitored.dbsize() >= 400 and over_rest.requests > before
    out = io.StringIO()
    call_command("ttl_review", "--sample", "200", stdout=out, stderr=io.StringIO())
    assert "lucia: sampled" in out.getvalue()
    store = ContinuityStore(lucia)
    result = store.put_key(b"lucia:session:demo-writer", b"v", ttl_seconds=1200)
    assert not store.degraded and result is not None
    assert 0 < monitored.pttl(b"lucia:session:demo-writer") <= 1_200_000
