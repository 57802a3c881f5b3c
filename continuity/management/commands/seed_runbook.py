from django.core.management.base import BaseCommand

from continuity import seed


class Command(BaseCommand):
    help = "Load the runbook's defaults. Idempotent; never overwrites what an operator edited."

    def handle(self, *args, **options):
        created = seed.seed_all()
        summary = ", ".join(f"{count} {name}" for name, count in created.items())
        self.stdout.write(f"seed_runbook: created {summary}.")
