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
from dashboard import localservers
from dashboard.models import RedisDatabase


def sent(stats, *commands):
    """Commands a client sent, refused ones included (an ACL refusal is a rejected call)."""
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) + stats.get(f"cmdstat_{c}", {}).get("rejected_calls", 0)
               for c in commands)


@pytest.fixture
def typed_lucia(lucia):
    for name, kind in TYPES.items():
        Namespace.objects.filter(database=lucia, name=name).update(expected_type=kind)
    keyspace.forget_clients()  # capabilities live on the client: start from a fresh one
    yield lucia
    keyspace.forget_clients()


def copy_database(source, name, url_env):
    """A database record like `source` (same prefix and namespaces) reading `url_env`."""
    record = RedisDatabase.objects.create(name=name, key_prefix=source.key_prefix, url_env=url_env)
    for ns in Namespace.objects.filter(database=source):
        ns.pk, ns.database = None, record
        ns.save()
    return record


# --- 1. read-only scripts ------------------------------------------------------------------
def test_it_reviews_and_browses_with_evalsha_ro(monitored, typed_lucia):
    specs = load(monitored, 3000, seed=31)
    findings, per_namespace, foreign = expected_from_specs(specs)
    before = monitored.info("commandstats")
    result = review.review_database(database=typed_lucia, batch=200)  # batches after the first are pipelined
    middle = monitored.info("commandstats")
    browsed = keyspace.scan_keys(typed_lucia, pattern=b"lucia:session:*", page_size=50)
    after = monitored.info("commandstats")

    assert result.findings == findings and result.foreign_keys == foreign
    assert {row["prefix"]: row["keys"] for row in result.namespaces} == per_namespace
    assert browsed.rows and all(row.meta.exists and row.meta.memory > 0 for row in browsed.rows)
    assert capabilities.of(keyspace.client_for(typed_lucia)).read_only_scripts is True
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


def test_it_falls_back_to_evalsha_where_evalsha_ro_is_unknown(typed_lucia, server_without_ro_scripts, monkeypatch):
    other = redis.Redis.from_url(server_without_ro_scripts)
    specs = load(other, 1500, seed=32)
    findings, per_namespace, foreign = expected_from_specs(specs)
    monkeypatch.setenv("OLD_REDIS_URL", server_without_ro_scripts)
    old = copy_database(typed_lucia, "old", "OLD_REDIS_URL")
    other.config_resetstat()
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


def test_it_falls_back_to_evalsha_where_the_acl_refuses_evalsha_ro(monitored, typed_lucia, redis_server, monkeypatch):
    specs = load(monitored, 1200, seed=33)
    findings, _, foreign = expected_from_specs(specs)
    monitored.execute_command("ACL", "SETUSER", "noro", "on", "nopass", "~*", "+@all", "-evalsha_ro", "-eval_ro")
    monkeypatch.setenv("NORO_URL", f"redis://noro@127.0.0.1:{redis_server.port}/0")
    restricted = copy_database(typed_lucia, "noro", "NORO_URL")
    try:
        before = monitored.info("commandstats")
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
