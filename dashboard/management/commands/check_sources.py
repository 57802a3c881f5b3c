import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.command_scanning import RefuseSecretArguments
from dashboard.models import RedisDatabase, Secret, SecretCheck, UpstashLink
from dashboard.sources import FAILURES
from dashboard.sources import databases as upstash_checks
from dashboard.sources import secrets as onepassword_checks

SOURCES = ("1password", "upstash")


def _time(value):
    return value.isoformat() if value else None


class Command(RefuseSecretArguments, BaseCommand):
    help = ("Check the records against their sources of truth now, live: each secret's reference against 1Password "
            "(metadata only) and each linked database record against the Upstash account (read only). The twin of "
            "the daily '1password check' and hourly 'upstash check' beat jobs. Exits 1 when a source could not "
            "be asked.")

    def add_arguments(self, parser):
        parser.add_argument("--only", choices=SOURCES, help="Check one source.")
        parser.add_argument("--secret", help="Check this secret only (its name).")
        parser.add_argument("--database", help="Check this database record only (its name).")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of lines.")

    def handle(self, *args, **options):
        report = {}
        if options["only"] in (None, "1password") and not options["database"]:
            secrets = Secret.objects.filter(name=options["secret"]) if options["secret"] else None
            if secrets is not None and not secrets.exists():
                raise CommandError("No secret by that name.")
            report["1password"] = self._secrets(onepassword_checks.check_secrets(secrets=secrets))
        if options["only"] in (None, "upstash") and not options["secret"]:
            databases = RedisDatabase.objects.filter(name=options["database"]) if options["database"] else None
            if databases is not None and not databases.exists():
                raise CommandError("No database record by that name.")
            report["upstash"] = self._databases(upstash_checks.check_databases(databases=databases))
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self._print(report)
        failed = [name for name, part in report.items() if part["failure"]]
        if failed:
            raise CommandError(f"Not verified: {', '.join(failed)} could not be asked "
                               f"({'; '.join(FAILURES[report[name]['failure']] for name in failed)}).")

    def _secrets(self, result):
        out = {"configured": result.configured, "failure": result.failure, "secrets": []}
        checks = SecretCheck.objects.select_related("secret").filter(secret__name__in=list(result.states))
        for check in checks.order_by("secret__name"):
            state = check.state(onepassword_checks.grace())
            out["secrets"].append({
                "name": check.secret.name, "state": SecretCheck.STATE_LABELS.get(state), "item_version": check.item_version,
                "item_changed_at": _time(check.item_changed_at), "last_rotated": _time(check.secret.last_rotated),
                "checked_at": _time(check.checked_at), "unverified_since": _time(check.unverified_since),
                "failure": check.failure or None})
        return out

    def _databases(self, result):
        out = {"configured": result.configured, "failure": result.failure, "databases": []}
        links = UpstashLink.objects.select_related("database").filter(database__name__in=list(result.found))
        for link in links.order_by("database__name"):
            projection = link.projection(settings.REDIS_PRICE_PER_100K_COMMANDS)
            out["databases"].append({
                "name": link.database.name, "upstash_id": link.upstash_id, "found": link.found,
                "drift": [{"setting": d.field, "record": d.recorded, "upstash": d.upstash} for d in link.drift()],
                "anomalies": link.anomalies, "monthly_commands": link.monthly_commands,
                "projected_commands": projection.commands if projection else None,
                "over_budget": projection.over if projection else None,
                "checked_at": _time(link.checked_at), "unverified_since": _time(link.unverified_since),
                "failure": link.failure or None})
        return out

    def _print(self, report):
        for source, part in report.items():
            if not part["configured"]:
                self.stdout.write(f"{source}: not configured (see README, 'Sources of truth').")
                continue
            rows = part.get("secrets", part.get("databases"))
            self.stdout.write(f"{source}: {len(rows)} checked" + (f"; could not be asked: {FAILURES[part['failure']]}"
                                                                 if part["failure"] else ""))
            for row in rows:
                if source == "1password":
                    detail = row["state"] or "not checked"
                    if row["item_version"] is not None:
                        detail += f" (item version {row['item_version']}, changed {row['item_changed_at']})"
                else:
                    found = {True: "found", False: "no such Upstash database", None: "not checked"}[row["found"]]
                    drift = ", ".join(d["setting"] for d in row["drift"])
                    detail = found + (f"; drift: {drift}" if drift else "")
                    if row["monthly_commands"] is not None:
                        detail += f"; {row['monthly_commands']:,} commands this month"
                if row["unverified_since"]:
                    detail += f"; unverified since {row['unverified_since']}"
                self.stdout.write(f"  {row['name']}: {detail}")
