from django.core.management.base import BaseCommand

from dashboard import alerts


class Command(BaseCommand):
    help = "Alert once per secret rotation-status change (the twin of the daily 'rotation check' beat job)."

    def handle(self, *args, **options):
        result = alerts.check_rotations()
        for name, old, new in result.transitions:
            self.stdout.write(f"{name}: {old or 'unknown'} -> {new}")
        self.stdout.write(f"Checked {result.checked} secrets; {len(result.transitions)} changed; "
                          f"{result.queued} alerts queued.")
