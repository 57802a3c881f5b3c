"""Purge previews off the request: the instant estimate, the preview on a real Celery worker
(in a thread, consuming the test broker), its progress on the run row, cancel, retries."""

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from continuity.models import Namespace, PurgeRun, ReviewRun
from continuity.operations import purge, review
from continuity.tasks.purge import preview_purge_task
from dashboard.devtools import localservers
from dashboard.models import RedisDatabase
from continuity.tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("transport")


def fill(client, n, prefix=b"lucia:session:", ex=None):
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(prefix + f"{i:06d}".encode(), b"v", ex=ex)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def calls(client, command):
    return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


# --- a real worker (conftest: celery_app, celery_worker_parameters, empty_broker) ----------------

@pytest.mark.django_db(transaction=True)
def test_it_previews_on_the_worker_with_the_figures_of_a_preview_in_the_caller(empty_broker, monitored, operator,
                                                                              celery_worker):
    from continuity import seed

    seed.seed_all()
    lucia = RedisDatabase.objects.get(name="lucia")
    fill(monitored, 3000)
    fill(monitored, 700, prefix=b"lucia:focus:", ex=600)
    fill(monitored, 40, prefix=b"lucia:focus:n", ex=None)  # breaking focus's TTL rule: what expire would change
    monitored.set(b"lucia:focusing", b"outside every namespace")
    monitored.script_flush()  # both previews load the script (NOSCRIPT, SCRIPT LOAD): whatever ran before
    reference = purge.preview_purge(database=lucia, kind="pattern", value=b"lucia:focus:*", action="expire",
                                    actor=operator, batch_size=500)
    monitored.config_resetstat()
    monitored.script_flush()
    run = purge.request_preview(database=lucia, kind="pattern", value=b"lucia:focus:*", action="expire",
                                actor=operator, batch_size=500)
    assert run.status == "previewing" and run.estimate_source == "dbsize" and run.estimate_keys == 3741
    done = wait_for(lambda: (r := PurgeRun.objects.get(pk=run.pk)).status != "previewing" and r, 60,
                    "the worker's preview")
    assert done.status == "previewed" and done.claim_token == ""
    assert (done.preview_matched, done.preview_scanned, done.preview_actionable) == (740, 740, 40)
    assert done.preview_namespaces == reference.namespaces == {"lucia:focus:": 740}
    assert done.estimated_commands == reference.estimated_commands and len(done.preview_sample) == 20
    assert done.preview_commands == reference.commands
    assert monitored.dbsize() == 3741 and monitored.ttl(b"lucia:focus:n000000") == -1  # nothing touched


def test_it_saves_progress_as_it_goes_and_stops_at_the_next_save_when_cancelled(monitored, lucia, operator,
                                                                               settings):
    settings.PURGE_CHECKPOINT_SECONDS = 0  # save after every page
    fill(monitored, 2000)
    run = purge.new_run(action="delete",
                        database=lucia, kind="prefix", value=b"lucia:session:", actor=operator, batch_size=200)
    run.save()
    seen = []

    def watch(scanned, matched):
        seen.append(PurgeRun.objects.get(pk=run.pk).preview_scanned)  # what the page shows: the last save
        if scanned >= 800:
            purge.cancel_purge(run=run, actor=operator)

    monitored.config_resetstat()
    assert purge.run_preview(run_id=run.pk, progress=watch) is None
    run.refresh_from_db()
    assert run.status == "cancelled" and run.finished_at is not None
    pages = calls(monitored, "scan")
    assert pages == len(seen) and 4 <= pages < 10  # it stopped at the save after the cancel, well before the end
    assert seen[0] == 0 and seen[1:] == sorted(seen[1:]) and 0 < seen[-1] < 2000
    assert 0 < run.preview_scanned < 2000 and monitored.dbsize() == 2000
    # The task, delivered again, leaves a cancelled preview alone.
    assert preview_purge_task.apply(args=[run.pk]).get() == {"run": run.pk, "status": "skipped"}


def test_it_cancels_a_preview_from_its_page_without_an_audit_entry(operator_client, monitored, lucia, operator):
    from django.urls import reverse

    from dashboard.models import AuditEntry

    run = purge.new_run(action="delete", database=lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    run.save()
    response = operator_client.post(reverse("continuity:purge_cancel", args=[run.pk]), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200 and "The preview was cancelled" in body and "hx-trigger" not in body
    run.refresh_from_db()
    assert run.status == "cancelled" and run.claim_token == ""
    assert not AuditEntry.objects.filter(target_type="continuity.purgerun").exists()  # a dry run: never audited
    assert purge.run_preview(run_id=run.pk) is None


def test_it_estimates_from_a_fresh_review_without_a_redis_command(monitored, lucia, operator):
    fill(monitored, 300, ex=600)
    fill(monitored, 120, prefix=b"lucia:focus:", ex=600)
    review.review_database(database=lucia)
    monitored.config_resetstat()

    def estimate(kind, value):
        run = purge.new_run(action="delete", database=lucia, kind=kind, value=value, actor=operator)
        return run.estimate_keys, run.estimate_at_most, run.estimate_source

    assert estimate("prefix", b"lucia:session:") == (300, False, "review")  # a whole namespace: its count
    assert estimate("pattern", b"lucia:focus:*") == (120, False, "review")
    assert estimate("prefix", b"lucia:session:00") == (300, True, "review")  # narrower: at most
    assert estimate("pattern", b"lucia:focus:*9") == (120, True, "review")
    assert calls(monitored, "dbsize") == 0 and calls(monitored, "scan") == 0
    latest = ReviewRun.objects.get()
    run = purge.new_run(action="delete", database=lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    assert run.estimate_review_id == latest.pk and run.estimated_at == latest.finished_at

    # A namespace registered after the review: the review cannot tell its count.
    Namespace.objects.create(database=lucia, name="session-admin", prefix="lucia:session:admin:",
                             max_ttl_seconds=600)
    assert estimate("prefix", b"lucia:session:admin:") == (420, True, "dbsize")
    # A review older than PURGE_ESTIMATE_MAX_AGE_SECONDS: DBSIZE, one command.
    ReviewRun.objects.update(finished_at=timezone.now() - timedelta(seconds=settings.PURGE_ESTIMATE_MAX_AGE_SECONDS
                                                                     + 60))
    assert estimate("prefix", b"lucia:focus:") == (420, True, "dbsize")
    assert calls(monitored, "dbsize") == 2 and calls(monitored, "scan") == 0


def test_it_shows_the_review_estimate_with_its_source_on_the_page(operator_client, monitored, lucia, operator):
    fill(monitored, 50, ex=600)
    reviewed = review.review_database(database=lucia).run
    run = purge.new_run(action="delete", database=lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    run.save()
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert 'about <strong data-testid="estimate-keys">50</strong> keys match' in page
    assert re.search(rf'TTL review #{reviewed.pk}</a>, <time [^>]+>[^<]+ UTC</time> <span class="when-ago">\(just now\)',
                     page)


def test_it_records_a_failed_preview_when_redis_stays_down(db, lucia, operator, monkeypatch, settings):
    monkeypatch.setenv("PREVIEW_DOWN_URL", f"redis://127.0.0.1:{localservers.free_port()}/0")
    down = RedisDatabase.objects.create(name="down", url_env="PREVIEW_DOWN_URL", key_prefix="lucia:")
    Namespace.objects.create(database=down, name="session", prefix="lucia:session:", max_ttl_seconds=60)
    with pytest.raises(Exception, match="unreachable|Connection|refused"):
        purge.request_preview(action="delete", database=down, kind="prefix", value=b"lucia:session:", actor=operator)
    assert not PurgeRun.objects.exists()  # the estimate's DBSIZE failed: the form says so, nothing is saved
    run = PurgeRun.objects.create(database=down, target_kind="prefix", target_value="lucia:session:",
                                  target_token="bHVjaWE6c2Vzc2lvbjo", match_pattern="lucia:session:*",
                                  status="previewing", requested_by=operator)
    settings.PURGE_TASK_MAX_RETRIES = 0
    assert preview_purge_task.apply(args=[run.pk]).get() == {"run": run.pk, "status": "failed"}
    run.refresh_from_db()
    assert run.status == "failed" and "unreachable" in run.error and run.claim_token == ""


def test_it_cleans_up_previews_that_were_cancelled_or_never_finished(monitored, lucia, operator):
    old = timezone.now() - timedelta(days=2)
    kept = []
    for status, queued in (("previewing", None), ("cancelled", None), ("failed", None), ("previewed", None),
                           ("cancelled", old), ("succeeded", old)):
        run = purge.new_run(action="delete", database=lucia, kind="prefix", value=b"lucia:session:", actor=operator)
        run.status, run.queued_at, run.previewed_at = status, queued, old
        run.save()
        if queued:
            kept.append(run.pk)
    fresh = purge.new_run(action="delete", database=lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    fresh.save()
    assert purge.clean_up_previews() == 4
    assert sorted(PurgeRun.objects.values_list("pk", flat=True)) == sorted(kept + [fresh.pk])
