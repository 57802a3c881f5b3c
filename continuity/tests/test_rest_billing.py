"""Over Upstash's REST API a job bills exactly what it bills over TCP: the same job on the
same keyspace (odd keys included: not UTF-8, glob characters, HTML, a 300 KB value) is run
once over each transport, and the redis-server behind the bridge counts the same commands
(`INFO commandstats`, free ones left out), each equal to the run's own `billed_commands`."""

import pytest
import redis

from continuity import demo
from continuity.billing import FREE
from continuity.keyspace import rest
from continuity.models import PurgeRun
from continuity.operations import purge, review
from dashboard.models import RedisDatabase

ODD = [b"lucia:session:\xff\xfe\x00bin", b"lucia:session:a*b?[c]", b"lucia:session:<script>alert(1)</script>",
       b"lucia:session:huge", b"lucia:rate:\x80\x81", b"lucia:legacy:\xc3("]


def fill(monitored):
    """The same keyspace every time, in the same order (so SCAN walks it the same way)."""
    monitored.flushdb()
    demo.write_keyspace(monitored, list(demo.lucia_keyspace(1200, seed=31, violation_rate=0.03)))
    for key in ODD:
        monitored.set(key, b"x" * 300_000 if key.endswith(b"huge") else b"\xff v")
    monitored.expire(ODD[1], 40 * 86400)  # above every maximum
    for body in set(rest._bodies.values()):  # a warm script cache on both runs
        monitored.script_load(body)


def billed(monitored, before):
    total = 0
    for name, row in monitored.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        if command.split("|")[0] not in FREE:
            total += row["calls"] - before.get(name, {}).get("calls", 0)
    return total


def review_job(database, operator, strategy):
    result = review.review_database(database=database, batch=200, strategy=strategy)
    assert result.status == "succeeded"
    return result.billed_commands, (result.keys_scanned, result.findings, result.foreign_keys)


def preview_job(database, operator):
    preview = purge.preview_purge(database=database, kind="prefix", value=b"lucia:session:", action="expire",
                                  actor=operator)
    return preview.run.preview_billed_commands, (preview.matched, preview.actionable)


def purge_job(database, operator, kind):
    reviewed = 0
    if kind == "finding":
        found = review.review_database(database=database, batch=200)
        run_id, reviewed = found.run.pk, found.billed_commands
        preview = purge.preview_purge(database=database, kind="finding", review_id=run_id, finding="no_ttl",
                                      actor=operator)
    else:
        preview = purge.preview_purge(database=database, kind="prefix", value=b"lucia:session:", action="delete",
                                      actor=operator)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="r", actor=operator,
                              source="cli")
    result = purge.execute_purge(run_id=run.pk, source="cli")
    run = PurgeRun.objects.get(pk=run.pk)
    assert result.done == result.matched > 0
    return reviewed + run.billed_commands + run.preview_billed_commands, (result.matched, result.done, result.skipped)


JOBS = {
    "exact review, scan script": lambda db, op: review_job(db, op, "scan_script"),
    "exact review, declared keys": lambda db, op: review_job(db, op, "declared_keys"),
    "preview": preview_job,
    "prefix purge": lambda db, op: purge_job(db, op, "prefix"),
    "finding purge": lambda db, op: purge_job(db, op, "finding"),
}


REVIEWING = ("exact review, scan script", "exact review, declared keys", "finding purge")
SHAPES = [pytest.param(job, calls, id=f"{job}, {calls} call(s) a trip")
          for job in JOBS for calls in ((1, 4) if job in REVIEWING else (1,))]


@pytest.mark.parametrize("job,calls_per_trip", SHAPES)
def test_a_job_bills_the_same_commands_over_rest_as_over_tcp(job, calls_per_trip, monitored, lucia, operator,
                                                            rest_bridge, monkeypatch, steady_batches):
    """The same job over each transport, with the same batches: the review's batch sizer would
    otherwise choose them from timings (a loaded machine's REST round trip can pass 3 ms where
    TCP's did not), and a review with other pages bills other commands on either transport.
    Both shapes the sizer gives a review are held: one script call per round trip, and four."""
    from conftest import use_rest

    steady_batches(calls_per_trip)
    outcomes = {}
    for transport in ("tcp", "rest"):
        if transport == "rest":
            use_rest(monkeypatch, rest_bridge)
        fill(monitored)
        database = RedisDatabase.objects.get(pk=lucia.pk)
        before = monitored.info("commandstats")
        counted, figures = JOBS[job](database, operator)
        outcomes[transport] = (billed(monitored, before), counted, figures)
    (tcp_redis, tcp_run, tcp_figures), (rest_redis, rest_run, rest_figures) = outcomes["tcp"], outcomes["rest"]
    assert tcp_run == tcp_redis and rest_run == rest_redis  # each run counts what Redis executed
    assert rest_redis == tcp_redis > 0  # and REST bills what TCP bills
    assert rest_figures == tcp_figures


def test_the_odd_keys_are_reviewed_and_purged_exactly_over_rest(monitored, lucia, operator, over_rest):
    fill(monitored)
    result = review.review_database(database=lucia, batch=200)
    assert result.status == "succeeded"
    client = redis.Redis(port=monitored.connection_pool.connection_kwargs["port"])
    try:
        sessions = {key for key in client.scan_iter(match=b"lucia:session:*", count=1000)}
        preview = purge.preview_purge(database=lucia, kind="prefix", value=b"lucia:session:", action="delete",
                                      actor=operator)
        assert preview.matched == len(sessions)
        run = purge.confirm_purge(run=preview.run, confirmation="lucia:session:", reason="r", actor=operator,
                                  source="cli")
        outcome = purge.execute_purge(run_id=run.pk, source="cli")
        assert outcome.done == len(sessions) and not any(client.exists(key) for key in ODD[:4])
        assert client.exists(ODD[4]) and client.exists(ODD[5])  # outside the prefix: untouched
    finally:
        client.close()
