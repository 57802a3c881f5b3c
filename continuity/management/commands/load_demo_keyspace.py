from django.core.management.base import BaseCommand, CommandError

from continuity import demo, keyspace
from dashboard.models import RedisDatabase


class Command(BaseCommand):
    help = "Write a small realistic Lucia keyspace (with some violations) into a monitored database."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="lucia")
        parser.add_argument("--keys", type=int, default=3000)
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, database, keys, seed, **options):
        try:
            record = RedisDatabase.objects.get(name=database)
            client = keyspace.client_for(record, write=True)
            written = demo.write_keyspace(client, demo.lucia_keyspace(keys, seed=seed, violation_rate=0.01,
                                                                      prefix=record.key_prefix.encode()))
        except RedisDatabase.DoesNotExist:
            raise CommandError(f"No database record named {database!r}; run seed_runbook first.") from None
        except Exception as exc:  # noqa: BLE001
            raise CommandError(keyspace.describe(exc)) from exc
        self.stdout.write(f"load_demo_keyspace: wrote {written} keys into {database}.")
