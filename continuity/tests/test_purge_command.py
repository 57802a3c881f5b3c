"""manage.py purge / policy_purge / resume_purges against real Redis and Postgres."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from continuity.models import PurgeRun
from dashboard.models import AuditEntry

pytestmark = pytest.mark.usefixtures("transport")


def run_purge(*args, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command("purge", "--action", "delete", *args, stdout=out, stderr=err)
    finally:
        sys.stdin = old
    return out.getvalue(), err.getvalue()


@pytest.fixture
def filled(monitored, lucia):
    pipe = monitored.pipeline(transaction=False)
    for i in range(120):
        pipe.set(f"lucia:session:{i}".encode(), b"v")
    for i in range(30):
        pipe.set(f"lucia:focus:{i}".encode(), b"v", ex=100)
    pipe.execute()
    return monitored


def test_it_previews_with_a_dry_run_as_json_and_touches_nothing(filled, operator):
    out, _ = run_purge("--database", "lucia", "--prefix", "lucia:session:", "--dry-run", "--json", "--as", "otto")
    data = json.loads(out)
    assert data["dry_run"] is True and data["matched"] == 120 and data["namespaces"] == {"lucia:session:": 120}
    assert data["estimated_commands"] >= 2 and len(data["sample"]) == 20
    assert filled.dbsize() == 150


def test_it_deletes_with_yes_and_reports_json(filled, operator):
    out, err = run_purge("--database", "lucia", "--prefix", "lucia:session:", "--reason", "cleanup", "--yes",
                         "--json", "--as", "otto")
    data = json.loads(out)
    assert (data["dry_run"], data["matched"], data["deleted"], data["skipped"]) == (False, 120, 120, 0)
    assert filled.dbsize() == 30
    entry = AuditEntry.objects.get(action="purge.finish")
    assert entry.source == "cli" and entry.actor_label == "otto" and entry.after["deleted"] == 120


def test_it_scans_the_keyspace_once_with_yes_counting_as_it_acts(monitored, lucia, operator, settings):
    from continuity.tests.test_purge_previews import fill

    settings.PURGE_BATCH_SIZE = 1000
    fill(monitored, 6000)
    fill(monitored, 4000, prefix=b"lucia:focus:", ex=600)
    monitored.config_resetstat()
    out, err = run_purge("--database", "lucia", "--prefix", "lucia:session:", "--reason", "one pass", "--yes",
                         "--json", "--as", "otto")
    stats = monitored.info("commandstats")
    calls = lambda cmd: stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)  # noqa: E731
    data = json.loads(out)
    run = PurgeRun.objects.get()
    assert (data["matched"], data["deleted"], data["skipped"], data["preview_scan"]) == (6000, 6000, 0, False)
    assert data["estimate"] == {"keys": 10000, "at_most": True, "source": "dbsize"}
    assert run.skipped_preview and (run.pk, run.matched, run.done) == (data["run"], 6000, 6000)
    # One pass: one SCAN per execution batch (+1: a last, empty page after the table shrank),
    # where a preview first would have doubled them. The estimate: one DBSIZE.
    assert run.batches >= 8 and run.batches <= calls("scan") <= run.batches + 1
    assert calls("dbsize") == 1 and monitored.dbsize() == 4000
    queue = AuditEntry.objects.get(action="purge.queue")
    assert (queue.source, queue.actor_label, queue.note) == ("cli", "otto", "one pass")
    finish = AuditEntry.objects.get(action="purge.finish")
    assert finish.after["deleted"] == 6000 and finish.after["matched"] == 6000 and finish.source == "cli"


def test_it_keeps_the_exact_preview_for_a_dry_run_and_the_interactive_flow(filled, operator):
    filled.config_resetstat()
    run_purge("--database", "lucia", "--prefix", "lucia:session:", "--dry-run", "--json", "--as", "otto")
    assert filled.info("commandstats")["cmdstat_scan"]["calls"] >= 1 and filled.dbsize() == 150
    out, err = run_purge("--database", "lucia", "--prefix", "lucia:session:", "--reason", "r", "--as", "otto",
                         stdin="lucia:session:\n")
    assert "Preview: 120 keys match lucia:session:*" in err and "deleted 120" in out
    assert not PurgeRun.objects.filter(skipped_preview=True).exists()


def test_it_expires_and_reports_expired(filled, operator):
    out, _ = run_purge("--database", "lucia", "--pattern", "lucia:focus:*", "--action", "expire", "--reason", "r",
                       "--yes", "--json", "--as", "otto")
    data = json.loads(out)
    assert data["expired"] == 0 and data["skipped"] == 30 and "deleted" not in data  # all already had a TTL


def test_it_asks_for_the_target_interactively(filled, operator):
    out, err = run_purge("--database", "lucia", "--prefix", "lucia:session:", "--reason", "r", "--as", "otto",
                         stdin="lucia:session:\n")
    assert "Type the prefix to confirm" in err and "deleted 120" in out
    assert filled.dbsize() == 30


def test_it_refuses_a_wrong_interactive_confirmation_and_touches_nothing(filled, operator):
    before = set(filled.scan_iter())
    with pytest.raises(CommandError, match="does not match") as exc:
        run_purge("--database", "lucia", "--prefix", "lucia:session:", "--reason", "r", "--as", "otto",
                  stdin="lucia:session\n")
    assert exc.value.returncode == 1
    assert set(filled.scan_iter()) == before
    assert not PurgeRun.objects.filter(status__in=["queued", "running", "succeeded"]).exists()


@pytest.mark.parametrize("args,needle", [
    (["--prefix", ""], "empty prefix"),
    (["--pattern", "*"], "matches every key"),
    (["--pattern", "lucia:*"], "reaches beyond"),
    (["--prefix", "lucia:sess"], "reaches beyond"),
])
def test_it_refuses_unsafe_targets_with_a_non_zero_exit(filled, operator, args, needle):
    before = set(filled.scan_iter())
    with pytest.raises(CommandError, match=needle):
        run_purge("--database", "lucia", *args, "--reason", "r", "--yes", "--as", "otto")
    assert set(filled.scan_iter()) == before and filled.dbsize() == 150


def test_it_requires_the_operator_role_and_a_reason(filled, viewer, operator):
    with pytest.raises(CommandError, match="needs the operator role"):
        run_purge("--database", "lucia", "--prefix", "lucia:session:", "--reason", "r", "--yes", "--as", "vera")
    with pytest.raises(CommandError, match="reason"):
        run_purge("--database", "lucia", "--prefix", "lucia:session:", "--yes", "--as", "otto")
    with pytest.raises(CommandError, match="No active dashboard user"):
        run_purge("--database", "lucia", "--prefix", "lucia:session:", "--reason", "r", "--yes", "--as", "nobody")
    assert filled.dbsize() == 150
    # A viewer may still preview.
    out, _ = run_purge("--database", "lucia", "--prefix", "lucia:session:", "--dry-run", "--json", "--as", "vera")
    assert json.loads(out)["matched"] == 120


def test_it_runs_the_policy_purge_twin(filled, lucia):
    from continuity.models import Namespace

    Namespace.objects.filter(database=lucia, name="session").update(violation_action="delete")
    out = io.StringIO()
    call_command("policy_purge", "--database", "lucia", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data[0]["runs"][0]["deleted"] == 120 and filled.dbsize() == 30


def test_it_names_a_stalled_purge_before_any_scan_and_resumes_it_exactly(monitored, lucia, operator):
    """After a crash the next step is obvious: a new purge is refused before any SCAN with
    the stalled run's progress and how to resume it; --resume finishes it with exact counts."""
    from continuity.models import PurgeRun
    from continuity.operations import purge
    from dashboard.models import AuditEntry

    pipe = monitored.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(b"lucia:session:%06d" % i, b"v")
    pipe.execute()

    class Crash(Exception):
        pass

    def crash(progress_run):
        if progress_run.batches >= 2:
            raise Crash()

    run = purge.estimate_purge(database=lucia, kind="prefix", value=b"lucia:session:", action="delete",
                               actor=operator, rate_cap=0)
    run.batch_size = 500
    run.save()
    run = purge.confirm_purge(run=run, confirmation=run.target_value, reason="tidy", actor=operator, source="cli")
    with pytest.raises(Crash):
        purge.execute_purge(run_id=run.pk, progress=crash)
    PurgeRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))  # the lease lapsed
    monitored.config_resetstat()
    with pytest.raises(CommandError) as refused:
        call_command("purge", "--action", "delete",
                     "--database", "lucia", "--prefix", "lucia:session:", "--reason", "again", "--yes",
                     "--as", operator.username, stdout=io.StringIO(), stderr=io.StringIO())
    message = str(refused.value)
    assert f"Purge #{run.pk} of lucia" in message and "looks dead" in message
    assert f"--resume {run.pk}" in message and "matched " in message
    assert "cmdstat_scan" not in monitored.info("commandstats")  # refused before any scan
    out = io.StringIO()
    call_command("purge", "--action", "delete",
                 "--database", "lucia", "--resume", str(run.pk), "--as", operator.username, "--json",
                 stdout=out, stderr=io.StringIO())
    data = json.loads(out.getvalue())
    assert data["status"] == "succeeded" and data["deleted"] == 3000 and data["matched"] - data["skipped"] == 3000
    assert monitored.dbsize() == 0
    assert AuditEntry.objects.filter(action="purge.resume", target_id=str(run.pk)).count() == 1


def test_it_refuses_to_resume_a_purge_whose_worker_is_alive(monitored, lucia, operator):
    from continuity.models import PurgeRun
    from continuity.operations import purge

    monitored.set(b"lucia:session:1", b"v")
    run = purge.estimate_purge(database=lucia, kind="prefix", value=b"lucia:session:", action="delete",
                               actor=operator)
    run = purge.confirm_purge(run=run, confirmation=run.target_value, reason="tidy", actor=operator, source="cli")
    PurgeRun.objects.filter(pk=run.pk).update(status="running", heartbeat_at=timezone.now())
    with pytest.raises(CommandError, match="still checkpointing"):
        call_command("purge", "--action", "delete",
                     "--database", "lucia", "--resume", str(run.pk), "--as", operator.username,
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert monitored.exists(b"lucia:session:1")
