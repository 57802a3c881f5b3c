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

import contextlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
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
    closing: tuple = ()  # the last batch: the replies of `batches(closing=…)`, where they travelled with it


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
    rows, sent, billed, _ahead, _behind = read_metadata(node, keys, needs)
    return rows, sent, billed


def read_metadata(node, keys, needs, *, before=(), after=(), chunk=0, cost=None):
    """(flat rows, requests sent, commands billed, `before`'s replies, `after`'s replies) for
    `keys`, in one round trip with `before` commands ahead (counted: a page's SCAN) and `after`
    commands behind (free, not counted: the batch sizer's INFO). The metadata script reads
    `chunk` keys per call (0: all in one), else a per-key pipeline where scripting is refused.
    `cost` (a new Cost): receives the scripts' requests as they go, so that where the round
    trip raises (a NOSCRIPT, then a 429 for the reload) what Redis executed is still known."""
    if not keys and not before and not after:
        return [], 0, 0, [], []
    caps = capabilities.of(node.client)
    cost = Cost() if cost is None else cost
    if keys and caps.script is not False:
        size = chunk or len(keys)
        parts = [keys[start:start + size] for start in range(0, len(keys), size)]
        try:
            ahead, replies, behind = meta.META_SCRIPT.run_many(
                node.client, [(part, needs.flags) for part in parts], cost=cost, declare=node.declares_keys,
                before=before, after=after, inner=lambda answers: meta.script_calls(answers, needs.type))
        except redis.ResponseError as exc:
            if not capabilities.refused(exc):
                raise
            caps.script = False  # `before` ran: it is sent again (and counted again) below
        else:
            caps.script = True
            rows = []
            for part, answers in zip(parts, replies):
                for key, (pttl, kind, memory) in zip(part, answers):
                    rows += (key, pttl, kind, UNKNOWN_MEMORY if pttl == VANISHED else memory)
                if needs.memory and any(memory == UNKNOWN_MEMORY and pttl != VANISHED for pttl, _kind, memory in answers):
                    caps.memory = False  # MEMORY USAGE refused inside the script
            return rows, cost.sent, cost.billed, ahead, behind
    rows, sent, billed, ahead, behind = _pipeline_rows(node.client, keys, needs, before=before, after=after)
    return rows, cost.sent + sent, cost.billed + billed, ahead, behind


def pipeline_rows(client, keys, needs):
    """(flat rows, commands sent, commands billed) for `keys` from one pipeline of per-key
    commands: PTTL, and TYPE and MEMORY USAGE where `needs` asks (where scripting is
    refused). A refused MEMORY USAGE is sent, not executed (not billed): sizes are then
    unknown (`capabilities.memory` False)."""
    rows, sent, billed, _ahead, _behind = _pipeline_rows(client, keys, needs)
    return rows, sent, billed


def _pipeline_rows(client, keys, needs, *, before=(), after=()):
    """`pipeline_rows` with `before` commands ahead (counted; an error propagates) and
    `after` behind (free: neither counted nor raised), in the same round trip."""
    if not keys and not before and not after:
        return [], 0, 0, [], []
    caps = capabilities.of(client)
    with_memory = needs.memory and caps.memory is not False
    step = 1 + needs.type + with_memory
    pipe = client.pipeline(transaction=False)
    for entry in before:
        pipe.execute_command(*entry)
    for key in keys:
        pipe.pttl(key)
        if needs.type:
            pipe.type(key)
        if with_memory:
            pipe.memory_usage(key)
    for entry in after:
        pipe.execute_command(*entry)
    replies = pipe.execute(raise_on_error=False)
    ahead, behind = replies[:len(before)], replies[len(replies) - len(after):] if after else []
    replies = replies[len(before):len(replies) - len(after)]
    for answer in ahead:
        if isinstance(answer, Exception):
            raise answer
    rows, billed = [], len(before)
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
    return rows, len(before) + len(keys) * step, billed, ahead, behind


def batches(node, *, cursor, count, prefix, needs=Needs(), strategy=SCAN_SCRIPT, sizer=None, pause_every=0,
            counted=0, closing=(), failed=None):
    """Yield Fetched batches of `node` in SCAN order from `cursor` until the scan is complete.

    `sizer` (optional) gives the SCAN COUNT of each next request from what the previous
    batches took (see `BatchSizer`), and how many script calls' worth of keys one round trip
    should carry (`BatchSizer.calls_per_trip`); without it every batch asks for `count`.

    One round trip per batch, whichever the path:
    - the scan script (`SCAN_SCRIPT`, where allowed) while the link is fast: the request for
      the next batch is sent *before* the current batch is handed out (its cursor is the
      first thing in the reply), so Redis runs the next script while this process counts
      the current one (`_one_ahead`: one connection, no thread);
    - otherwise (`DECLARED_KEYS`, a refused scan script, or a link slow enough that a round
      trip costs more than Redis's work on a batch) SCAN from the client, and each round trip
      carries the next page's SCAN with the metadata of the current page (`_paged`); on a
      slow link a page holds several script calls' worth of keys, read by as many calls in
      the same round trip.

    When the consumer stops early (a cancelled review, an error), a request already in
    flight is read and counted (`Stopped`), so what it cost is still billed to the run. Every
    `pause_every`-th batch (counting the `counted` batches the consumer already has) is
    handed out with nothing in flight (the consumer checkpoints there: a worker that dies
    right after has nothing read and unrecorded; a page's SCAN already answered is in the
    batch's cost, and is read again on resume).

    `closing`: commands to send with the last page where the path allows (the SCAN from the
    client knows a page is the last before asking its metadata): their replies are in the
    last batch's `closing`, their cost in its figures; empty where they were not sent.

    `failed` (a Cost): receives what a round trip that raised had cost (a NOSCRIPT answered,
    then the reload refused): Redis executed it, though no batch carries it."""
    caps = capabilities.of(node.client)
    failed = Cost() if failed is None else failed
    refused = Cost()  # a refused scan script is billed all the same
    if strategy == SCAN_SCRIPT and caps.scan_script is not False and caps.script is not False:
        try:
            first = scan_script_batch(node, cursor, count=count, prefix=prefix, needs=needs, cost=refused)
        except (redis.RedisError, OSError) as exc:
            if not capabilities.refused(exc):
                failed.add(sent=refused.sent, billed=refused.billed)
                raise
            caps.scan_script = False
        else:
            caps.scan_script = True
            if first.cursor == 0:
                with contextlib.suppress(Stopped):
                    yield first
                return
            next_count = sizer.next_count(first) if sizer else count
            trip = sizer.calls_per_trip() if sizer else 1
            if trip <= 1:
                yield from _one_ahead(node, first, next_count=next_count, count=count, prefix=prefix, needs=needs,
                                      sizer=sizer, pause_every=pause_every, counted=counted, failed=failed)
                return
            try:  # a slow link: SCAN from the client, several script calls per round trip
                yield first
            except Stopped:
                return
            yield from _paged(node, cursor=first.cursor, count=next_count, prefix=prefix, needs=needs, sizer=sizer,
                              pause_every=pause_every, counted=counted + 1, failed=failed, trip=trip, closing=closing)
            return
    yield from _paged(node, cursor=cursor, count=count, prefix=prefix, needs=needs, sizer=sizer,
                      pause_every=pause_every, counted=counted, failed=failed, spent=refused, closing=closing)


class Stopped(Exception):
    """Thrown into `batches` by a consumer that stops early: its `cost` receives the
    request already in flight once it is read."""

    def __init__(self, cost):
        super().__init__("stopped")
        self.cost = cost


def _one_ahead(node, first, *, next_count, count, prefix, needs, sizer, pause_every, counted, failed):
    """`batches` on the scan-script path: one connection of the node's pool, with at
    most one request in flight."""
    client = node.client
    pool = client.connection_pool
    conn = pool.get_connection()
    in_flight = None
    handed = counted

    def read(call, args):  # a batch from `call`, what it cost known even where it raised
        cost = Cost()
        try:
            return _from_reply(call(client=client, keys=(), args=args, cost=cost), needs, cost.sent, cost.billed)
        except (redis.RedisError, OSError):
            failed.add(sent=cost.sent, billed=cost.billed)
            raise

    def receive(**arguments):
        return SCAN_SCRIPT_RUN.receive(conn, **arguments)
    try:
        fetched = first
        while fetched.cursor != 0:
            if next_count is None:
                next_count = sizer.next_count(fetched) if sizer else count
            args = (fetched.cursor, next_count, prefix, *needs.flags)
            next_count = None
            handed += 1
            if pause_every and handed % pause_every == 0:  # a checkpoint batch: nothing in flight
                try:
                    yield fetched
                except Stopped:
                    return
                fetched = read(SCAN_SCRIPT_RUN.run, args)
                continue
            SCAN_SCRIPT_RUN.send(conn, client, (), args)
            in_flight = args
            try:
                yield fetched  # counted while Redis computes the next batch
            except Stopped as stop:  # the consumer stops: read (and bill) the request in flight
                in_flight = None
                spent = read(receive, args)
                stop.cost.add(sent=spent.commands, billed=spent.billed)
                return
            in_flight = None
            fetched = read(receive, args)
        try:
            yield fetched
        except Stopped:
            return
    finally:
        if in_flight is not None:  # closed without a Stopped (an error): read, counted in `failed`, dropped
            try:
                late = read(receive, in_flight)
            except (redis.RedisError, OSError):
                conn.disconnect()
            else:
                failed.add(sent=late.commands, billed=late.billed)
        pool.release(conn)


_INFO = ("INFO", "commandstats")


@dataclass(frozen=True)
class _Page:
    """One round trip of `_paged`: the metadata of a page's keys under the prefix, what the
    trip cost, and the replies of the SCAN and the INFO it carried (None where not sent), or
    of the closing commands (the last page)."""

    rows: list
    sent: int
    billed: int
    scan: object
    info: object
    closing: tuple = ()


def _trip(node, keys, *, prefix, needs, scan, info, chunk, closing=(), cost=None):
    """One round trip: `scan` (the next page's SCAN; None on the last page, which carries
    `closing` instead), the metadata of `keys` under `prefix` (`chunk` keys per script call),
    and the sizer's INFO when `info`. `cost`: see `read_metadata`."""
    ours = [key for key in keys if key.startswith(prefix)]
    tail = [] if scan else list(closing)  # behind the scripts: an error there fails nothing
    rows, sent, billed, ahead, behind = read_metadata(node, ours, needs, before=[scan] if scan else (),
                                                      after=tail + ([_INFO] if info else []), chunk=chunk, cost=cost)
    ended = tuple(behind[:len(tail)])
    sent += len(tail)
    billed += sum(1 for reply in ended if not (isinstance(reply, redis.ResponseError) and capabilities.refused(reply)))
    return _Page(rows, sent, billed, ahead[0] if scan else None,
                 behind[len(tail)] if info and len(behind) > len(tail) else None, ended)


def _scan_command(cursor, count):
    return ("SCAN", cursor, "COUNT", count)


def _paged(node, *, cursor, count, prefix, needs, sizer, pause_every, counted, failed, trip=1, spent=None,
           closing=()):
    """`batches` with SCAN from the client: a first round trip for the first page's SCAN, then
    one per page carrying the next page's SCAN and the current page's metadata (its keys
    under `prefix`, `count` keys per script call, `trip` calls' worth per page). While the
    consumer counts a page, the next round trip is already on its way (on a helper thread:
    any client that answers `pipeline` will do), except before a checkpoint batch."""
    spent = spent or Cost()
    lane = None
    future = None
    going = Cost()  # what the round trip under way has cost so far
    try:
        first = _trip(node, [], prefix=prefix, needs=needs, scan=_scan_command(cursor, count * trip), info=False,
                      chunk=count, cost=going)
        spent.add(sent=first.sent, billed=first.billed)
        scan = first.scan
        handed = counted
        while True:
            next_cursor, keys = int(scan[0]), list(scan[1])
            following = _scan_command(next_cursor, count * trip) if next_cursor else None
            work = dict(prefix=prefix, needs=needs, scan=following, chunk=count, closing=closing,
                        info=sizer is not None and sizer.wants_reading())
            if future is None:
                going = Cost()
                page = _trip(node, keys, cost=going, **work)
            else:
                pending, future = future, None
                page = pending.result()
            if sizer is not None:
                sizer.observe(page.info)
            fetched = Fetched(next_cursor, len(keys), len(keys) - len(page.rows) // 4, page.rows,
                              page.sent + spent.sent, page.billed + spent.billed, page.closing)
            spent = Cost()
            if following is None:
                try:
                    yield fetched
                except Stopped:
                    pass
                return
            scan = page.scan
            handed += 1
            if sizer is not None:
                count = sizer.next_count(fetched)
                trip = max(1, sizer.calls_per_trip())
            if not (pause_every and handed % pause_every == 0):  # the next round trip goes now
                upcoming, upcoming_cursor = list(scan[1]), int(scan[0])
                lane = lane or ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyspace-trip")
                ahead = _scan_command(upcoming_cursor, count * trip) if upcoming_cursor else None
                going = Cost()
                future = lane.submit(_trip, node, upcoming, prefix=prefix, needs=needs, scan=ahead, chunk=count,
                                     closing=closing, info=sizer is not None and sizer.wants_reading(), cost=going)
            try:
                yield fetched
            except Stopped as stop:
                if future is not None:  # read (and bill) the round trip in flight
                    pending, future = future, None
                    late = pending.result()
                    stop.cost.add(sent=late.sent, billed=late.billed)
                return
    except (redis.RedisError, OSError):  # executed, though no batch handed out will carry it:
        for cost in (spent, going):  # the SCAN answered for the next batch, the round trip that failed
            failed.add(sent=cost.sent, billed=cost.billed)
        raise
    finally:
        if future is not None:  # closed by an error: the round trip ends (Redis ran it), its connection goes back
            try:
                late = future.result()
            except Exception:  # noqa: BLE001 - what it cost is known all the same
                late = going
            failed.add(sent=late.sent, billed=late.billed)
        if lane is not None:
            lane.shutdown(wait=True)


class BatchSizer:
    """SCAN COUNT per batch such that one script call stays within a time budget, and how
    many script calls' worth of keys a round trip should carry.

    Redis's time per key is estimated from `INFO commandstats` (free on Upstash): the
    scripts' usec over the keys they handled, re-read after batches 1, 2 and 4, then
    every `every` batches. The next
    COUNT is half the budget / time per key, at least `low` and at most `start` (the configured
    batch: the sizer only ever shrinks a batch to keep within the budget).

    The readings sent alone (the base, on creating the sizer, and those of the scan-script
    path) are timed: each is one round trip, and INFO costs Redis next to nothing, so the
    least of their times is the link's. Where a round trip costs
    more than Redis's work on a batch, waiting on the link dominates: `calls_per_trip` then
    asks for pages of several batches, each read by its own script call in the same round
    trip (at most `MAX_CALLS_PER_TRIP`; never on a link under `SLOW_LINK_S`). On the paths that send SCAN from the client the
    readings travel behind the scripts of a round trip (`wants_reading`, `observe`) instead
    of in round trips of their own."""

    MAX_CALLS_PER_TRIP = 4
    SLOW_LINK_S = 0.003  # a round trip below this is a LAN's (or a busy machine's): the one-connection stream hides it

    def __init__(self, client, *, budget_ms, start, low=50, every=16, commands=("evalsha", "evalsha_ro")):
        self.client, self.budget_us, self.count = client, budget_ms * 1000, start
        self.low, self.high, self.every, self.commands = min(low, start), start, every, commands
        self.batches = self.keys = 0
        started = time.perf_counter()
        self.base = self._usec()
        self.round_trip_s = time.perf_counter() - started if self.base is not None else None
        self.us_per_key = None
        self._observed = None

    def _usec(self, stats=None):
        """The scripts' total usec so far (0 before the first call), None where INFO is refused."""
        if stats is None:
            try:
                stats = self.client.info("commandstats")
            except redis.RedisError:
                return None
        elif isinstance(stats, Exception) or not isinstance(stats, dict):
            return None
        return sum(stats.get(f"cmdstat_{command}", {}).get("usec", 0) for command in self.commands)

    def _due(self, batches):
        return batches in (1, 2, 4) or batches % self.every == 0

    def wants_reading(self):
        """True when the round trip that brings the next batch should carry an INFO reading
        behind its scripts (`next_count` of that batch reads one)."""
        return self.base is not None and self._due(self.batches + 1)

    def observe(self, stats):
        """A reading (INFO commandstats, parsed) that travelled behind a round trip's scripts."""
        if stats is not None:
            self._observed = self._usec(stats)

    def next_count(self, fetched):
        self.batches += 1
        self.keys += fetched.scanned
        due = self._due(self.batches)
        if due and self.base is not None and self.keys:
            now, self._observed = self._observed, None
            if now is None:  # a round trip of its own: timed too, the link is the least of them
                started = time.perf_counter()
                now = self._usec()
                if now is not None and self.round_trip_s is not None:
                    self.round_trip_s = min(self.round_trip_s, time.perf_counter() - started)
            if now is not None:
                # Other clients' scripts count too: an overestimate, so the budget holds.
                self.us_per_key = max((now - self.base) / self.keys, 0.1)
                # Aim the average call at half the budget: on a contended machine the p99
                # call runs two to three times the average (docs/benchmarks.md).
                self.count = int(min(max(self.budget_us / 2 / self.us_per_key, self.low), self.high))
                self.base, self.keys = now, 0
        return self.count

    def calls_per_trip(self):
        """Script calls' worth of keys per round trip: 1 until a batch's time in Redis is
        known, then `calls_per_trip(round trip, a batch's time)`."""
        if self.round_trip_s is None or self.us_per_key is None:
            return 1
        return calls_per_trip(self.round_trip_s, self.us_per_key * self.count / 1e6, most=self.MAX_CALLS_PER_TRIP,
                              slow=self.SLOW_LINK_S)


def calls_per_trip(round_trip_s, batch_s, *, most=BatchSizer.MAX_CALLS_PER_TRIP, slow=BatchSizer.SLOW_LINK_S):
    """Script calls of `batch_s` each (Redis's time on one batch) that one round trip of
    `round_trip_s` should carry: 1 on a link under `slow` (a LAN, where the one-connection
    stream already hides the link), else as many as it takes for Redis's work to cover the
    round trip, at most `most`."""
    if round_trip_s < slow:
        return 1
    return int(min(most, max(1, math.ceil(round_trip_s / max(batch_s, 1e-6)))))


def sample_keys(client, size, *, window=100, rng=None, population=None, spent=None):
    """About `size` keys drawn at random, and the SCAN calls it took (also added to `spent`, a
    Cost, round trip by round trip).

    Random SCAN cursors, not RANDOMKEY: a SCAN from a random cursor starts at a random
    bucket of the hash table and returns the keys of the next `window` or so buckets. Keys
    are spread over buckets by their hash, so each key has about the same chance to be in
    the window, and one billed command brings ~`window` keys where RANDOMKEY brings one
    (2,000 RANDOMKEYs would be 2,000 billed commands; this is ~24). Keys sharing a bucket
    come together: with Redis's load factor near 1 that correlation is small. Windows that
    overlap are merged; an over-full draw is cut down at random.

    The SCANs are independent, so they travel together: one round trip for enough windows to
    reach `size` with a margin (windows overlap more as the sample nears the `population`,
    DBSIZE, when known), and another only where they fell short (a keyspace with many empty
    buckets)."""
    import random

    rng = rng or random.SystemRandom()
    seen, calls = set(), 0
    limit = 4 * (size // window) + 20
    per_call = window
    while len(seen) < size and calls < limit:
        missing = size - len(seen)
        if population and not seen and 1.15 * size < population:
            # n windows of `window` keys cover population × (1 − e^(−n·window/population)) keys
            draws = -population / window * math.log(1 - 1.15 * size / population)
        else:
            draws = missing / max(per_call, 1) * 1.15
        wanted = min(limit - calls, max(1, math.ceil(draws) + 2))
        pipe = client.pipeline(transaction=False)
        for _ in range(wanted):
            pipe.scan(cursor=rng.getrandbits(63), count=window)
        had = len(seen)
        for _cursor, keys in pipe.execute():
            seen.update(keys)
        calls += wanted
        if spent is not None:  # known as the SCANs answer, should a later round trip fail
            spent.add(sent=wanted, billed=wanted)
        per_call = (len(seen) - had) / wanted
        if not per_call:  # an empty keyspace
            break
    keys = list(seen)
    if len(keys) > size:
        keys = rng.sample(keys, size)
    return keys, calls


def sample_batches(node, *, size, prefix, needs=Needs(), chunk=1000, population=None, failed=None):
    """Fetched batches of a random sample of about `size` keys of `node` (see
    `sample_keys`), their metadata read by `meta`'s script over the sample's keys (known
    keys: no global lock on Upstash), `chunk` keys per call, every call in one round trip.
    `failed`: as in `batches` (the sample's SCANs and scripts, where the metadata's round trip raised)."""
    scans, cost = Cost(), Cost()
    try:
        keys, calls = sample_keys(node.client, size, population=population, spent=scans)
        ours = [key for key in keys if key.startswith(prefix)]
        rows, sent, billed, _ahead, _behind = read_metadata(node, ours, needs, chunk=chunk, cost=cost)
    except (redis.RedisError, OSError):
        if failed is not None:
            failed.add(sent=scans.sent + cost.sent, billed=scans.billed + cost.billed)
        raise
    yield Fetched(0, len(keys), len(keys) - len(ours), rows, calls + sent, calls + billed)
