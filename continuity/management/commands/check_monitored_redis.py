from django.core.management.base import BaseCommand

from continuity.operations import alerting


class Command(BaseCommand):
    help = ("Ping every monitored Redis and alert once when one stays unreachable (and once when it is "
            "back): the twin of the 'monitored redis check' beat task. Exits 1 when any is down.")

    def handle(self, *args, **options):
        checks = alerting.check_monitored_redis()
        for check in checks:
            state = "ok" if check.ok else f"unreachable since {check.down_since:%Y-%m-%d %H:%M:%S} UTC"
            self.stdout.write(f"{check.database}: {state}" + (f" (sent {check.event})" if check.event else ""))
        if any(not check.ok for check in checks):
            raise SystemExit(1)
