"""Least privilege that works: read-only scripts where the server has them, a clear
message naming the permission an ACL withholds, the documented ACL lines run against a
real redis-server, and a script cache flushed in mid-job survived and counted."""

import shutil
import subprocess
import tempfile

import pytest
import redis

from continuity import keyspace
from continuity.keyspace import capabilities
from continuity.models import Namespace
from continuity.operations import review
from continuity.tests.test_review import TYPES, expected_from_specs, load
from dashboard.devtools import localservers
from dashboard.models import RedisDatabase


def sent(stats, *commands):
    """Commands a client sent, refused ones included (an ACL refusal is a rejected call)."""
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) + stats.get(f"cmdstat_{c}", {}).get("rejected_calls", 0)
               for c in commands)


@pytest.fixture
def self_hosted_lucia(lucia):
    """These tests count the scan-script path's commands, a self-hosted server's default (the
    seeded record says Upstash, whose declared-keys path test_review.py counts)."""
    for name, kind in TYPES.items():
        Namespace.objects.filter(database=lucia, name=name).update(expected_type=kind)
    RedisDatabase.objects.filter(pk=lucia.pk).update(provider="self-hosted")
    lucia.refresh_from_db()
    keyspace.forget_clients()  # capabilities live on the client: start from a fresh one
    yield lucia
    keyspace.forget_clients()


def database_port(database):
    return keyspace.client_for(database).connection_pool.connection_kwargs["port"]


def copy_database(source, name, url_env):
    """A database record like `source` (same prefix and namespaces) reading `url_env`."""
    record = RedisDatabase.objects.create(name=name, key_prefix=source.key_prefix, url_env=url_env,
                                          provider=source.provider)
    for ns in Namespace.objects.filter(database=source):
        ns.pk, ns.database = None, record
        ns.save()
    return record


# --- 1. read-only scripts ------------------------------------------------------------------
def test_it_reviews_and_browses_with_evalsha_ro(monitored, self_hosted_lucia, steady_batches):
    specs = load(monitored, 3000, seed=31)
    findings, per_namespace, foreign = expected_from_specs(specs)
    before = monitored.info("commandstats")
    # steady_batches: the figures below are the scan script's batches of 200, one call per round trip; on a
    # loaded machine the batch sizer could choose another shape (its counts exact all the same).
    result = review.review_database(database=self_hosted_lucia, batch=200)  # batches after the first are pipelined
    middle = monitored.info("commandstats")
    browsed = keyspace.scan_keys(self_hosted_lucia, pattern=b"lucia:session:*", page_size=50)
    after = monitored.info("commandstats")

    assert result.findings == findings and result.foreign_keys == foreign
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    assert browsed.rows and all(row.meta.exists and row.meta.memory > 0 for row in browsed.rows)
    assert capabilities.of(keyspace.client_for(self_hosted_lucia)).read_only_scripts is True
    # Not one EVALSHA: the scan script (pipelined too) and the metadata script ran read-only.
    assert sent(after, "evalsha", "eval", "eval_ro") == sent(before, "evalsha", "eval", "eval_ro")
    batches = sent(middle, "scan") - sent(before, "scan")  # the SCAN inside each scan script call
    assert batches >= 3000 // 200 and sent(middle, "evalsha_ro") - sent(before, "evalsha_ro") >= batches
    counted = ("evalsha_ro", "script|load", "dbsize")
    assert result.commands == sent(middle, *counted) - sent(before, *counted)
    # The browsed page: its SCANs and one EVALSHA_RO for the page's metadata (plus a retry
    # where the server did not have the metadata script yet).
    assert sent(after, "scan") - sent(middle, "scan") == browsed.calls
    loaded = sent(after, "script|load") - sent(middle, "script|load")
    assert sent(after, "evalsha_ro") - sent(middle, "evalsha_ro") == 1 + loaded


def _rename_server(datadir, port):
    """A real redis-server that does not know EVALSHA_RO/EVAL_RO (like Redis 6)."""
    return subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", datadir,
                             "--rename-command", "EVALSHA_RO", "", "--rename-command", "EVAL_RO", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def server_without_ro_scripts():
    datadir = tempfile.mkdtemp(prefix="no-ro-redis-")
    port = localservers.free_port()
    process = _rename_server(datadir, port)
    localservers._wait(lambda: localservers._port_open(port), f"redis-server on {port}")
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(datadir, ignore_errors=True)


def test_it_falls_back_to_evalsha_where_evalsha_ro_is_unknown(self_hosted_lucia, server_without_ro_scripts, monkeypatch,
                                                               steady_batches):
    other = redis.Redis.from_url(server_without_ro_scripts)
    specs = load(other, 1500, seed=32)
    findings, per_namespace, foreign = expected_from_specs(specs)
    monkeypatch.setenv("OLD_REDIS_URL", server_without_ro_scripts)
    old = copy_database(self_hosted_lucia, "old", "OLD_REDIS_URL")
    other.config_resetstat()
    # steady_batches: one EVALSHA per SCAN below is the scan script's path; on a loaded machine the batch
    # sizer could choose another shape (its counts exact all the same).
    result = review.review_database(database=old, batch=300)
    stats = other.info("commandstats")
    other.close()
    assert result.findings == findings and result.foreign_keys == foreign
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    assert capabilities.of(keyspace.client_for(old)).read_only_scripts is False
    # The unknown EVALSHA_RO was sent once (an unknown command never reaches commandstats)
    # and counted; every batch then ran with EVALSHA.
    batches = sent(stats, "scan")
    assert sent(stats, "evalsha") == batches + 1  # + the NOSCRIPT answer of a fresh server
    assert result.commands == sent(stats, "evalsha", "script|load", "dbsize") + 1


def test_it_falls_back_to_evalsha_where_the_acl_refuses_evalsha_ro(monitored, self_hosted_lucia, redis_server,
                                                                    monkeypatch, steady_batches):
    specs = load(monitored, 1200, seed=33)
    findings, _, foreign = expected_from_specs(specs)
    monitored.execute_command("ACL", "SETUSER", "noro", "on", "nopass", "~*", "+@all", "-evalsha_ro", "-eval_ro")
    monkeypatch.setenv("NORO_URL", f"redis://noro@127.0.0.1:{redis_server.port}/0")
    restricted = copy_database(self_hosted_lucia, "noro", "NORO_URL")
    try:
        before = monitored.info("commandstats")
        # steady_batches: `counted` below is the scan script's path (no SCAN from the client); on a loaded
        # machine the batch sizer could choose another shape (its counts exact all the same).
        result = review.review_database(database=restricted, batch=400)
        metas = keyspace.key_metadata(restricted, [b"lucia:session:000001", b"lucia:nope"])
        after = monitored.info("commandstats")
    finally:
        monitored.execute_command("ACL", "DELUSER", "noro")
    assert result.findings == findings and result.foreign_keys == foreign
    assert not metas[1].exists
    assert capabilities.of(keyspace.client_for(restricted)).read_only_scripts is False
    assert capabilities.of(keyspace.client_for(restricted)).script is True
    # One refused EVALSHA_RO (checked once per client), counted; then EVALSHA throughout.
    assert sent(after, "evalsha_ro") - sent(before, "evalsha_ro") == 1
    counted = ("evalsha_ro", "evalsha", "script|load", "dbsize")
    assert result.commands == sent(after, *counted) - sent(before, *counted) - 1  # - key_metadata's EVALSHA


# --- 2. a refused permission, named; a degraded path, said ---------------------------------
@pytest.fixture
def acl_database(monitored, redis_server, self_hosted_lucia, monkeypatch):
    """make(name, *rules): an ACL user with `rules` and a database record (lucia's prefix and
    namespaces) whose URL logs in as that user. Users are deleted afterwards."""
    users = []

    def make(name, *rules):
        monitored.execute_command("ACL", "SETUSER", name, "reset", "on", f">{name}-pass", *rules)
        users.append(name)
        variable = f"{name.upper().replace('-', '_')}_URL"
        monkeypatch.setenv(variable, f"redis://{name}:{name}-pass@127.0.0.1:{redis_server.port}/0")
        return copy_database(self_hosted_lucia, name, variable)

    yield make
    for name in users:
        monitored.execute_command("ACL", "DELUSER", name)
    keyspace.forget_clients()


NO_SCAN = "This Redis user may not run SCAN (ACL): the key browser, the overview, reviews and purges need +scan."


def test_it_names_a_refused_scan_on_every_page_and_command(acl_database, monitored, viewer_client, operator_client,
                                                          operator, eager, django_capture_on_commit_callbacks):
    from django.core.management import CommandError, call_command
    from django.urls import reverse

    load(monitored, 300, seed=34)
    database = acl_database("noscan", "~*", "+@all", "-scan")
    browse = viewer_client.get(reverse("continuity:browse", args=[database.name]) + "?prefix=lucia:")
    stats = viewer_client.get(reverse("continuity:namespace_stats", args=[database.name]),
                              headers={"HX-Request": "true"})
    with django_capture_on_commit_callbacks(execute=True):  # the worker's preview, eagerly
        posted = operator_client.post(reverse("continuity:purge_new"), {
            "database": database.name, "target_kind": "prefix", "target": "lucia:session:", "action": "delete"})
    from continuity.models import PurgeRun

    preview = operator_client.get(PurgeRun.objects.get().get_absolute_url()) if posted.status_code == 302 else posted
    for response in (browse, stats, preview):
        body = response.content.decode()
        assert response.status_code in (200, 400) and NO_SCAN in body and "Traceback" not in body
    assert browse.context["error"].startswith(NO_SCAN) and "docs/redis-acl.md" in browse.context["error"]

    # Its one node cannot be read: the run ends failed at once (a refusal is billed again on every
    # attempt), naming the permission.
    failed = review.review_database(database=database, batch=100)
    assert failed.status == "failed" and failed.run.error.startswith(f"127.0.0.1:{database_port(database)}: {NO_SCAN}")
    with pytest.raises(CommandError, match=r"noscan: 127\.0\.0\.1:\d+: This Redis user may not run SCAN \(ACL\)"):
        call_command("ttl_review", "--database", database.name)
    with pytest.raises(CommandError, match=r"This Redis user may not run SCAN \(ACL\)"):
        call_command("purge", "--action", "delete",
                     "--database", database.name, "--prefix", "lucia:session:", "--dry-run",
                     "--as", operator.username)


def test_it_fails_a_refused_review_task_at_once_with_the_message(acl_database, monitored):
    from continuity.models import ReviewRun
    from continuity.tasks.review import review_database_task

    load(monitored, 100, seed=35)
    database = acl_database("noscan-task", "~*", "+@all", "-scan")
    run = review.start_review(database=database)
    outcome = review_database_task.apply(args=[run.pk]).get()
    run.refresh_from_db()
    assert outcome == ReviewRun.FAILED and run.status == ReviewRun.FAILED
    assert NO_SCAN in run.error  # no retry: a refusal is billed again on every attempt
    assert run.node_runs.get().status == "failed"


def test_it_names_a_refused_unlink_when_a_purge_executes(acl_database, monitored, operator):
    from django.core.management import CommandError, call_command

    for i in range(50):
        monitored.set(f"lucia:session:{i}".encode(), b"v")
    database = acl_database("nounlink", "~*", "+@all", "-unlink")
    with pytest.raises(CommandError) as failed:
        call_command("purge", "--action", "delete",
                     "--database", database.name, "--prefix", "lucia:session:", "--yes", "--reason", "t",
                     "--as", operator.username)
    assert ("This Redis user may not run UNLINK (ACL): a purge by delete and the key browser's Delete need "
            "+unlink.") in str(failed.value)
    assert monitored.exists(*[f"lucia:session:{i}".encode() for i in range(50)]) == 50
    from continuity.models import PurgeRun

    run = PurgeRun.objects.get(database=database)
    assert run.status == PurgeRun.FAILED and "may not run UNLINK (ACL)" in run.error


def test_it_keeps_working_without_scripting_or_memory_and_says_what_is_degraded(
        acl_database, monitored, viewer_client):
    from django.core.management import call_command
    from django.urls import reverse

    specs = load(monitored, 800, seed=36)
    findings, per_namespace, foreign = expected_from_specs(specs)
    database = acl_database("bare", "~*", "+@all", "-@scripting", "-memory")
    browse = viewer_client.get(reverse("continuity:browse", args=[database.name]) + "?prefix=lucia:session:")
    assert browse.context["error"] is None and browse.context["result"].rows
    assert all(row.meta.memory is None for row in browse.context["result"].rows)
    body = browse.content.decode()
    assert capabilities.SCRIPTS_REFUSED in body and capabilities.MEMORY_REFUSED in body
    stats = viewer_client.get(reverse("continuity:namespace_stats", args=[database.name]),
                              headers={"HX-Request": "true"}).content.decode()
    assert 'data-testid="limitations"' in stats and capabilities.MEMORY_REFUSED in stats

    from io import StringIO

    err = StringIO()
    call_command("ttl_review", "--database", database.name, stdout=StringIO(), stderr=err)
    assert f"bare: {capabilities.SCRIPTS_REFUSED}" in err.getvalue()
    assert f"bare: {capabilities.MEMORY_REFUSED}" in err.getvalue()
    from continuity.models import ReviewRun

    run = ReviewRun.objects.get(database=database)
    assert run.status == ReviewRun.SUCCEEDED and run.findings == {**findings, "oversized": 0}
    assert run.foreign_keys == foreign and run.sizes_unknown()
    page = viewer_client.get(reverse("continuity:review_detail", args=[run.pk])).content.decode()
    assert capabilities.MEMORY_REFUSED in page
    # A review that could measure sizes says nothing of the kind.
    full = review.review_database(database=RedisDatabase.objects.get(name="lucia"))
    assert not full.run.sizes_unknown()
    assert capabilities.MEMORY_REFUSED not in viewer_client.get(
        reverse("continuity:review_detail", args=[full.run.pk])).content.decode()


# --- 3. the documented ACL lines, run against a real redis-server --------------------------
def documented_acl_lines():
    """{user: [arguments after ACL SETUSER]} read from docs/redis-acl.md."""
    import shlex
    from pathlib import Path

    from django.conf import settings

    text = (Path(settings.BASE_DIR) / "docs" / "redis-acl.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("ACL SETUSER ")]
    parsed = {}
    for line in lines:
        words = shlex.split(line)[2:]
        parsed[words[0]] = words
    return parsed


def rejected(stats):
    """Commands the server refused (ACL) so far, per command."""
    return {name: row["rejected_calls"] for name, row in stats.items() if row.get("rejected_calls")}


@pytest.fixture
def documented_users(monitored, redis_server, monkeypatch):
    """The browse and purge users exactly as docs/redis-acl.md defines them, and variables
    holding their URLs (BROWSE_URL, PURGE_URL)."""
    lines = documented_acl_lines()
    assert set(lines) == {"continuity-browse", "continuity-purge"}
    for words in lines.values():
        monitored.execute_command("ACL", "SETUSER", *words)
    for user, variable in (("continuity-browse", "BROWSE_URL"), ("continuity-purge", "PURGE_URL")):
        password = next(w[1:] for w in lines[user] if w.startswith(">"))
        monkeypatch.setenv(variable, f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0")
    keyspace.forget_clients()
    yield lines
    for user in lines:
        monitored.execute_command("ACL", "DELUSER", user)
    keyspace.forget_clients()


def test_it_browses_and_reviews_with_the_documented_browse_user(documented_users, monitored, self_hosted_lucia,
                                                                 viewer_client, operator_client, eager,
                                                                 django_capture_on_commit_callbacks):
    from django.urls import reverse

    specs = load(monitored, 2000, seed=37)
    findings, per_namespace, foreign = expected_from_specs(specs)
    monitored.rpush(b"lucia:action:list", *[f"item{i}" for i in range(50)])
    monitored.sadd(b"lucia:action:set", *[f"m{i}" for i in range(50)])
    monitored.zadd(b"lucia:action:zset", {f"z{i}": i for i in range(50)})
    monitored.hset(b"lucia:action:hash", mapping={f"f{i}": "v" for i in range(50)})
    monitored.xadd(b"lucia:action:stream", {"n": "1"})
    monitored.set(b"lucia:action:json", b'{"a": 1}', ex=60)
    monitored.set(b"other:secret", b"not for this user")  # outside the key pattern
    # Both roles on the browse user: the record's read URL and its write URL.
    RedisDatabase.objects.filter(pk=self_hosted_lucia.pk).update(url_env="BROWSE_URL")
    self_hosted_lucia.refresh_from_db()
    before = monitored.info("commandstats")

    browse = viewer_client.get(reverse("continuity:browse", args=["lucia"]) + "?prefix=lucia:")
    result = browse.context["result"]
    assert browse.context["error"] is None and result.rows and result.dbsize == 2000 + 7
    assert all(row.meta.exists and row.meta.memory > 0 for row in result.rows) and result.notes == ()
    for key, shown in ((b"lucia:action:list", "item49"), (b"lucia:action:set", "m"), (b"lucia:action:zset", "z49"),
                       (b"lucia:action:hash", "f49"), (b"lucia:action:stream", "n=1"), (b"lucia:action:json", "&quot;a&quot;")):
        page = viewer_client.get(reverse("continuity:key_detail", args=["lucia", keyspace.encode_key(key)]))
        assert page.context["preview"].meta.exists and page.context["preview"].encoding, key
        assert shown in page.content.decode(), key
    download = viewer_client.get(reverse("continuity:key_download",
                                         args=["lucia", keyspace.encode_key(b"lucia:action:json")]))
    assert download.content == b'{"a": 1}'
    lookup = viewer_client.get(reverse("continuity:key_lookup", args=["lucia"]) + "?id=list")
    assert [row.key for row in lookup.context["lookup"].rows] == [b"lucia:action:list"]
    summary = viewer_client.get(reverse("continuity:database_summary", args=["lucia"]), headers={"HX-Request": "true"})
    assert 'data-testid="summary-error"' not in summary.content.decode() and "2,007" in summary.content.decode()
    figures = keyspace.server_summary(self_hosted_lucia)
    assert figures.dbsize == 2007 and figures.keys_with_ttl is not None and figures.redis_version
    stats = viewer_client.get(reverse("continuity:namespace_stats", args=["lucia"]), headers={"HX-Request": "true"})
    assert 'data-testid="stats-error"' not in stats.content.decode()
    assert 'data-testid="limitations"' not in stats.content.decode()
    assert keyspace.ping(self_hosted_lucia).ok

    result = review.review_database(database=self_hosted_lucia, batch=300)
    monitored.delete(b"lucia:action:list", b"lucia:action:set", b"lucia:action:zset", b"lucia:action:hash",
                     b"lucia:action:stream", b"lucia:action:json")
    after = monitored.info("commandstats")
    assert result.foreign_keys == foreign + 1  # + other:secret: counted by name, never read
    assert result.keys_scanned == 2007
    # The five collections added under lucia:action: have no TTL and are not strings.
    assert result.findings == {**findings, "no_ttl": findings["no_ttl"] + 5,
                               "wrong_type": findings["wrong_type"] + 5}
    caps = capabilities.of(keyspace.client_for(self_hosted_lucia))
    assert (caps.script, caps.scan_script, caps.read_only_scripts, caps.memory) == (True, True, True, None)
    # Not one command was refused on the way: every path ran as designed, none fell back.
    assert rejected(after) == rejected(before)
    assert sent(after, "evalsha", "eval") == sent(before, "evalsha", "eval")

    # A purge preview reads only: allowed. Executing it with the browse user is refused by
    # name, and touches nothing.
    with django_capture_on_commit_callbacks(execute=True):  # the worker's preview, eagerly
        response = operator_client.post(reverse("continuity:purge_new"), {
            "database": "lucia", "target_kind": "prefix", "target": "lucia:session:", "action": "delete"})
    from continuity.models import PurgeRun
    from continuity.operations import purge

    run = PurgeRun.objects.get()
    assert response.status_code == 302 and run.preview_matched == per_namespace["lucia:session:"]
    run = purge.confirm_purge(run=run, confirmation=run.target_value, reason="acl test",
                              actor=run.requested_by, source="cli")
    from continuity.tasks.purge import purge_task

    purge_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == PurgeRun.FAILED and run.done == 0
    # The first write a purge sends is its progress marker's, with the first SCAN.
    assert run.error.startswith("This Redis user may not run SET (ACL): a purge keeps its progress marker "
                                "(continuity-dashboard:purge-progress:*) with +set +get +del.")
    assert len(list(monitored.scan_iter(match=b"lucia:session:*", count=1000))) == per_namespace["lucia:session:"]


def test_it_purges_with_the_documented_purge_user(documented_users, monitored, self_hosted_lucia, operator):
    from continuity.models import PurgeRun
    from continuity.operations import purge

    for i in range(600):
        monitored.set(f"lucia:session:{i:04d}".encode(), b"v", ex=86400 * 30)  # above the session maximum
    for i in range(300):
        monitored.set(f"lucia:rate:{i:04d}".encode(), b"v", ex=30)
    monitored.set(b"other:keep", b"v")
    RedisDatabase.objects.filter(pk=self_hosted_lucia.pk).update(url_env="PURGE_URL", readonly_url_env="BROWSE_URL")
    self_hosted_lucia.refresh_from_db()
    before = monitored.info("commandstats")

    # Apply the maximum TTL (PEXPIRE), then delete a prefix (UNLINK), each with its marker.
    preview = purge.preview_purge(database=self_hosted_lucia, kind="prefix", value=b"lucia:session:", action="expire",
                                  actor=operator)
    assert preview.matched == 600 and preview.actionable == 600
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="acl", actor=operator,
                              source="cli")
    expired = purge.execute_purge(run_id=run.pk)
    assert (expired.status, expired.done) == (PurgeRun.SUCCEEDED, 600)
    max_ttl = Namespace.objects.get(database=self_hosted_lucia, prefix="lucia:session:").max_ttl_seconds
    assert 0 < monitored.ttl(b"lucia:session:0001") <= max_ttl

    preview = purge.preview_purge(action="delete",
                                  database=self_hosted_lucia, kind="prefix", value=b"lucia:rate:", actor=operator)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="acl", actor=operator,
                              source="cli")
    deleted = purge.execute_purge(run_id=run.pk)
    after = monitored.info("commandstats")
    assert (deleted.status, deleted.done, deleted.skipped) == (PurgeRun.SUCCEEDED, 300, 0)
    assert not list(monitored.scan_iter(match=b"lucia:rate:*")) and monitored.get(b"other:keep") == b"v"
    assert not list(monitored.scan_iter(match=b"continuity-dashboard:purge-progress:*"))  # markers cleared
    assert rejected(after) == rejected(before)  # nothing refused: no fallback was needed
    write_caps = capabilities.of(keyspace.client_for(self_hosted_lucia, write=True))
    assert write_caps.write_script is True


# --- 4. the script cache flushed in mid-job ------------------------------------------------
def test_it_survives_script_flushes_mid_review_as_the_browse_user_and_counts_them(
        documented_users, monitored, self_hosted_lucia, steady_batches):
    specs = load(monitored, 4000, seed=38)
    findings, per_namespace, foreign = expected_from_specs(specs)
    RedisDatabase.objects.filter(pk=self_hosted_lucia.pk).update(readonly_url_env="BROWSE_URL")
    self_hosted_lucia.refresh_from_db()
    flushed = []

    def flush(tally):
        if tally.batches in (1, 4, 9):  # before the pipelined path starts, and twice while it runs
            monitored.script_flush()
            flushed.append(tally.batches)

    before = monitored.info("commandstats")
    # steady_batches: the flushes land on batches 1, 4 and 9 of 250 keys, one call per round trip; on a loaded
    # machine the batch sizer could choose another shape (its counts exact all the same).
    result = review.review_database(database=self_hosted_lucia, batch=250, on_batch=flush)
    after = monitored.info("commandstats")
    assert flushed == [1, 4, 9] and result.status == "succeeded"
    assert result.findings == findings and result.foreign_keys == foreign
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    # Each flush cost a NOSCRIPT answer, a SCRIPT LOAD and the call again: all counted,
    # exactly what the server saw (our own SCRIPT FLUSH is not the review's).
    loads = sent(after, "script|load") - sent(before, "script|load")
    batches = sent(after, "scan") - sent(before, "scan")
    assert loads >= 3
    assert sent(after, "evalsha_ro") - sent(before, "evalsha_ro") == batches + loads
    counted = ("evalsha_ro", "script|load", "dbsize")
    assert result.commands == sent(after, *counted) - sent(before, *counted) == batches + 2 * loads + 2
    assert rejected(after) == rejected(before)


def test_it_survives_script_flushes_mid_purge_and_counts_them(monitored, self_hosted_lucia, operator, settings):
    from continuity.models import PurgeRun
    from continuity.operations import purge

    settings.PURGE_CHECKPOINT_SECONDS = 0  # progress after every batch
    for i in range(3000):
        monitored.set(f"lucia:session:{i:05d}".encode(), b"v", ex=86400 * 30)  # above the session maximum
    preview = purge.preview_purge(database=self_hosted_lucia, kind="prefix", value=b"lucia:session:", action="expire",
                                  actor=operator, batch_size=250)
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="flush",
                              actor=operator, source="cli")
    calls = []

    def progress(state):
        calls.append(state.batches)
        if len(calls) in (1, 3):
            monitored.script_flush()

    before = monitored.info("commandstats")
    result = purge.execute_purge(run_id=run.pk, progress=progress)
    after = monitored.info("commandstats")
    assert result.status == PurgeRun.SUCCEEDED and (result.matched, result.done, result.skipped) == (3000, 3000, 0)
    max_ttl = Namespace.objects.get(database=self_hosted_lucia, prefix="lucia:session:").max_ttl_seconds
    assert all(0 < monitored.ttl(f"lucia:session:{i:05d}".encode()) <= max_ttl for i in range(0, 3000, 97))
    loads = sent(after, "script|load") - sent(before, "script|load")
    scans = sent(after, "scan") - sent(before, "scan")
    # Each page records the purge's marker once (a SET inside its EVALSHA, or a plain SET
    # where SCAN returned no key on it: other keys in the database make such pages), and the
    # first SET travels with the first SCAN.
    scripted = sent(after, "evalsha") - sent(before, "evalsha") - loads
    assert loads >= 2 and sent(after, "set") - sent(before, "set") == result.run.batches + 1
    assert 0 < scripted <= result.run.batches
    # Every request the purge sent is in its count: SCAN pages, a call per page, per flush the
    # NOSCRIPT answer, the SCRIPT LOAD and the call again, the first SET and, at the end, the DEL.
    assert result.run.commands == scans + result.run.batches + 2 * loads + 2


def test_it_names_a_read_only_endpoint():
    """A replica (like a provider's read-only endpoint) refuses writes with READONLY."""
    datadir = tempfile.mkdtemp(prefix="replica-redis-")
    port = localservers.free_port()
    process = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", datadir,
                                "--replicaof", "127.0.0.1", str(localservers.free_port())],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        localservers._wait(lambda: localservers._port_open(port), f"redis-server on {port}")
        replica = redis.Redis(port=port)
        with pytest.raises(redis.ResponseError) as refused:
            replica.unlink(b"lucia:session:1")
        replica.close()
        assert keyspace.describe_error(refused.value).startswith(
            "This Redis endpoint is read-only: a purge and the key browser's actions need the read-write URL")
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(datadir, ignore_errors=True)
