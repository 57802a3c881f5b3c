"""manage.py policy_purge: the command twin of the scheduled `policy_purge_task`."""

import json
import os

from django.core.management.base import BaseCommand, CommandError

from continuity import keyspace
from continuity.operations import purge
from dashboard.command_scanning import RefuseSecretArguments
from dashboard.models import RedisDatabase


class Command(RefuseSecretArguments, BaseCommand):
    help = ("Apply each namespace's violation action (report / apply the max TTL / delete) to its keys without "
            "TTL or above the max TTL, one audited purge run per acting namespace. --namespace and --prefix limit it "
            "to that scope (their intersection); keys outside it are neither touched nor counted.")

    def add_arguments(self, parser):
        parser.add_argument("--database", help="one database (default: all)")
        parser.add_argument("--namespace", help="only this namespace (by name); needs --database")
        parser.add_argument("--prefix", help="only keys under this literal prefix; needs --database")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, database=None, namespace=None, prefix=None, **options):
        databases = RedisDatabase.objects.all()
        if (namespace or prefix) and not database:
            raise CommandError("A scope (--namespace, --prefix) belongs to one database: give --database.")
        if database:
            databases = databases.filter(name=database)
            if not databases:
                raise CommandError(f"No database record named {database!r}.")
        out = []
        for record in databases:
            try:
                outcome = purge.policy_purge(database=record, source="cli", namespace=namespace,
                                             prefix=os.fsencode(prefix) if prefix else None)
            except purge.PurgeRefused as exc:
                raise CommandError(f"Refused: {exc}") from None
            except Exception as exc:  # noqa: BLE001
                raise CommandError(f"{record.name}: {keyspace.describe_error(exc)}") from exc
            out.append({"database": record.name, "skipped": outcome.skipped_reason, "reported": outcome.reported,
                        "refused": outcome.refused, "runs": [r.run.summary() for r in outcome.runs]})
        self.stdout.write(json.dumps(out) if options["json"] else "\n".join(
            (f"{o['database']}: {len(o['runs'])} runs, reported {o['reported']} {o['skipped']}".rstrip()
             + "".join(f"\n  refused {prefix}: {why}" for prefix, why in o["refused"].items())) for o in out))

