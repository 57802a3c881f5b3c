"""What a job costs where every command is billed (Upstash), counted as Redis executes it.

Upstash bills every command it runs, each `redis.call` inside a script included, plus the
EVAL/EVALSHA itself; AUTH, HELLO, SELECT, COMMAND, CONFIG, INFO, PING, RESET and QUIT are
free; on a Global database each *write* is billed once more per read region. So a job
counts three figures per request: what it sent, what Redis executed for it (`billed`), and
how many of those were writes. The scripts' internal calls are known exactly from their
replies (each module says how); tests hold the total to the `INFO commandstats` delta of a
private redis-server.
"""

from dataclasses import dataclass

from django.conf import settings

FREE = frozenset(("auth", "hello", "select", "command", "config", "info", "ping", "reset", "quit"))


@dataclass
class Cost:
    """Requests sent, commands billed (executed, script-internal calls included, free ones
    left out) and, of those, writes."""

    sent: int = 0
    billed: int = 0
    writes: int = 0

    def add(self, sent=0, billed=0, writes=0):
        self.sent += sent
        self.billed += billed
        self.writes += writes
        return self

    def __add__(self, other):
        return Cost(self.sent + other.sent, self.billed + other.billed, self.writes + other.writes)

    def total(self, read_regions=0):
        """Billed commands on a database with `read_regions` read regions."""
        return self.billed + self.writes * read_regions


def estimated_cost_usd(billed_commands):
    """Pay-as-you-go price of `billed_commands` (REDIS_PRICE_PER_100K_COMMANDS, USD)."""
    if billed_commands is None:
        return None
    return round(billed_commands * settings.REDIS_PRICE_PER_100K_COMMANDS / 100_000, 6)

