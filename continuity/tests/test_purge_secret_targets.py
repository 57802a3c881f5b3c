"""M3: a purge target that looks like a secret is refused where the run is created (the page,
`manage.py purge` and the operations they share), and never echoed, stored or audited."""

import io
import logging

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from continuity.models import PurgeRun
from continuity.operations import purge
from dashboard.models import AuditEntry

UPSTASH = "AZJcACQgYmQ3ZTQ4ZTUtNTFhYi00ODU1LWE4ZTEtOTY3MjNmNmVkMjhmNDc3NDNjZTdh"
GITHUB = "ghp_1234567890abcdefghijABCDEFGHIJ123456"
TOKEN = "Zx81kQpa9Ym3WvT7cR2n"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
       "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")

# (kind, target, the part that must never come back)
PAYLOADS = [
    ("prefix", UPSTASH, UPSTASH),
    ("prefix", f"lucia:session:{UPSTASH}", UPSTASH),
    ("prefix", GITHUB, GITHUB),
    ("prefix", f"lucia:session:{GITHUB}", GITHUB),
    ("prefix", f"rediss://default:{TOKEN}@eu1-lucia.upstash.io:6379", TOKEN),
    ("prefix", "lucia:session:AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("prefix", f"lucia:session:{JWT}", JWT),
    ("prefix", "lucia:session:password=hunter2xyzzy", "hunter2xyzzy"),
    ("prefix", f"lucia:session:op://vault/{GITHUB}/field", GITHUB),
    ("pattern", f"lucia:session:*{UPSTASH}*", UPSTASH),
]


@pytest.fixture
def filled(monitored, lucia):
    for i in range(5):
        monitored.set(f"lucia:session:{i}", b"v")
    monitored.set(b"lucia:focus:1", b"v")
    return monitored


def _nothing_kept(secret, caplog):
    assert not PurgeRun.objects.exists()
    assert not any(secret in f"{e.note}{e.before}{e.after}{e.target_id}" for e in AuditEntry.objects.all())
    assert secret not in caplog.text


@pytest.mark.parametrize("kind,target,secret", PAYLOADS)
def test_it_refuses_a_secret_target_on_the_page_without_echo(operator_client, filled, caplog, kind, target, secret):
    caplog.set_level(logging.DEBUG)
    response = operator_client.post(reverse("continuity:purge_new"),
                                    {"database": "lucia", "target_kind": kind, "target": target, "action": "delete"})
    body = response.content.decode()
    assert response.status_code == 400
    assert "looks like a secret" in body and secret not in body
    assert 'name="target" id="id_target" value=""' in body  # the re-rendered form is blank
    _nothing_kept(secret, caplog)
    assert filled.dbsize() == 6


def test_it_does_not_prefill_the_form_with_a_secret_from_the_link(operator_client, lucia):
    page = operator_client.get(reverse("continuity:purge_new"), {"target": f"lucia:session:{UPSTASH}"})
    assert page.status_code == 200 and UPSTASH not in page.content.decode()
    page = operator_client.get(reverse("continuity:purge_new"), {"target": "lucia:session:"})
    assert 'value="lucia:session:"' in page.content.decode()


@pytest.mark.parametrize("kind,target,secret", PAYLOADS)
def test_it_refuses_a_secret_target_on_the_command_line_without_echo(filled, operator, caplog, kind, target, secret):
    caplog.set_level(logging.DEBUG)
    out, err = io.StringIO(), io.StringIO()
    for extra in (["--dry-run"], ["--yes", "--reason", "cleanup"]):
        with pytest.raises(CommandError) as caught:
            call_command("purge", "--action", "delete",
                         "--database", "lucia", f"--{kind}", target, *extra, "--as", operator.username,
                         stdout=out, stderr=err)
        assert "looks like a secret" in str(caught.value)
        assert secret not in str(caught.value) + out.getvalue() + err.getvalue()
    _nothing_kept(secret, caplog)
    assert filled.dbsize() == 6


@pytest.mark.parametrize("create", ["request_preview", "preview_purge", "estimate_purge"])
@pytest.mark.parametrize("kind,target,secret", PAYLOADS)
def test_the_operations_refuse_a_secret_target_before_any_redis_command(filled, lucia, operator, caplog, create,
                                                                         kind, target, secret):
    # Whatever reaches the operations layer (a page, a command, a task, a script) meets the same check.
    caplog.set_level(logging.DEBUG)
    filled.config_resetstat()
    with pytest.raises(purge.PurgeRefused) as caught:
        getattr(purge, create)(database=lucia, kind=kind, value=target.encode(), actor=operator)
    assert "looks like a secret" in str(caught.value) and secret not in str(caught.value)
    _nothing_kept(secret, caplog)
    stats = filled.info("commandstats")
    assert "cmdstat_scan" not in stats and "cmdstat_dbsize" not in stats


def test_it_refuses_a_secret_split_by_a_control_byte(filled, lucia, operator):
    # Stored as shown, "\n" escaped; the text as typed is scanned too.
    value = f"lucia:session:{UPSTASH[:30]}\n{UPSTASH[30:]}".encode()
    with pytest.raises(purge.PurgeRefused):
        purge.request_preview(action="delete", database=lucia, kind="prefix", value=value, actor=operator)
    assert not PurgeRun.objects.exists()


@pytest.mark.parametrize("kind,target", [
    ("prefix", "lucia:session:"),
    ("prefix", "lucia:session:user:1042"),
    ("prefix", "lucia:session:password"),
    ("pattern", "lucia:session:*:2024-*"),
    ("pattern", "lucia:focus:[ab]*"),
])
def test_it_still_accepts_ordinary_targets(filled, lucia, operator, kind, target):
    run = purge.request_preview(action="delete", database=lucia, kind=kind, value=target.encode(), actor=operator)
    assert PurgeRun.objects.get().target_value == target == run.target_value

