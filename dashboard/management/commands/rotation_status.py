import json

from django.core.management.base import BaseCommand
from django.utils import timezone

from dashboard.models import Secret


class Command(BaseCommand):
    help = "One row per secret: name, status, last_rotated, next_due."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print a JSON list instead of a table.")

    def handle(self, *args, **options):
        now = timezone.now()
        rows = []
        for secret in Secret.objects.sorted_by("next_due"):
            due = secret.next_due()
            rows.append({"name": secret.name, "status": secret.rotation_status(now),
                         "last_rotated": secret.last_rotated.isoformat() if secret.last_rotated else None,
                         "next_due": due.isoformat() if due else None})
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        width = max([len(r["name"]) for r in rows] + [4])
        self.stdout.write(f"{'NAME':<{width}}  {'STATUS':<13}  {'LAST ROTATED':<16}  NEXT DUE")
        for r in rows:
            last = r["last_rotated"][:16].replace("T", " ") if r["last_rotated"] else "never"
            due = r["next_due"][:10] if r["next_due"] else "-"
            self.stdout.write(f"{r['name']:<{width}}  {r['status']:<13}  {last:<16}  {due}")
