from django.core.management.base import BaseCommand

from continuity.models import KeyspaceCheck
from continuity.operations import keyspace_watch


class Command(BaseCommand):
    help = ("Look at every monitored Redis (keys over all primaries, restarts, persistence) and alert once when "
            "one lost keys or restarted: the twin of the 'keyspace watch' beat task. Exits 1 when one did not "
            "answer or lost keys.")

    def handle(self, *args, **options):
        checks = keyspace_watch.watch_keyspaces(via=KeyspaceCheck.COMMAND)
        for check in checks:
            if not check.ok:
                state = f"not read: {check.error}"
            else:
                state = f"{check.keys:,} keys" if check.keys is not None else "keys unknown"
                if check.persistence_off:
                    state += ", persistence off"
            self.stdout.write(f"{check.database.name}: {state}")
            if check.event:
                self.stdout.write(f"  {check.event}: {check.event_text}" + (" (alerted)" if check.alerted else ""))
        if any(not check.ok or check.event == KeyspaceCheck.LOST for check in checks):
            raise SystemExit(1)
