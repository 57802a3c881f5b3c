"""manage.py clean_up_previews: the command twin of `clean_up_previews_task` — delete
purge previews nobody confirmed within PURGE_PREVIEW_RETENTION_SECONDS."""

from django.core.management.base import BaseCommand

from continuity.operations import purge
from dashboard.command_scanning import RefuseSecretArguments


class Command(RefuseSecretArguments, BaseCommand):
    help = "Delete purge previews nobody confirmed (and their stored key lists)."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=int, default=None, metavar="SECONDS",
                            help="age of the previews to delete (default: PURGE_PREVIEW_RETENTION_SECONDS)")

    def handle(self, *args, **options):
        count = purge.clean_up_previews(older_than_seconds=options["older_than"])
        self.stdout.write(f"deleted {count} unconfirmed purge preview(s)")
