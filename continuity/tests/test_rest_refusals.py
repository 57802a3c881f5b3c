"""What a REST token may not do, and what Upstash answers when it has had enough (issue 17,
leftovers 2 and 3), through the local bridge in front of the real redis-server.

- A token whose user may not run scripts (an ACL user's `ACL RESTTOKEN`, `-@scripting`): a
  purge cannot run over REST (its way without scripts needs WATCH). The page, `manage.py
  purge` and the task each end it with a clear refusal naming the REST endpoint (never the
  token), nothing deleted, no 500, its billed commands what Redis counted.
- A 429 (Upstash's "max requests limit exceeded"): a job stops resumable or ends failed with
  the reason, its counts exact; the pages say so.
- Upstash's read-only token (no SCAN, no scripts, no writes): the jobs end failed with the
  reason, nothing deleted; the pages say what it cannot do.
"""

import io

import pytest
import redis
from django.core.management import CommandError, call_command
from django.urls import reverse

from conftest import use_rest
from continuity import keyspace
from continuity.billing import FREE
from continuity.models import PurgeRun
from continuity.operations import purge
from continuity.tasks.purge import purge_task
from dashboard.devtools.restbridge import RestBridge

NOSCRIPT_TOKEN = "rest-token-of-a-user-without-scripts"
SESSIONS = 120


def billed_since(client, before):
    total = 0
    for name, row in client.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        if command.split("|")[0] not in FREE:
            total += row["calls"] - before.get(name, {}).get("calls", 0)
    return total


def told(text, bridge, said, token):
    assert said in text and f"REST endpoint {bridge.url}" in text, text
    assert token not in text


@pytest.fixture
def sessions(monitored):
    monitored.mset({f"lucia:session:{i:04d}".encode(): b"v" for i in range(SESSIONS)})
    monitored.set(b"lucia:session:\xff\xfebin", b"v")
    return monitored


# --- a token that may not run scripts -----------------------------------------------------------
@pytest.fixture
def noscript(lucia, sessions, monkeypatch, redis_server):
    """`lucia` over REST with the token of an ACL user allowed everything but scripting (what
    `ACL RESTTOKEN` gives for such a user on Upstash)."""
    sessions.execute_command("ACL", "SETUSER", "noscript", "reset", "on", ">noscript-pw", "~*", "&*", "+@all",
                             "-@scripting")
    bridge = RestBridge(redis_server.url(0), {NOSCRIPT_TOKEN: ("noscript", "noscript-pw")}).start()
    use_rest(monkeypatch, bridge, token=NOSCRIPT_TOKEN)
    yield bridge
    keyspace.forget_clients()
    bridge.stop()
    sessions.execute_command("ACL", "DELUSER", "noscript")


SCRIPTS_REFUSED = "refused scripts for this token"


def ended_refused(run, sessions, bridge, before):
    run.refresh_from_db()
    assert run.status == "failed", run.status
    told(run.error, bridge, SCRIPTS_REFUSED, NOSCRIPT_TOKEN)
    assert "Nothing was changed" in run.error and "ACL RESTTOKEN" in run.error
    # What Redis executed (the NOPERM refusal is rejected before execution: not billed), before the DBSIZE below.
    assert run.billed_commands + run.preview_billed_commands == billed_since(sessions, before)
    assert run.done == 0 and sessions.dbsize() == SESSIONS + 1  # nothing deleted, no marker left


def test_it_refuses_a_purge_by_the_page_when_the_token_may_not_run_scripts(
        operator_client, noscript, sessions, eager, django_capture_on_commit_callbacks):
    before = sessions.info("commandstats")
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("continuity:purge_new"), {"database": "lucia", "target_kind": "prefix",
                                                               "target": "lucia:session:", "action": "delete"})
    run = PurgeRun.objects.get()
    assert run.status == "previewed" and run.preview_matched == SESSIONS + 1  # a SCAN needs no script
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("continuity:purge_confirm", args=[run.pk]),
                                        {"confirmation": "lucia:session:", "reason": "cleanup"})
    assert response.status_code == 302
    ended_refused(run, sessions, noscript, before)
    page = operator_client.get(run.get_absolute_url())
    assert page.status_code == 200
    told(page.content.decode(), noscript, SCRIPTS_REFUSED, NOSCRIPT_TOKEN)


def test_it_refuses_a_purge_by_the_command_when_the_token_may_not_run_scripts(operator, noscript, sessions):
    before = sessions.info("commandstats")
    with pytest.raises(CommandError) as refused:
        call_command("purge", "--database", "lucia", "--prefix", "lucia:session:", "--action", "delete", "--yes",
                     "--reason", "cleanup", "--as", "otto", stdout=io.StringIO(), stderr=io.StringIO())
    assert str(refused.value).startswith("Refused: ")
    told(str(refused.value), noscript, SCRIPTS_REFUSED, NOSCRIPT_TOKEN)
    ended_refused(PurgeRun.objects.get(), sessions, noscript, before)


def test_it_refuses_a_purge_task_when_the_token_may_not_run_scripts(operator, lucia, noscript, sessions):
    before = sessions.info("commandstats")
    preview = purge.preview_purge(database=lucia, actor=operator, kind="prefix", value=b"lucia:session:",
                                  action="delete")
    run = purge.confirm_purge(run=preview.run, confirmation="lucia:session:", reason="cleanup", actor=operator,
                              source="cli")
    assert purge_task.apply(args=[run.pk]).get() == {"run": run.pk, "status": "failed"}  # at once: no retry
    ended_refused(run, sessions, noscript, before)


def test_it_refuses_a_preview_that_must_count_by_script_when_the_token_may_not(operator, lucia, noscript,
                                                                               sessions):
    # Applying the policy TTL re-checks each key: the preview counts with a script.
    with pytest.raises(purge.PurgeRefused) as refused:
        purge.preview_purge(database=lucia, actor=operator, kind="prefix", value=b"lucia:session:",
                            action="expire")
    told(str(refused.value), noscript, SCRIPTS_REFUSED, NOSCRIPT_TOKEN)
    assert sessions.dbsize() == SESSIONS + 1 and sessions.ttl(b"lucia:session:0001") == -1
