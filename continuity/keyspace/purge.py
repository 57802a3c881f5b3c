"""Redis side of a purge: act on one SCAN batch in one command, re-checking every key.

One Lua call per batch re-checks each key (still there; for the TTL actions still
without a TTL / still above the namespace maximum), acts on the keys that still qualify
with one multi-key `UNLINK` (delete) or `EXPIRE` (apply the policy TTL: a repair that
deletes nothing), and — atomically with the action — writes a small progress marker so
that a worker that dies between this command and its Postgres checkpoint can be resumed
without counting the batch twice or losing it. Where the server refuses scripting, a
pipeline checks the TTLs and a MULTI/EXEC transaction acts and writes the marker.

The marker is one key per run, outside the monitored key prefix
(`continuity-dashboard:purge-progress:<run id>`), overwritten per batch, expiring after a
day, deleted when the run ends.
"""

import threading
from dataclasses import dataclass

import redis

MARKER_PREFIX = b"continuity-dashboard:purge-progress:"
MARKER_TTL_SECONDS = 86400
# Lua 5.1's unpack() is limited by the C stack (about 8000 values): UNLINK in slices.
_UNPACK_SLICE = 4000

ACTIONS = ("delete", "expire", "count")
CONDITIONS = ("any", "no_ttl", "ttl_above", "violates")

# KEYS[1] = marker key, KEYS[2..] = the batch.
# ARGV[1] = action (delete | expire | count), ARGV[2] = condition,
# ARGV[3] = marker head ('' for none), ARGV[4] = marker TTL,
# ARGV[5], ARGV[6] = the run's done and skipped totals before this batch,
# ARGV[5 + i] (i >= 2) = the policy max TTL in seconds of KEYS[i], 0 when none.
# Returns {done, skipped}: for 'count', done is how many keys would be acted on.
_PURGE_LUA = """
local action, cond = ARGV[1], ARGV[2]
local act, ttls = {}, {}
local skipped = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local max = tonumber(ARGV[5 + i]) or 0
  local ok
  if cond == 'any' and action ~= 'expire' and action ~= 'count' then
    ok = true
  else
    local pttl = redis.call('PTTL', key)
    if pttl == -2 then ok = false
    elseif cond == 'any' then ok = true
    elseif cond == 'no_ttl' then ok = (pttl == -1)
    elseif cond == 'ttl_above' then ok = (max > 0 and pttl > max * 1000)
    else ok = (pttl == -1) or (max > 0 and pttl > max * 1000) end
    if ok and action == 'expire' and max <= 0 then ok = false end
  end
  if ok then
    act[#act + 1] = key
    ttls[#act] = max
  else
    skipped = skipped + 1
  end
end
local done = 0
if action == 'delete' then
  local i = 1
  while i <= #act do
    local j = math.min(i + 3999, #act)
    done = done + redis.call('UNLINK', unpack(act, i, j))
    i = j + 1
  end
  skipped = skipped + (#act - done)
elseif action == 'expire' then
  for i, key in ipairs(act) do
    done = done + redis.call('EXPIRE', key, ttls[i])
  end
  skipped = skipped + (#act - done)
else
  done = #act
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3] .. ' ' .. (tonumber(ARGV[5]) + done) .. ' ' .. (tonumber(ARGV[6]) + skipped),
             'EX', ARGV[4])
end
return {done, skipped}
"""

_REFUSED = ("unknown command", "noperm", "no permissions", "not allowed", "disabled", "not supported", "readonly")


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: keys acted on (or, for 'count', that would be), keys that no
    longer qualified, and the Redis commands it cost."""

    done: int
    skipped: int
    commands: int


@dataclass(frozen=True)
class Marker:
    """The run's totals as of the last batch it acted on, and the cursor after it."""

    batch: int
    cursor: str
    matched: int
    done: int
    skipped: int


def marker_key(run_id) -> bytes:
    return MARKER_PREFIX + str(run_id).encode()


def marker_head(batch, cursor, matched_total) -> str:
    return f"{batch} {cursor} {matched_total}"


_script_refused: dict[int, bool] = {}
_lock = threading.Lock()


def _refused(exc):
    text = str(exc).lower()
    return any(marker in text for marker in _REFUSED)


def act_on_batch(client, keys, *, action, condition, max_ttls, marker=b"", head="", totals=(0, 0)) -> BatchResult:
    """Re-check and act on `keys` in one command. `max_ttls[i]` is the policy max TTL
    (seconds, 0 for none) of `keys[i]`. With `marker`, the progress marker becomes
    `head` + the run's done and skipped totals (`totals` before this batch + this batch),
    so it always holds the exact cumulative state of the Redis side."""
    if action not in ACTIONS or condition not in CONDITIONS:
        raise ValueError(f"unknown action {action!r} or condition {condition!r}")
    keys = list(keys)
    if not keys:
        return BatchResult(0, 0, 0)
    # A plain delete reads no per-key TTL: do not ship them.
    needs_no_ttls = action == "delete" and condition == "any"
    if not _script_refused.get(id(client)):
        try:
            script = client.register_script(_PURGE_LUA)
            done, skipped = script(keys=[marker or b"-", *keys],
                                   args=[action, condition, head if marker else "", MARKER_TTL_SECONDS,
                                         int(totals[0]), int(totals[1]),
                                         *([] if needs_no_ttls else [int(t or 0) for t in max_ttls])])
            return BatchResult(int(done), int(skipped), 1)
        except redis.ResponseError as exc:
            if not _refused(exc):
                raise
            with _lock:
                _script_refused[id(client)] = True
    return _via_pipeline(client, keys, action=action, condition=condition, max_ttls=list(max_ttls),
                         marker=marker, head=head, totals=totals)


def _qualifies(condition, pttl, max_ttl):
    if pttl == -2:
        return False
    if condition == "any":
        return True
    above = bool(max_ttl) and pttl > max_ttl * 1000
    if condition == "no_ttl":
        return pttl == -1
    if condition == "ttl_above":
        return above
    return pttl == -1 or above


def _via_pipeline(client, keys, *, action, condition, max_ttls, marker, head, totals):
    """Fallback without scripting: PTTLs in one pipeline (unless nothing needs them), then
    one MULTI/EXEC acting and writing the marker. The re-check is not atomic with the act
    here; EXPIRE's NX/LT flags still keep a repair from shortening a fresh TTL."""
    commands = 0
    if condition == "any" and action == "delete":
        chosen = [(key, 0, -1) for key in keys]
    else:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
        pttls = pipe.execute()
        commands += len(keys)
        chosen = [(key, ttl, pttl) for key, ttl, pttl in zip(keys, max_ttls, pttls)
                  if _qualifies(condition, pttl, ttl) and not (action == "expire" and not ttl)]
    skipped = len(keys) - len(chosen)
    if action == "count":
        return BatchResult(len(chosen), skipped, commands)
    tx = client.pipeline(transaction=True)
    if action == "delete" and chosen:
        tx.unlink(*[key for key, _, _ in chosen])
    elif action == "expire":
        for key, ttl, pttl in chosen:
            tx.expire(key, ttl, nx=pttl == -1, lt=pttl != -1)
    predicted = len(chosen)
    if marker:
        tx.set(marker, f"{head} {totals[0] + predicted} {totals[1] + skipped}", ex=MARKER_TTL_SECONDS)
    replies = tx.execute() if (chosen or marker) else []
    commands += (len(chosen) if action == "expire" else int(bool(chosen))) + (1 if marker else 0) + 2
    acted = replies[:-1] if marker else replies
    done = sum(int(r) for r in acted)
    return BatchResult(done, skipped + (predicted - done), commands)


def read_marker(client, run_id) -> Marker | None:
    raw = client.get(marker_key(run_id))
    if not raw:
        return None
    batch, cursor, matched, done, skipped = raw.decode().split()
    return Marker(int(batch), cursor, int(matched), int(done), int(skipped))


def clear_marker(client, run_id):
    client.delete(marker_key(run_id))


# What a task should retry on: the server unreachable, slow, loading, or over quota.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ResponseError)


_END = object()


def prefetched(pages):
    """Iterate `pages` (an iterator of SCAN pages) one page ahead in a helper thread, so
    the next SCAN travels while the caller acts on the current page."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="purge-scan") as pool:
        future = pool.submit(next, pages, _END)
        while True:
            item = future.result()
            if item is _END:
                return
            future = pool.submit(next, pages, _END)
            yield item


# One SCAN page and its purge in one command: nothing travels to the client but counts.
# KEYS[1] = marker key. ARGV[1] action, ARGV[2] condition, ARGV[3] cursor, ARGV[4] MATCH,
# ARGV[5] COUNT, ARGV[6] batch number, ARGV[7..9] matched/done/skipped totals before,
# ARGV[10] marker TTL, ARGV[11..] namespace prefix / max TTL pairs, longest prefix first.
# Returns {next cursor, matched, done, skipped}.
_SCAN_ACT_LUA = """
local action, cond = ARGV[1], ARGV[2]
local reply = redis.call('SCAN', ARGV[3], 'MATCH', ARGV[4], 'COUNT', ARGV[5])
local cursor, keys = reply[1], reply[2]
local prefixes, maxes = {}, {}
for i = 11, #ARGV, 2 do
  prefixes[#prefixes + 1] = ARGV[i]
  maxes[#maxes + 1] = tonumber(ARGV[i + 1])
end
local act, ttls = {}, {}
local skipped = 0
local plain = (cond == 'any' and action == 'delete')
for _, key in ipairs(keys) do
  local max = nil
  for j, prefix in ipairs(prefixes) do
    if string.sub(key, 1, #prefix) == prefix then max = maxes[j] break end
  end
  local ok = max ~= nil
  if ok and not plain then
    local pttl = redis.call('PTTL', key)
    if pttl == -2 then ok = false
    elseif cond == 'any' then ok = true
    elseif cond == 'no_ttl' then ok = (pttl == -1)
    elseif cond == 'ttl_above' then ok = (max > 0 and pttl > max * 1000)
    else ok = (pttl == -1) or (max > 0 and pttl > max * 1000) end
    if ok and action == 'expire' and max <= 0 then ok = false end
  end
  if ok then
    act[#act + 1] = key
    ttls[#act] = max
  else
    skipped = skipped + 1
  end
end
local done = 0
if action == 'delete' then
  local i = 1
  while i <= #act do
    local j = math.min(i + 3999, #act)
    done = done + redis.call('UNLINK', unpack(act, i, j))
    i = j + 1
  end
elseif action == 'expire' then
  for i, key in ipairs(act) do
    done = done + redis.call('EXPIRE', key, ttls[i])
  end
end
skipped = skipped + (#act - done)
local matched = tonumber(ARGV[7]) + #keys
local next_cursor = cursor
if cursor == '0' then next_cursor = 'end' end
redis.call('SET', KEYS[1], ARGV[6] .. ' ' .. next_cursor .. ' ' .. matched .. ' ' .. (tonumber(ARGV[8]) + done)
           .. ' ' .. (tonumber(ARGV[9]) + skipped), 'EX', ARGV[10])
return {cursor, #keys, done, skipped}
"""

_scan_refused: dict[int, bool] = {}


@dataclass(frozen=True)
class ScanBatchResult:
    cursor: int
    matched: int
    done: int
    skipped: int


def scan_and_act(client, *, cursor, match, count, action, condition, namespaces, marker, batch, totals):
    """One SCAN page and the purge of its keys in one script call, writing the marker.
    `namespaces` is [(prefix bytes, max TTL seconds or 0)], longest first; keys in none are
    skipped. Returns None where the server refuses SCAN inside a script: the caller then
    scans itself and uses `act_on_batch`."""
    if _scan_refused.get(id(client)) or _script_refused.get(id(client)):
        return None
    pairs = [item for prefix, ttl in namespaces for item in (prefix, int(ttl or 0))]
    try:
        script = client.register_script(_SCAN_ACT_LUA)
        next_cursor, matched, done, skipped = script(
            keys=[marker], args=[action, condition, str(cursor), match, count, batch, *totals,
                                 MARKER_TTL_SECONDS, *pairs])
    except redis.ResponseError as exc:
        if not _refused(exc) and "scan" not in str(exc).lower():
            raise
        with _lock:
            _scan_refused[id(client)] = True
        return None
    return ScanBatchResult(int(next_cursor), int(matched), int(done), int(skipped))
