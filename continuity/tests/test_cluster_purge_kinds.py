"""Finding purges and the policy purge across the primaries of a real local 3-primary
Redis Cluster (engine, page, command line, scheduled task), the per-node billing summed and
held to each node's INFO commandstats, and the estimates held to what the purge bills."""

import io
import json
import re

import pytest
import redis
from django.core.management import call_command
from django.urls import reverse

from continuity.models import Namespace, PurgeRun, PurgeTargetKey
from continuity.operations import purge, review
from continuity.tests.test_cluster import cluster_lucia  # noqa: F401 — the fixture
from continuity.tests.test_cluster_purge import per_node
from continuity.tests.test_review import billed_delta
from dashboard.models import AuditEntry

NO_TTL = [f"lucia:session:nottl:{i}".encode() for i in range(240)]
SESSION_OK = [f"lucia:session:ok:{i}".encode() for i in range(60)]
TOO_LONG = [f"lucia:focus:long:{i}".encode() for i in range(90)]
FOCUS_OK = [f"lucia:focus:ok:{i}".encode() for i in range(30)]
ACTION_NOTTL = [f"lucia:action:nottl:{i}".encode() for i in range(25)]
ALL = NO_TTL + SESSION_OK + TOO_LONG + FOCUS_OK + ACTION_NOTTL


def plant(client):
    """The offenders and the keys that must survive, written through a cluster client so
    that they spread over the primaries."""
    client.mset_nonatomic(dict.fromkeys(NO_TTL + ACTION_NOTTL, b"v"))
    pipe = client.pipeline()
    for key in SESSION_OK + FOCUS_OK:
        pipe.set(key, b"v", ex=100)
    for key in TOO_LONG:
        pipe.set(key, b"v", ex=200_000)  # above focus's 24 h maximum
    pipe.execute()


def present(ports):
    """Every key on the cluster, read node by node."""
    return {key for keys in per_node(ports, "*").values() for key in keys}


def node_of(ports, keys):
    """{host:port: how many of `keys` live there}."""
    keys, out = set(keys), {}
    for address, found in per_node(ports, "*").items():
        out[address] = len(keys & set(found))
    return out


def stats(ports):
    out = {}
    for port in ports:
        with redis.Redis(port=port) as node:
            out[f"127.0.0.1:{port}"] = node.info("commandstats")
    return out


def flush_scripts(ports):
    for port in ports:
        with redis.Redis(port=port) as node:
            node.script_flush()


@pytest.fixture
def reviewed_cluster(cluster_lucia, cluster_keys, redis_cluster):  # noqa: F811
    plant(cluster_keys)
    assert all(count > 50 for count in node_of(redis_cluster.ports, NO_TTL).values())  # on every primary
    run = review.review_database(database=cluster_lucia).run
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert (run.findings["no_ttl"], run.findings["ttl_above_max"]) == (len(NO_TTL + ACTION_NOTTL), len(TOO_LONG))
    return run


def test_it_purges_a_finding_on_every_primary_billing_each_node_exactly(
        cluster_lucia, reviewed_cluster, redis_cluster, operator):  # noqa: F811
    ports = redis_cluster.ports
    expected_nodes = node_of(ports, NO_TTL + ACTION_NOTTL)
    preview = purge.preview_purge(action="delete",
                                  database=cluster_lucia, kind="finding", review_id=reviewed_cluster.pk,
                                  finding="no_ttl", actor=operator, batch_size=100)
    assert (preview.matched, preview.actionable) == (265, 265)
    assert preview.namespaces == {"lucia:session:": 240, "lucia:action:": 25}
    preview.run.refresh_from_db()
    assert preview.run.preview_nodes == expected_nodes
    assert PurgeTargetKey.objects.filter(run=preview.run).count() == 265
    cluster_keys = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    cluster_keys.expire(NO_TTL[0], 30)  # repaired between preview and execution: re-checked, skipped
    cluster_keys.close()
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="tidy up",
                              actor=operator, source="cli")
    expected_done = node_of(ports, NO_TTL[1:] + ACTION_NOTTL)
    flush_scripts(ports)  # each primary loads the script once: deterministic
    before = stats(ports)
    result = purge.execute_purge(run_id=run.pk)
    after = stats(ports)
    run.refresh_from_db()
    assert (result.status, run.matched, run.done, run.skipped) == ("succeeded", 265, 264, 1)
    assert present(ports) == set(ALL) - set(NO_TTL[1:] + ACTION_NOTTL)  # nothing else touched
    # Billed per node: each node's figure is that node's commandstats delta, and they sum to the run's.
    billed = {address: billed_delta(before[address], after[address]) for address in before}
    assert {address: row["billed"] for address, row in run.node_stats.items()} == billed
    assert run.billed_commands == sum(billed.values()) > 265
    assert {address: row["done"] for address, row in run.node_stats.items()} == expected_done
    assert sum(row["matched"] for row in run.node_stats.values()) == run.matched
    # The preview's estimate counts one script call per slot group, no marker, the checks;
    # what it cannot know: each primary loading the script once (NOSCRIPT, SCRIPT LOAD), and
    # that the key repaired meanwhile may be alone in its slot group (then no UNLINK there).
    assert 0 <= run.estimated_billed_commands + 2 * len(ports) - run.billed_commands <= 1
    assert AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).count() == 1
    assert not PurgeTargetKey.objects.filter(run=run).exists()


def test_it_purges_a_finding_from_the_command_line(cluster_lucia, reviewed_cluster, redis_cluster,
                                                  operator):  # noqa: F811
    out = io.StringIO()
    call_command("purge", "--action", "delete",
                 "--database", "lucia", "--review", str(reviewed_cluster.pk), "--finding", "ttl_above_max",
                 "--action", "expire", "--reason", "too long", "--yes", "--json", "--as", "otto", stdout=out)
    data = json.loads(out.getvalue())
    assert (data["status"], data["matched"], data["expired"], data["skipped"]) == ("succeeded", 90, 90, 0)
    run = PurgeRun.objects.get(pk=data["run"])
    assert data["nodes"] == run.node_stats and len(data["nodes"]) == 3
    assert sum(row["done"] for row in run.node_stats.values()) == 90
    assert sum(row["billed"] for row in run.node_stats.values()) == data["billed_commands"]
    assert sum(1 for row in run.node_stats.values() if row["done"]) == 3
    with redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0]) as client:
        ttls = [client.ttl(key) for key in TOO_LONG]
        assert all(86_000 < ttl <= 86_400 for ttl in ttls)
        assert all(client.ttl(key) == -1 for key in NO_TTL)  # another finding: untouched
    assert present(redis_cluster.ports) == set(ALL)


def test_it_previews_confirms_and_runs_a_finding_purge_from_the_page(
        cluster_lucia, reviewed_cluster, redis_cluster, operator_client, viewer_client,  # noqa: F811
        django_capture_on_commit_callbacks):
    from dashboard.celery import app

    response = operator_client.post(reverse("continuity:purge_new"), {
        "database": "lucia", "target_kind": "finding", "review": reviewed_cluster.pk, "finding": "no_ttl",
        "action": "delete"})
    run = PurgeRun.objects.get()
    assert response.status_code == 302 and run.status == "previewing"
    purge.run_preview(run_id=run.pk)  # as the worker would
    page = viewer_client.get(run.get_absolute_url()).content.decode()
    assert re.search(r'data-testid="preview-matched">265<', page)
    for address, count in node_of(redis_cluster.ports, NO_TTL + ACTION_NOTTL).items():
        assert f'<td class="key">{address}</td><td class="has-text-right">{count}</td>' in page
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                            {"confirmation": f"review {reviewed_cluster.pk} no_ttl",
                                             "reason": "cleanup"})
    finally:
        app.conf.task_always_eager = False
    assert response.status_code == 302
    run.refresh_from_db()
    assert (run.status, run.matched, run.done, run.skipped) == ("succeeded", 265, 265, 0)
    assert present(redis_cluster.ports) == set(ALL) - set(NO_TTL + ACTION_NOTTL)
    page = viewer_client.get(run.get_absolute_url()).content.decode()
    rows = re.findall(r'<tr data-testid="purge-node"><td class="key">([^<]+)</td>((?:<td[^>]*>[^<]*</td>)+)</tr>',
                      page)
    assert len(rows) == 3
    for address, cells in rows:
        figures = re.findall(r">([^<]*)</td>", cells)
        row = run.node_stats[address]
        assert figures[:4] == [str(row[k]) for k in ("matched", "done", "skipped", "billed")]
    assert f'data-testid="purge-nodes-billed">{run.billed_commands}<' in page
    assert "Keys scanned" not in page  # a finding purge scans nothing: its keys come from the stored list
    assert "re-checked when its batch runs and skipped unless: still without TTL<" in page
    assert AuditEntry.objects.filter(action="purge.queue", target_id=str(run.pk)).count() == 1
    assert AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).count() == 1


def _policies(database):
    Namespace.objects.filter(database=database, name="session").update(violation_action="delete")
    Namespace.objects.filter(database=database, name="focus").update(violation_action="apply_ttl")
    Namespace.objects.filter(database=database, name="action").update(violation_action="report")


def test_it_runs_the_policy_purge_on_every_primary(cluster_lucia, cluster_keys, redis_cluster):  # noqa: F811
    plant(cluster_keys)
    _policies(cluster_lucia)
    outcome = purge.policy_purge(database=cluster_lucia)
    assert outcome.skipped_reason == ""
    assert outcome.reported == {"lucia:action:": 25, "lucia:distress:": 0, "lucia:rate:": 0}
    runs = {r.run.target_value: r for r in outcome.runs}
    session, focus = runs["lucia:session:"], runs["lucia:focus:"]
    # matched: every key SCAN returned under the prefix; those within the policy are skipped.
    assert (session.status, session.matched, session.done, session.skipped) == ("succeeded", 300, 240, 60)
    assert (focus.status, focus.matched, focus.done, focus.skipped) == ("succeeded", 120, 90, 30)
    for result in (session, focus):
        run = PurgeRun.objects.get(pk=result.run.pk)
        assert set(run.node_cursors.values()) == {"end"} and len(run.node_stats) == 3
        assert sum(row["billed"] for row in run.node_stats.values()) == run.billed_commands
        assert AuditEntry.objects.filter(action="purge.finish", target_id=str(run.pk)).count() == 1
    assert present(redis_cluster.ports) == set(ALL) - set(NO_TTL)
    with redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0]) as client:
        assert all(86_000 < client.ttl(key) <= 86_400 for key in TOO_LONG)
        assert all(client.ttl(key) == -1 for key in ACTION_NOTTL)  # report only


def test_it_runs_the_scheduled_policy_purge_and_its_command_twin(cluster_lucia, cluster_keys,
                                                                 redis_cluster):  # noqa: F811
    from continuity.tasks.purge import policy_purge_task

    plant(cluster_keys)
    _policies(cluster_lucia)
    Namespace.objects.filter(database=cluster_lucia, name="focus").update(violation_action="report")
    out = policy_purge_task.apply(kwargs={"database": "lucia"}).get()
    assert out["lucia"]["skipped"] == "" and out["lucia"]["reported"] == {"lucia:focus:": 90, "lucia:action:": 25, "lucia:distress:": 0, "lucia:rate:": 0}
    (run_id,) = out["lucia"]["runs"]
    assert (PurgeRun.objects.get(pk=run_id).status, PurgeRun.objects.get(pk=run_id).done) == ("succeeded", 240)
    assert present(redis_cluster.ports) == set(ALL) - set(NO_TTL)
    cluster_keys.mset_nonatomic({f"lucia:session:again:{i}".encode(): b"v" for i in range(40)})
    text = io.StringIO()
    call_command("policy_purge", "--database", "lucia", "--json", stdout=text)
    (data,) = json.loads(text.getvalue())
    assert data["skipped"] == "" and [r["deleted"] for r in data["runs"]] == [40]
    assert present(redis_cluster.ports) == set(ALL) - set(NO_TTL)


@pytest.mark.parametrize("action", ["delete", "expire"])
def test_it_bills_per_node_what_each_node_executed_and_estimates_it(
        cluster_lucia, cluster_keys, redis_cluster, operator, action):  # noqa: F811
    ports = redis_cluster.ports
    plant(cluster_keys)
    preview = purge.preview_purge(database=cluster_lucia, kind="prefix", value=b"lucia:session:", action=action,
                                  actor=operator, batch_size=70)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="cost",
                              actor=operator, source="cli")
    sessions = node_of(ports, NO_TTL + SESSION_OK)
    flush_scripts(ports)
    before = stats(ports)
    result = purge.execute_purge(run_id=run.pk)
    after = stats(ports)
    run.refresh_from_db()
    assert (result.status, result.done) == ("succeeded", 300 if action == "delete" else 240)
    billed = {address: billed_delta(before[address], after[address]) for address in before}
    assert {address: row["billed"] for address, row in run.node_stats.items()} == billed
    assert run.billed_commands == sum(billed.values())
    assert {address: row["matched"] for address, row in run.node_stats.items()} == sessions
    # One script call per page of a node (and one NOSCRIPT per fresh node), whatever its slots.
    calls = sum(after[a].get("cmdstat_evalsha", {}).get("calls", 0) - before[a].get("cmdstat_evalsha", {}).get(
        "calls", 0) for a in after)
    pages = sum(row["pages"] for row in run.node_stats.values())
    assert pages - 3 <= calls - len(ports) <= pages and pages < 20
    # Only the script loads (2 per primary) and SCAN's page count (an empty last page, a
    # page more as the table shrinks) are beyond the preview.
    assert 0 <= run.billed_commands - run.estimated_billed_commands - 2 * len(ports) <= 6


def test_it_estimates_from_every_primary_s_dbsize(cluster_lucia, cluster_keys, redis_cluster, operator):  # noqa: F811
    plant(cluster_keys)
    sizes = [redis.Redis(port=port).dbsize() for port in redis_cluster.ports]
    run = purge.new_run(action="delete", database=cluster_lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    assert (run.estimate_keys, run.estimate_at_most, run.estimate_source) == (sum(sizes), True, "dbsize")
    assert sum(sizes) == len(ALL) and max(sizes) < len(ALL)
