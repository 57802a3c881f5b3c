"""Redis side of a purge: act on one SCAN batch in one command, re-checking every key.

One Lua call per batch re-checks each key against its namespace's policy (still there;
still showing the finding the purge is about), acts on the keys that still qualify with
one multi-key `UNLINK` (delete) or `PEXPIRE` to the policy maximum (apply the policy TTL:
a repair that deletes nothing), and — atomically with the action — writes a small
progress marker so that a worker that dies between this command and its Postgres
checkpoint can be resumed without counting the batch twice or losing it. Where the
server refuses scripting, a pipeline reads the keys and a MULTI/EXEC transaction acts and
writes the marker. Both paths decide with the same policy (`continuity.policy`).

On a Redis Cluster a script call may touch one hash slot only, so a page becomes one call
per slot group; `act_on_groups` sends a node's groups of a page in one pipeline (one round
trip), without a marker (the cluster run checkpoints in Postgres).

Every key the script touches is declared in KEYS, so Upstash locks only those keys.
(An earlier variant ran SCAN inside the script: it touched undeclared keys, which takes
Upstash's global lock, and it saved no billed command, since Upstash bills each call
inside a script. It was removed.)

The marker is one key per run, outside the monitored key prefix
(`continuity-dashboard:purge-progress:<run id>`), overwritten per batch, expiring after a
day, deleted when the run ends.
"""

import hashlib
from dataclasses import dataclass

import redis

from continuity.keyspace import capabilities
from continuity.policy import FINDING_BITS, OVERSIZED, WRONG_TYPE

MARKER_PREFIX = b"continuity-dashboard:purge-progress:"
MARKER_TTL_SECONDS = 86400
# Lua 5.1's unpack() is limited by the C stack (about 8000 values): UNLINK in slices.
_UNPACK_SLICE = 4000

ACTIONS = ("delete", "expire", "count")
# At most this many script calls share one round trip (`act_on_groups`). A page of a SCAN
# already bounds them (a slot group holds at least one of its keys, and a page holds about
# `batch_size` keys); the cap keeps a page of a huge batch size from one request and reply
# of unbounded size (each reply is four integers, each request the group's keys and rules).
PIPELINE_CALLS = 1000

# KEYS[1] = marker key, KEYS[2..] = the batch (declared: on Upstash a script that touches
# only its declared keys locks only those keys, not the whole database).
# ARGV[1] = action (delete | expire | count), ARGV[2] = the findings a key must still have
# (a mask of continuity.policy.FINDING_BITS; 0 = it must still exist),
# ARGV[3] = marker head ('' for none), ARGV[4] = marker TTL,
# ARGV[5], ARGV[6] = the run's done and skipped totals before this batch,
# ARGV[7] = R, the number of policies, then R times `Policy.script_rule()`: TTL required
# (1/0), max TTL ms (0: none), max bytes (0: none), expected type ('': any),
# then the 1-based policy of each key of KEYS[2..] (absent when R is 1 or none are needed).
# Returns {done, skipped, calls, writes}: for 'count', done is how many keys would be acted
# on; calls = the commands the script ran (each billed on Upstash), writes = those that
# wrote (billed again per read region on a Global database).
# `findings` below is `continuity.policy.Policy.findings` for the findings asked for;
# test_policy.py holds both to the same answers. MEMORY USAGE and TYPE are called only
# when the mask asks for them: every call inside a script is billed on Upstash.
_PURGE_LUA = """
local action, want = ARGV[1], tonumber(ARGV[2])
local band = bit.band
local nrules = tonumber(ARGV[7])
local rules = {}
for r = 1, nrules do
  local b = 8 + (r - 1) * 4
  rules[r] = {ARGV[b] == '1', tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), ARGV[b + 3]}
end
local base = 8 + nrules * 4
local calls, writes = 0, 0
local function findings(key, rule)
  local pttl = redis.call('PTTL', key)
  calls = calls + 1
  if pttl == -2 then return -1 end
  local f = 0
  if pttl == -1 then
    if rule[1] then f = 1 end
  elseif rule[2] > 0 and pttl > rule[2] then f = 2 end
  if band(want, 4) ~= 0 and rule[3] > 0 then
    local mem = redis.pcall('MEMORY', 'USAGE', key)
    if type(mem) == 'number' then
      calls = calls + 1
      if mem > rule[3] then f = f + 4 end
    end
  end
  if band(want, 8) ~= 0 and rule[4] ~= '' then
    calls = calls + 1
    if redis.call('TYPE', key)['ok'] ~= rule[4] then f = f + 8 end
  end
  return f
end
local plain = (want == 0 and action == 'delete')
local act, ttls = {}, {}
local skipped = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local rule = rules[tonumber(ARGV[base + i - 2]) or 1]
  local ok = plain
  if not plain then
    local f = findings(key, rule)
    ok = (f == 0 and want == 0) or (f > 0 and (want == 0 or band(f, want) ~= 0))
    if ok and action == 'expire' and rule[2] <= 0 then ok = false end
  end
  if ok then
    act[#act + 1] = key
    ttls[#act] = rule[2]
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
    calls, writes = calls + 1, writes + 1
    i = j + 1
  end
  skipped = skipped + (#act - done)
elseif action == 'expire' then
  for i, key in ipairs(act) do
    done = done + redis.call('PEXPIRE', key, ttls[i])
  end
  calls, writes = calls + #act, writes + #act
  skipped = skipped + (#act - done)
else
  done = #act
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3] .. ' ' .. (tonumber(ARGV[5]) + done) .. ' ' .. (tonumber(ARGV[6]) + skipped),
             'EX', ARGV[4])
  calls, writes = calls + 1, writes + 1
end
return {done, skipped, calls, writes}
"""
_PURGE_SHA = hashlib.sha1(_PURGE_LUA.encode()).hexdigest()


def want_mask(findings) -> int:
    """The script's mask for a set of finding names (empty: the key must still exist)."""
    return sum(FINDING_BITS[finding] for finding in set(findings))


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: keys acted on (or, for 'count', that would be), keys that no
    longer qualified, and what it cost: requests sent, commands billed, of which writes."""

    done: int
    skipped: int
    commands: int
    billed: int = 0
    writes: int = 0


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


def _rules(policies):
    """(script arguments for the policies, 1-based policy index per key)."""
    if len(policies) == 1:  # a cluster's slot group is mostly one key: no hashing of the Policy
        return 1, list(policies[0].script_rule()), [1]
    index, rules, per_key = {}, [], []
    for policy in policies:
        at = index.get(policy)
        if at is None:
            at = index[policy] = len(index) + 1
            rules.extend(policy.script_rule())
        per_key.append(at)
    return len(index), rules, per_key


def _script_args(policies, *, action, mask, head="", totals=(0, 0)):
    """ARGV of the script for a batch whose keys have `policies` (see `_PURGE_LUA`)."""
    count, rules, per_key = _rules(policies)
    # A plain delete reads no policy per key, and one policy needs no index: do not ship them.
    indexes = [] if count == 1 or (mask == 0 and action == "delete") else per_key
    return [action, mask, head, MARKER_TTL_SECONDS, int(totals[0]), int(totals[1]), count, *rules, *indexes]


def act_on_batch(client, keys, *, action, policies, want=(), marker=b"", head="", totals=(0, 0)) -> BatchResult:
    """Re-check and act on `keys` in one command. `policies[i]` is the Policy of `keys[i]`;
    a key is acted on while it still has one of the findings `want` under it (or, with
    `want` empty, while it still exists). `delete` unlinks, `expire` sets the policy's
    maximum TTL (a repair that deletes nothing; keys of a policy without a maximum are
    skipped), `count` only counts. With `marker`, the progress marker becomes `head` + the
    run's done and skipped totals (`totals` before this batch + this batch), so it always
    holds the exact cumulative state of the Redis side."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    keys, policies = list(keys), list(policies)
    if not keys:
        return BatchResult(0, 0, 0)
    mask = want_mask(want)
    caps = capabilities.of(client)
    # A count without a marker writes nothing: EVALSHA_RO, which a browse user may run.
    read_only = action == "count" and not marker
    flag = "script" if read_only else "write_script"
    refusal = None
    if getattr(caps, flag) is not False:
        args = _script_args(policies, action=action, mask=mask, head=head if marker else "", totals=totals)
        spent = [0]  # a fresh server, or SCRIPT FLUSH mid-run: the script is loaded again, and counted
        try:
            # KEYS[1] without a marker: a key of the batch (unused), so an ACL limited to the
            # keyspace's keys allows the call.
            done, skipped, calls, writes = capabilities.run_script(
                client, _PURGE_SHA, _PURGE_LUA, len(keys) + 1, marker or keys[0], *keys, *args, read_only=read_only,
                spent=spent)
            setattr(caps, flag, True)
            return BatchResult(int(done), int(skipped), spent[0], spent[0] + int(calls), int(writes))
        except redis.ResponseError as exc:
            if not capabilities.refused(exc):
                raise
            refusal = exc
    try:
        result = _via_pipeline(client, keys, action=action, policies=policies, want=set(want), marker=marker,
                               head=head, totals=totals)
    except redis.exceptions.NoPermissionError:
        # Neither way is allowed. Where the ACL refused the script command itself (EVALSHA),
        # name that, not MULTI; a command refused inside the script is named by the fallback.
        if isinstance(refusal, redis.exceptions.NoPermissionError):
            raise refusal from None
        raise
    if refusal is not None:
        setattr(caps, flag, False)  # the fallback works here: use it from now on
    return result


def act_on_groups(client, groups, *, action, want=()):
    """Re-check and act on several batches of one server — a cluster node's slot groups,
    each `(keys, policies)` within one hash slot — in one round trip: a non-transactional
    pipeline of the script calls `act_on_batch` would send one by one (the same script,
    the same `Policy` rules as its arguments, no marker). Yields `(index in groups,
    BatchResult)` as each call is accounted for, so a caller that stops on an error has
    counted everything that was done.

    Until a script call went through on `client` (`Capabilities`), the first group goes
    alone through `act_on_batch`: on a fresh node that loads the script once (one NOSCRIPT,
    one SCRIPT LOAD, as for a single batch) and it finds a user or server that refuses
    scripting, whose groups then all take `act_on_batch`'s fallback (a pipeline and a
    MULTI/EXEC per group). Calls answered NOSCRIPT (SCRIPT FLUSH mid-run) are redone, and
    only those (idempotent: a key acted on no longer qualifies), after one SCRIPT LOAD; each
    command sent is counted in its group's `commands` and `billed`, the SCRIPT LOAD in the
    first redone group's. A call the server refused (ACL) goes through `act_on_batch`.
    Any other error answer (MOVED, ASK, TRYAGAIN, …) is raised after every call that
    succeeded in the same round trip (before or after it: a pipeline does not stop) was
    yielded. At most `PIPELINE_CALLS` calls share a round trip."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    groups = [(list(keys), list(policies)) for keys, policies in groups]
    caps = capabilities.of(client)
    flag = "script" if action == "count" else "write_script"
    pending = [(index, keys, policies) for index, (keys, policies) in enumerate(groups) if keys]
    for index, (keys, _) in enumerate(groups):
        if not keys:
            yield index, BatchResult(0, 0, 0)
    while pending and getattr(caps, flag) is not True:
        index, keys, policies = pending.pop(0)
        yield index, act_on_batch(client, keys, action=action, policies=policies, want=want)
    mask = want_mask(want)
    for start in range(0, len(pending), PIPELINE_CALLS):
        yield from _pipelined(client, pending[start:start + PIPELINE_CALLS], action=action, mask=mask, want=want)


def _pipelined(client, calls, *, action, mask, want):
    """`act_on_groups` for up to PIPELINE_CALLS groups of a client that ran the script."""
    read_only = action == "count"
    sent = {index: (keys, [keys[0], *keys, *_script_args(policies, action=action, mask=mask)])
            for index, keys, policies in calls}
    spent = dict.fromkeys(sent, 0)

    def send(command, body, indexes):
        pipe = client.pipeline(transaction=False)
        for index in indexes:
            keys, args = sent[index]
            pipe.execute_command(command, body, len(keys) + 1, *args)
            spent[index] += 1
        return dict(zip(indexes, pipe.execute(raise_on_error=False)))

    command = capabilities.script_command(client) if read_only else "EVALSHA"
    replies = send(command, _PURGE_SHA, list(sent))
    missing = [index for index, reply in replies.items() if isinstance(reply, redis.exceptions.NoScriptError)]
    if missing:  # SCRIPT FLUSH (or a restart) since this client's last call: load it, redo those calls
        client.script_load(_PURGE_LUA)
        spent[missing[0]] += 1
        replies.update(send(command, _PURGE_SHA, missing))
        missing = [index for index, reply in replies.items() if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:  # still unknown (a replica answered, as on Upstash): the body itself
            body_command = "EVAL_RO" if read_only and capabilities.of(client).read_only_scripts else "EVAL"
            replies.update(send(body_command, _PURGE_LUA, missing))
    error = None
    for index, _keys, policies in calls:
        reply = replies[index]
        if isinstance(reply, redis.ResponseError) and capabilities.refused(reply):
            try:  # refused now (an ACL changed): as `act_on_batch` does, which falls back
                reply = act_on_batch(client, sent[index][0], action=action, policies=policies, want=want)
            except redis.ResponseError as exc:
                reply = exc
            else:
                yield index, reply
                continue
        if isinstance(reply, Exception):
            error = error or reply
            continue
        done, skipped, calls_run, writes = reply
        yield index, BatchResult(int(done), int(skipped), spent[index], spent[index] + int(calls_run), int(writes))
    if error is not None:
        raise error


def _via_pipeline(client, keys, *, action, policies, want, marker, head, totals):
    """Without scripting: the keys' PTTL (and MEMORY USAGE / TYPE where `want` asks) in
    one pipeline, `Policy.findings` here, then one MULTI/EXEC acting and writing the marker.
    The re-check is not atomic with the act here; PEXPIRE's NX/LT flags still keep a
    repair from lengthening or dropping a TTL that changed meanwhile."""
    commands = 0
    if not want and action == "delete":
        chosen = [(key, None, -1) for key in keys]
    else:
        memory, kind = OVERSIZED in want, WRONG_TYPE in want
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
            if memory:
                pipe.memory_usage(key)
            if kind:
                pipe.type(key)
        replies = iter(pipe.execute(raise_on_error=False))
        commands += len(keys) * (1 + memory + kind)
        chosen = []
        for key, policy in zip(keys, policies):
            pttl = next(replies)
            used = next(replies) if memory else None
            kind_reply = next(replies) if kind else None
            if isinstance(pttl, Exception):
                raise pttl
            if pttl == -2:
                continue
            found = policy.findings(None if pttl == -1 else pttl, kind_reply,
                                    used if isinstance(used, int) else None)
            if (set(found) & want) if want else True:
                if not (action == "expire" and not policy.max_ttl_seconds):
                    chosen.append((key, policy, pttl))
    skipped = len(keys) - len(chosen)
    if action == "count":
        return BatchResult(len(chosen), skipped, commands, commands)
    tx = client.pipeline(transaction=True)
    if action == "delete" and chosen:
        tx.unlink(*[key for key, _, _ in chosen])
    elif action == "expire":
        for key, policy, pttl in chosen:
            tx.pexpire(key, policy.max_ttl_seconds * 1000, nx=pttl == -1, lt=pttl != -1)
    predicted = len(chosen)
    if marker:
        tx.set(marker, f"{head} {totals[0] + predicted} {totals[1] + skipped}", ex=MARKER_TTL_SECONDS)
    replies = tx.execute() if (chosen or marker) else []
    writes = (len(chosen) if action == "expire" else int(bool(chosen))) + (1 if marker else 0)
    commands += writes + (2 if writes else 0)  # + MULTI and EXEC
    acted = replies[:-1] if marker else replies
    done = sum(int(r) for r in acted)
    return BatchResult(done, skipped + (predicted - done), commands, commands, writes)


def read_marker(client, run_id) -> Marker | None:
    """The marker of `run_id` (one GET), or None."""
    raw = client.get(marker_key(run_id))
    if not raw:
        return None
    batch, cursor, matched, done, skipped = raw.decode().split()
    return Marker(int(batch), cursor, int(matched), int(done), int(skipped))


def clear_marker(client, run_id):
    client.delete(marker_key(run_id))


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
