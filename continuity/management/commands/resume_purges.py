"""manage.py resume_purges: the command twin of `resume_purges_task` — finish purges
whose worker died (no checkpoint for longer than PURGE_LEASE_SECONDS)."""

from django.core.management.base import BaseCommand, CommandError

from continuity.operations import purge


class Command(BaseCommand):
    help = "Resume running purges whose worker stopped checkpointing, synchronously."

    def handle(self, *args, **options):
        for run_id in purge.stalled_purges():
            try:
                result = purge.execute_purge(run_id=run_id, source="cli")
            except purge.PurgeStopped as exc:  # Postgres left again: still resumable
                raise CommandError(str(exc)) from None
            self.stdout.write(f"purge #{run_id}: {result.status}, matched {result.matched}, done {result.done}, "
                              f"skipped {result.skipped}")
