"""A gentle background writer for the local demo: a few writes a second through the
continuity store adapter, creating short-lived keys, refreshing some and expiring others,
so the dashboard shows live, expiring keys. Stops cleanly on SIGINT/SIGTERM."""

import random
import signal
import threading
import time
from collections import deque

from django.core.management.base import BaseCommand, CommandError

from continuity.store import ContinuityStore, PolicyViolation
from dashboard.command_scanning import RefuseSecretArguments
from dashboard.models import RedisDatabase

# Short TTLs inside each seeded policy band, so keys visibly count down and expire.
TTLS = {"session": (900, 1200), "distress": (60, 300), "focus": (60, 600), "action": (20, 120), "rate": (10, 60)}


class Command(RefuseSecretArguments, BaseCommand):
    help = "Write live, expiring continuity keys through the store adapter until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="lucia")
        parser.add_argument("--rate", type=float, default=3.0, help="writes per second")
        parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, database, rate, duration, seed, **options):
        try:
            store = ContinuityStore(RedisDatabase.objects.get(name=database), retry_seconds=5)
        except RedisDatabase.DoesNotExist:
            raise CommandError(f"No database record named {database!r}; run seed_runbook first.") from None
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        rng = random.Random(seed)
        recent = {name: deque(maxlen=50) for name in store.policies}
        counts = {"put": 0, "refresh": 0, "expire": 0, "refused": 0}
        deadline = None if duration is None else time.monotonic() + duration
        self.stdout.write(f"demo_writer: writing ~{rate:g}/s into {database}; Ctrl-C to stop.")
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                self._step(store, rng, recent, counts)
                stop.wait(1 / rate)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            store.close()
        state = " (degraded: Redis unreachable)" if store.degraded else ""
        self.stdout.write("demo_writer: stopped after {put} writes, {refresh} refreshes, {expire} expiries, "
                          "{refused} refused{state}.".format(state=state, **counts))

    def _step(self, store, rng, recent, counts):
        name = rng.choice([n for n in store.policies if n in TTLS] or list(store.policies))
        low, high = TTLS.get(name, (30, 300))
        roll = rng.random()
        try:
            if roll < 0.15 and recent[name]:
                store.touch(name, rng.choice(recent[name]), ttl_seconds=rng.randint(low, high))
                counts["refresh"] += 1
            elif roll < 0.25 and recent[name]:
                store.delete(name, recent[name].popleft())
                counts["expire"] += 1
            else:
                ident = f"demo-{rng.randrange(16 ** 8):08x}"
                store.put(name, ident, {"demo": True, "at": round(time.time(), 1)}, ttl_seconds=rng.randint(low, high))
                recent[name].append(ident)
                counts["put"] += 1
        except PolicyViolation:
            counts["refused"] += 1  # an operator tightened the policy meanwhile
