import json
import sys
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from continuity import keyspace
from continuity.models import FINDINGS, ReviewRun
from continuity.operations import review, review_requests
from dashboard import postgres
from dashboard.command_scanning import RefuseSecretArguments
from dashboard.models import RedisDatabase


class Command(RefuseSecretArguments, BaseCommand):
    help = ("Review the TTLs, sizes and types of every key of a database (or of all databases), "
            "synchronously, and alert like the scheduled 'ttl review' task does when the findings "
            "cross ALERT_REVIEW_FINDINGS_THRESHOLD.")

    def add_arguments(self, parser):
        parser.add_argument("--database", help="Database record name (default: every database).")
        parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
        parser.add_argument("--batch", type=int, help="SCAN COUNT per batch.")
        parser.add_argument("--sample", type=int, metavar="N",
                            help="Review a random sample of about N keys (estimates with 95%% intervals) "
                                 "instead of every key.")

    def handle(self, *args, database=None, json=False, batch=None, sample=None, **options):
        if sample is not None and sample < 1:
            raise CommandError("--sample takes a positive number of keys.")
        databases = RedisDatabase.objects.all()
        if database:
            databases = databases.filter(name=database)
            if not databases:
                raise CommandError(f"No database record named {database!r}.")
        results, failures = [], []
        for record in databases:
            try:
                try:
                    result = review_requests.review_and_alert(
                        database=record, batch=batch, triggered_by="cli", sample=sample,
                        on_batch=self._progress if sys.stderr.isatty() else None)
                except review.ReviewBusy as busy:
                    if not _resumable(busy.run):
                        raise
                    # A review stopped by a Postgres outage, handed back with its checkpoint: continue it.
                    result = review_requests.review_and_alert(
                        database=record, run=busy.run, on_batch=self._progress if sys.stderr.isatty() else None)
                results.append(result)
                if result.status in ("failed", "partial"):  # refused, or a cluster primary not read
                    failures.append(f"{record.name}: {result.error}")
                for note in keyspace.limitations(keyspace.client_for(record)):  # what ran degraded, and why
                    self.stderr.write(f"{record.name}: {note}")
            except review.ReviewBusy as exc:
                failures.append(str(exc))
            except review.ReviewInterrupted as exc:
                if exc.postgres:  # resumable: not marked failed
                    failures.append(exc.resumable_message())
                    continue
                exc.run.fail(exc.reason)
                failures.append(f"{record.name}: {exc.reason}")
            except postgres.GONE as exc:
                failures.append(f"{record.name}: {postgres.describe_outage(exc)}")
        if json:
            payload = [r.as_json() for r in results]
            self.stdout.write(_json_dumps(payload[0] if database and payload else payload))
        else:
            for result in results:
                if result.status == "failed":
                    continue  # said once, in the error below
                if result.sampled:
                    estimates = result.estimates()
                    counts = ", ".join(f"{kind} ≈{estimates[kind].value} ({estimates[kind].low}–{estimates[kind].high})"
                                       for kind in FINDINGS)
                    label = f"sampled {result.keys_scanned} of {result.population} keys"
                else:
                    counts = ", ".join(f"{kind} {result.findings[kind]}" for kind in FINDINGS)
                    label = f"{result.keys_scanned} keys"
                self.stdout.write(f"{result.database}: {label} ({result.foreign_keys} foreign), "
                                  f"{counts}; {result.commands} requests, {result.billed_commands} billed commands "
                                  f"≈ ${result.estimated_cost_usd:.4f} in {result.duration_s:.2f}s")
        if failures:
            raise CommandError("; ".join(failures))

    def _progress(self, tally):
        if tally.batches % 50 == 0:
            self.stderr.write(f"\r{tally.keys_scanned} keys reviewed…", ending="")


def _resumable(run):
    """A review with a checkpoint that no worker holds: handed back (queued) after an
    interruption, or running with its lease lapsed."""
    if run.sampled or not run.has_checkpoint():
        return False
    lease = timezone.now() - timedelta(seconds=settings.REVIEW_LEASE_SECONDS)
    return run.status == ReviewRun.QUEUED or (run.heartbeat_at is None or run.heartbeat_at < lease)


def _json_dumps(data):
    return json.dumps(data, indent=2)
