"""Whole-keyspace streaming for reviews: SCAN batches and their metadata, with what each
batch cost counted three ways (`continuity.billing.Cost`: requests sent, commands billed, writes).

A batch's metadata travels as one *flat* list, `[key, pttl, type, memory, key, …]`:
pttl -1 = no expiry, -2 = the key vanished between SCAN and the lookup; type is the raw
bytes TYPE reply, b"" where it was not read; memory is MEMORY USAGE, -1 where it was not
read or the server refuses MEMORY. That is the script's reply as hiredis parses it, used
as it is: a review handles millions of keys, and building a tuple or an object per key
cost more than the counting itself.

What is read per key is what the namespace policies need (`Needs`): PTTL always, TYPE
only where a namespace expects a type, MEMORY USAGE where one has a size limit (or, on a
self-hosted server, always: it costs little there and gives the per-namespace bytes and the
top keys). Each read is one billed command on Upstash.

Two strategies (chosen per provider by `operations.review.plan`):
- `scan_script`: SCAN inside the script, then the reads, one command per batch. Fastest,
  but the script touches keys it does not declare: on Upstash that runs under the global
  lock. The default for self-hosted Redis.
- `declared_keys`: SCAN from the client, then `meta`'s script over the batch's keys, which
  on a standalone server declares them (Upstash locks only those keys). The same billed
  commands (SCAN and EVALSHA are billed once each either way), one more round trip per
  batch. The default for Upstash. On a Redis Cluster node the keys go undeclared
  (`nodes.Node.declares_keys`), since declared keys must share one hash slot there.
Where scripting is refused, a pipeline of per-key commands reads the batch instead.

Every function here takes a `nodes.Node`: a standalone server or one primary of a cluster
are read the same way.
"""

from dataclasses import dataclass

import redis

from continuity.billing import Cost
from continuity.keyspace import capabilities, meta
from continuity.keyspace.scripts import Script

VANISHED = -2  # pttl of a key gone between SCAN and the lookup
NO_EXPIRY = -1  # pttl of a key without an expiry
UNKNOWN_MEMORY = -1  # memory where MEMORY USAGE was not read or is refused
SCAN_SCRIPT, DECLARED_KEYS = "scan_script", "declared_keys"


@dataclass(frozen=True)
class Needs:
    """What to read per key besides PTTL."""

    type: bool = True
    memory: bool = True

    @property
    def flags(self):
        return (1 if self.type else 0, 1 if self.memory else 0)


@dataclass(frozen=True)
class Fetched:
    """A SCAN batch: the next cursor (0 = done), how many keys SCAN returned, how many of
    them are outside `prefix` (only counted), the flat metadata of the others (see the
    module docstring), and what the batch cost: requests sent, commands billed."""

    cursor: int
    scanned: int
    foreign: int
    rows: list
    commands: int
    billed: int


# One command per batch: SCAN inside the script, then PTTL (and TYPE, MEMORY USAGE where
# ARGV[4], ARGV[5] ask) of each key under the prefix (ARGV[3]); keys outside it are only
# counted. Returns a flat array {next cursor, foreign count, key, pttl, type, memory, …}:
# no per-key tables, and the keys are not sent back and forth between SCAN and the reads.
# (Keys are not declared in KEYS: this is a whole-keyspace read on a single node.)
# MEMORY USAGE is a plain call here (pcall costs more per key): where MEMORY is refused
# the script fails as a whole and `fetch_batch` falls back to the declared-keys path.
# Measured on 1M keys (Redis 7.0, `INFO commandstats`): SCAN ≈ 1.3 µs per key, then each
# redis.call ≈ 1.2–1.4 µs per key (mostly the scripting layer's per-call overhead, not
# the command), building the reply ≈ 0.5 µs.
_SCAN_LUA = """
local call = redis.call
local res = call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local keys = res[2]
local prefix = ARGV[3]
local with_type, with_memory = ARGV[4] ~= '0', ARGV[5] ~= '0'
local plen = #prefix
local sub = string.sub
local out = {res[1], 0}
local n = 2
local foreign = 0
for i = 1, #keys do
  local key = keys[i]
  if sub(key, 1, plen) ~= prefix then
    foreign = foreign + 1
  else
    local pttl = call('PTTL', key)
    if pttl == -2 then
      out[n+1] = key; out[n+2] = -2; out[n+3] = 'none'; out[n+4] = -2
    else
      out[n+1] = key; out[n+2] = pttl
      if with_type then out[n+3] = call('TYPE', key)['ok'] else out[n+3] = '' end
      if with_memory then out[n+4] = call('MEMORY', 'USAGE', key) else out[n+4] = -1 end
    end
    n = n + 4
  end
end
out[2] = foreign
return out
"""
SCAN_SCRIPT_RUN = Script(_SCAN_LUA, read_only=True)


def _read_calls(rows, needs):
    """Commands the scan script ran for the flat `rows`: PTTL per key, and TYPE and MEMORY
    USAGE (as asked) per key that still existed."""
    keys = len(rows) // 4
    present = keys - rows[1::4].count(VANISHED)
    return keys + present * (needs.type + needs.memory)


def _from_reply(reply, needs, sent, billed):
    """A Fetched from the scan script's reply; `billed` already counts the requests."""
    rows = reply[2:]
    foreign = reply[1]
    # +1: the SCAN inside the script.
    return Fetched(int(reply[0]), len(rows) // 4 + foreign, foreign, rows, sent, billed + 1 + _read_calls(rows, needs))


def scan_script_batch(node, cursor, *, count, prefix, needs=Needs(), cost=None):
    """One SCAN batch with its metadata in a single EVALSHA (see `_SCAN_LUA`)."""
    cost = Cost() if cost is None else cost
    reply = SCAN_SCRIPT_RUN.run(node.client, (), [cursor, count, prefix, *needs.flags], cost=cost)
    return _from_reply(reply, needs, cost.sent, cost.billed)


def metadata_rows(node, keys, needs):
    """(flat rows, requests sent, commands billed) for `keys`: `meta`'s metadata script
    over the keys where scripting is allowed, else a per-key pipeline."""
    if not keys:
        return [], 0, 0
    caps = capabilities.of(node.client)
    cost = Cost()
    if caps.script is not False:
        try:
            replies = meta.META_SCRIPT.run(node.client, keys, needs.flags, cost=cost, declare=node.declares_keys)
        except redis.ResponseError as exc:
            if not capabilities.refused(exc):
                raise
            caps.script = False
        else:
            caps.script = True
            rows = []
            for key, (pttl, kind, memory) in zip(keys, replies):
                rows += (key, pttl, kind, UNKNOWN_MEMORY if pttl == VANISHED else memory)
            if needs.memory and any(memory == UNKNOWN_MEMORY and pttl != VANISHED for pttl, _kind, memory in replies):
                caps.memory = False  # MEMORY USAGE refused inside the script
            return rows, cost.sent, cost.billed + meta.script_calls(replies, needs.type)
    rows, sent, billed = pipeline_rows(node.client, keys, needs)
    return rows, cost.sent + sent, cost.billed + billed


def pipeline_rows(client, keys, needs):
    """(flat rows, commands sent, commands billed) for `keys` from one pipeline of per-key
    commands: PTTL, and TYPE and MEMORY USAGE where `needs` asks (where scripting is
    refused). A refused MEMORY USAGE is sent, not executed (not billed): sizes are then
    unknown (`capabilities.memory` False)."""
    if not keys:
        return [], 0, 0
    caps = capabilities.of(client)
    with_memory = needs.memory and caps.memory is not False
    step = 1 + needs.type + with_memory
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
        if needs.type:
            pipe.type(key)
        if with_memory:
            pipe.memory_usage(key)
    replies = pipe.execute(raise_on_error=False)
    rows, billed = [], 0
    for i, key in enumerate(keys):
        pttl = replies[i * step]
        if isinstance(pttl, Exception):
            raise pttl
        billed += 1
        kind, memory = b"", UNKNOWN_MEMORY
        if needs.type:
            kind = replies[i * step + 1]
            if isinstance(kind, Exception):
                raise kind
            billed += 1
            kind = kind if isinstance(kind, bytes) else str(kind).encode()
        if with_memory:
            answer = replies[i * step + step - 1]
            if isinstance(answer, Exception):
                if not capabilities.refused(answer):
                    raise answer
                caps.memory = False
            else:
                billed += 1
                memory = UNKNOWN_MEMORY if answer is None else answer
        if pttl == VANISHED:
            rows += (key, VANISHED, b"none", UNKNOWN_MEMORY)
        else:
            rows += (key, pttl, kind, memory)
    return rows, len(keys) * step, billed


def _two_step_batch(node, cursor, *, count, prefix, needs):
    """SCAN, then the metadata of the keys under `prefix`."""
    next_cursor, keys = node.client.scan(cursor=cursor, count=count)
    ours = [key for key in keys if key.startswith(prefix)]
    rows, sent, billed = metadata_rows(node, ours, needs)
    return Fetched(int(next_cursor), len(keys), len(keys) - len(ours), rows, 1 + sent, 1 + billed)


def fetch_batch(node, cursor, *, count, prefix, needs=Needs(), strategy=SCAN_SCRIPT):
    """One batch, the cheapest way this server and strategy allow: the scan script (one
    request), else SCAN + the metadata script (two), else SCAN + a per-key pipeline."""
    caps = capabilities.of(node.client)
    refused = Cost()  # a refused scan script is billed all the same
    if strategy == SCAN_SCRIPT and caps.scan_script is not False and caps.script is not False:
        try:
            fetched = scan_script_batch(node, cursor, count=count, prefix=prefix, needs=needs, cost=refused)
            caps.scan_script = True
            return fetched
        except redis.ResponseError as exc:
            if not capabilities.refused(exc):
                raise
            caps.scan_script = False
    fetched = _two_step_batch(node, cursor, count=count, prefix=prefix, needs=needs)
    return Fetched(fetched.cursor, fetched.scanned, fetched.foreign, fetched.rows, fetched.commands + refused.sent,
                   fetched.billed + refused.billed)


def batches(node, *, cursor, count, prefix, needs=Needs(), strategy=SCAN_SCRIPT, sizer=None, pause_every=0,
            counted=0):
    """Yield Fetched batches of `node` in SCAN order from `cursor` until the scan is complete.

    `sizer` (optional) gives the SCAN COUNT of each next request from what the previous
    batches took (see `BatchSizer`); without it every batch asks for `count`.

    With the scan script, the request for the next batch is sent *before* the current
    batch is handed out (its cursor is the first thing in the reply), so Redis runs the
    next script while this process counts the current one: one connection, no thread, at
    most two batches alive. When the consumer stops early (a cancelled review, an error),
    the request already in flight is read and counted (`Stopped`), so what it cost is still
    billed to the run. Every `pause_every`-th batch (counting the `counted` batches the
    consumer already has) is handed out with nothing in flight (the
    consumer checkpoints there: a worker that dies right after has nothing read and
    unrecorded). The other paths fetch one batch at a time."""
    first = fetch_batch(node, cursor, count=count, prefix=prefix, needs=needs, strategy=strategy)
    if strategy != SCAN_SCRIPT or capabilities.of(node.client).scan_script is not True or first.cursor == 0:
        fetched = first
        while True:
            try:
                yield fetched
            except Stopped:  # nothing in flight on this path
                return
            if fetched.cursor == 0:
                return
            next_count = sizer.next_count(fetched) if sizer else count
            fetched = fetch_batch(node, fetched.cursor, count=next_count, prefix=prefix, needs=needs,
                                  strategy=strategy)
    yield from _one_ahead(node, first, count=count, prefix=prefix, needs=needs, sizer=sizer, pause_every=pause_every,
                          counted=counted)


class Stopped(Exception):
    """Thrown into `batches` by a consumer that stops early: its `cost` receives the
    request already in flight once it is read."""

    def __init__(self, cost):
        super().__init__("stopped")
        self.cost = cost


def _one_ahead(node, first, *, count, prefix, needs, sizer, pause_every, counted):
    """`batches` on the scan-script path: one connection of the node's pool, with at
    most one request in flight."""
    client = node.client
    pool = client.connection_pool
    conn = pool.get_connection()
    in_flight = None
    handed = counted
    try:
        fetched = first
        while fetched.cursor != 0:
            next_count = sizer.next_count(fetched) if sizer else count
            args = (fetched.cursor, next_count, prefix, *needs.flags)
            handed += 1
            if pause_every and handed % pause_every == 0:  # a checkpoint batch: nothing in flight
                try:
                    yield fetched
                except Stopped:
                    return
                cost = Cost()
                fetched = _from_reply(SCAN_SCRIPT_RUN.run(client, (), args, cost=cost), needs, cost.sent, cost.billed)
                continue
            SCAN_SCRIPT_RUN.send(conn, client, (), args)
            in_flight = args
            try:
                yield fetched  # counted while Redis computes the next batch
            except Stopped as stop:  # the consumer stops: read (and bill) the request in flight
                in_flight = None
                cost = Cost()
                reply = SCAN_SCRIPT_RUN.receive(conn, client, (), args, cost=cost)
                spent = _from_reply(reply, needs, cost.sent, cost.billed)
                stop.cost.add(sent=spent.commands, billed=spent.billed)
                return
            in_flight = None
            cost = Cost()
            fetched = _from_reply(SCAN_SCRIPT_RUN.receive(conn, client, (), args, cost=cost), needs, cost.sent,
                                  cost.billed)
        try:
            yield fetched
        except Stopped:
            return
    finally:
        if in_flight is not None:  # closed without a Stopped (an error): the reply is dropped
            try:
                conn.read_response()
            except (redis.RedisError, OSError):
                conn.disconnect()
        pool.release(conn)


class BatchSizer:
    """SCAN COUNT per batch such that one script call stays within a time budget.

    Redis's time per key is estimated from `INFO commandstats` (free on Upstash): the
    scripts' usec over the keys they handled, re-read after batches 1, 2 and 4, then
    every `every` batches. The next
    COUNT is half the budget / time per key, at least `low` and at most `start` (the configured
    batch: the sizer only ever shrinks a batch to keep within the budget)."""

    def __init__(self, client, *, budget_ms, start, low=50, every=16, commands=("evalsha", "evalsha_ro")):
        self.client, self.budget_us, self.count = client, budget_ms * 1000, start
        self.low, self.high, self.every, self.commands = min(low, start), start, every, commands
        self.batches = self.keys = 0
        self.base = self._usec()
        self.us_per_key = None

    def _usec(self):
        """The scripts' total usec so far (0 before the first call), None where INFO is refused."""
        try:
            stats = self.client.info("commandstats")
        except redis.RedisError:
            return None
        return sum(stats.get(f"cmdstat_{command}", {}).get("usec", 0) for command in self.commands)

    def next_count(self, fetched):
        self.batches += 1
        self.keys += fetched.scanned
        due = self.batches in (1, 2, 4) or self.batches % self.every == 0
        if due and self.base is not None and self.keys:
            now = self._usec()
            if now is not None:
                # Other clients' scripts count too: an overestimate, so the budget holds.
                self.us_per_key = max((now - self.base) / self.keys, 0.1)
                # Aim the average call at half the budget: on a contended machine the p99
                # call runs two to three times the average (docs/benchmarks.md).
                self.count = int(min(max(self.budget_us / 2 / self.us_per_key, self.low), self.high))
                self.base, self.keys = now, 0
        return self.count


def sample_keys(client, size, *, window=100, rng=None):
    """About `size` keys drawn at random, and the SCAN calls it took.

    Random SCAN cursors, not RANDOMKEY: a SCAN from a random cursor starts at a random
    bucket of the hash table and returns the keys of the next `window` or so buckets. Keys
    are spread over buckets by their hash, so each key has about the same chance to be in
    the window, and one billed command brings ~`window` keys where RANDOMKEY brings one
    (2,000 RANDOMKEYs would be 2,000 billed commands; this is ~20). Keys sharing a bucket
    come together: with Redis's load factor near 1 that correlation is small. Windows that
    overlap are merged; an over-full draw is cut down at random."""
    import random

    rng = rng or random.SystemRandom()
    seen, calls = set(), 0
    limit = 4 * (size // window) + 20
    while len(seen) < size and calls < limit:
        _, keys = client.scan(cursor=rng.getrandbits(63), count=window)
        calls += 1
        seen.update(keys)
    keys = list(seen)
    if len(keys) > size:
        keys = rng.sample(keys, size)
    return keys, calls


def sample_batches(node, *, size, prefix, needs=Needs(), chunk=1000):
    """Fetched batches of a random sample of about `size` keys of `node` (see
    `sample_keys`), their metadata read by `meta`'s script over the sample's keys (known
    keys: no global lock on Upstash)."""
    keys, calls = sample_keys(node.client, size)
    scans = calls
    for start in range(0, max(len(keys), 1), chunk):
        part = keys[start:start + chunk]
        ours = [key for key in part if key.startswith(prefix)]
        rows, sent, billed = metadata_rows(node, ours, needs)
        yield Fetched(0, len(part), len(part) - len(ours), rows, scans + sent, scans + billed)
        scans = 0
