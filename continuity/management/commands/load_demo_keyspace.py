from django.core.management.base import BaseCommand, CommandError

from continuity import demo, keyspace
from continuity.store import ContinuityStore
from dashboard.command_scanning import RefuseSecretArguments
from dashboard.models import RedisDatabase


class Command(RefuseSecretArguments, BaseCommand):
    help = "Write a small realistic Lucia keyspace (with some violations) into a monitored database."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="lucia")
        parser.add_argument("--keys", type=int, default=3000)
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, database, keys, seed, **options):
        try:
            record = RedisDatabase.objects.get(name=database)
            client = keyspace.client_for(record, write=True)
            store = ContinuityStore(record)
            specs = demo.lucia_keyspace(keys, seed=seed, violation_rate=0.01, prefix=record.key_prefix.encode())
            adapted, raw = demo.write_demo_keyspace(store, client, specs)
            if store.degraded:
                raise CommandError("Redis became unreachable while loading; the demo keyspace is incomplete.")
            written = adapted + raw
        except CommandError:
            raise
        except RedisDatabase.DoesNotExist:
            raise CommandError(f"No database record named {database!r}; run seed_runbook first.") from None
        except Exception as exc:  # noqa: BLE001
            raise CommandError(keyspace.describe_error(exc)) from exc
        self.stdout.write(f"load_demo_keyspace: wrote {written} keys into {database} "
                          f"({adapted} through the store adapter, {raw} deliberate violations raw).")
