"""What jobs cost, on the pages and in projections: billed commands from real runs against
a real redis-server, priced with REDIS_PRICE_PER_100K_COMMANDS."""

import pytest
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from continuity.billing import estimated_cost_usd
from continuity.operations import costs, purge, review
from continuity.templatetags.continuity import usd

pytestmark = pytest.mark.usefixtures("transport")


def fill(client, n, prefix=b"lucia:session:"):
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(prefix + f"{i:06d}".encode(), b"v")
    pipe.execute()


@pytest.mark.parametrize("every,period,runs", [(15, "minutes", 2880), (1, "hours", 720), (1, "days", 30)])
def test_it_counts_runs_a_month_of_an_interval(db, every, period, runs):
    task = PeriodicTask(name="x", task="t", interval=IntervalSchedule.objects.create(every=every, period=period))
    assert costs.runs_per_month(task) == runs


@pytest.mark.parametrize("fields,runs", [
    (dict(minute="30", hour="3"), 30),                       # nightly
    (dict(minute="*/15", hour="*"), 30 * 96),                # every 15 minutes
    (dict(minute="0", hour="9", day_of_week="1-5"), 21),     # weekdays: 30 * 5/7
])
def test_it_counts_runs_a_month_of_a_crontab(db, fields, runs):
    crontab = CrontabSchedule.objects.create(**{"day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
                                                **fields})
    assert costs.runs_per_month(PeriodicTask(name="x", task="t", crontab=crontab)) == runs


def test_it_prices_commands(settings):
    settings.REDIS_PRICE_PER_100K_COMMANDS = 0.20
    assert usd(estimated_cost_usd(281_001)) == "$0.5620"
    assert usd(estimated_cost_usd(275_000_000)) == "$550"


def test_it_shows_the_billed_cost_of_a_review_and_projects_the_schedule(operator_client, lucia, monitored, settings):
    settings.REDIS_PRICE_PER_100K_COMMANDS = 0.20
    fill(monitored, 1200)
    run = review.review_database(database=lucia).run
    assert run.billed_commands > 1200
    detail = operator_client.get(reverse("continuity:review_detail", args=[run.pk])).content.decode()
    assert f'data-testid="billed-commands">{run.billed_commands:,}<' in detail
    page = operator_client.get(reverse("continuity:job_list")).content.decode()
    price = usd(run.estimated_cost_usd)
    assert f"≈ {run.billed_commands:,} billed commands, {price} a run" in page  # before "run review now"
    # The nightly exact schedule is projected from this exact run: 30 runs a month.
    nightly = run.billed_commands * 30
    assert f"lucia: 30 runs × last exact review = {nightly:,} billed commands ≈ {usd(estimated_cost_usd(nightly))}" \
        in page
    # The seeded every-15-minutes schedule is sampled: an exact run says nothing of its cost.
    assert "lucia: 2,880 runs (cost known after the first sampled review)" in page


def test_it_prices_sampled_and_exact_reviews_each_from_its_own_kind(operator_client, lucia, monitored):
    """A sampled review costs about its sample, an exact one about two commands per key: the
    frequent sampled schedule is projected from the last sampled run, the nightly exact one and
    "Run review now" (exact) from the last exact run, whichever ran last."""
    fill(monitored, 3000)
    exact = review.review_database(database=lucia).run
    sampled = review.review_database(database=lucia, sample=200).run  # the latest run, and sampled
    assert sampled.sampled and not exact.sampled
    assert 0 < sampled.billed_commands < exact.billed_commands / 5
    page = operator_client.get(reverse("continuity:job_list")).content.decode()
    assert f'data-testid="review-cost">≈ {exact.billed_commands:,} billed commands,' in page
    frequent, nightly = sampled.billed_commands * 2880, exact.billed_commands * 30
    assert f"lucia: 2,880 runs × last sampled review = {frequent:,} billed commands" in page
    assert f"lucia: 30 runs × last exact review = {nightly:,} billed commands" in page


def test_it_shows_a_purge_previews_cost_before_and_after(operator_client, operator, lucia, monitored):
    fill(monitored, 500)
    preview = purge.preview_purge(action="delete",
                                  database=lucia, kind="prefix", value=b"lucia:session:", actor=operator)
    run = preview.run
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert f'data-testid="preview-commands">{run.estimated_billed_commands}<' in page
    assert f'data-testid="preview-cost">{usd(run.estimated_execution_cost_usd)}<' in page
    purge.confirm_purge(run=run, confirmation="lucia:session:", reason="tidy", actor=operator)
    result = purge.execute_purge(run_id=run.pk)
    page = operator_client.get(run.get_absolute_url()).content.decode()
    assert f'data-testid="progress-billed">{result.run.billed_commands}<' in page
