"""Redis side of a purge: act on one page of keys of one node in one command, re-checking
every key, and record the node's progress atomically with the act.

One Lua call per page (`act`) re-checks each key against its namespace's policy (still
there; still showing the finding the purge is about), acts on the keys that still qualify
(delete: UNLINK; apply the policy TTL: PEXPIRE to the maximum, a repair that deletes
nothing; count: nothing) and, in the same call, overwrites the node's progress marker with
the node's totals after this page: its SCAN position, keys matched, done and skipped, and
the commands Redis billed for the node so far, this call's own included. A worker that
dies at any point after the call (before reading its reply, before its Postgres checkpoint)
is resumed from the marker: nothing is counted twice or lost, and `done` is what Redis did.

The same call serves both topologies (`nodes.Node`): on a standalone server the keys are
declared (Upstash locks only them) and deleted with one multi-key UNLINK per 4,000; on a
Redis Cluster node they travel undeclared (a cluster refuses declared keys of several
slots) and are unlinked one by one (a multi-key command may not span slots even inside a
script), and a key whose slot moved away since the SCAN ("non local key") is left alone and
counted as `moved`, so the counts stay exact when a run fails for a resharding.

Where the server refuses scripting (an ACL), a standalone server is purged with WATCH, a
pipeline of the same reads, `Policy.findings` here, and MULTI/EXEC acting and writing the
same marker: EXEC runs only if no key of the page changed since WATCH, so the totals the
marker records are what Redis did; a page whose EXEC was refused is read again. A Redis
Cluster needs scripting (MULTI/EXEC cannot span slots), and so does Upstash's REST API
(no WATCH: each request may run on another connection): refused with `ScriptingRequired`.

The marker is one key per run and node, outside the monitored key prefix
(`continuity-dashboard:purge-progress:<run id>`, with a hash tag of a slot the node serves
on a cluster), expiring after a day, deleted when the run ends.
"""

from dataclasses import dataclass

import redis

from continuity.billing import Cost
from continuity.keyspace import capabilities
from continuity.keyspace.connection import KeyspaceError, is_rest
from continuity.keyspace.scripts import KEYS_PRELUDE, Script
from continuity.policy import FINDING_BITS, OVERSIZED, WRONG_TYPE

MARKER_PREFIX = b"continuity-dashboard:purge-progress:"
MARKER_TTL_SECONDS = 86400
PAGE_ACTIONS = ("delete", "expire", "count")

# keys[1] = the marker key (or, without a marker, the first key: an ACL limited to the
# keyspace's keys then allows the call), keys[2..] = the page.
# ARGV[1] = action (delete | expire | count), ARGV[2] = the findings a key must still have
# (a mask of continuity.policy.FINDING_BITS; 0 = it must still exist), ARGV[3] = marker
# head ("<page> <cursor> <matched>", '' for no marker), ARGV[4] = marker TTL,
# ARGV[5], ARGV[6], ARGV[7] = the node's done, skipped and billed totals before this call
# (billed: with this call's EVALSHA), ARGV[8] = read regions (a write is billed once more per
# region), ARGV[9] = '1' to unlink key by key (a cluster node), ARGV[10] = R, the number of
# policies, then R times `Policy.script_rule()`: TTL required (1/0), max TTL ms (0: none),
# max bytes (0: none), expected type ('': any); then the count of per-key policy indexes and
# the 1-based policy of each key of the page (none when R is 1 or none are needed).
# Returns {done, skipped, calls, writes, moved, recorded}: for 'count', done is how many keys
# would be acted on; calls = the commands the script ran (each billed on Upstash), writes =
# those that wrote; moved = keys this node no longer serves (untouched); recorded = 1 when the
# marker was written (a demoted node, or one out of memory, refuses the SET: the acts stand).
# `findings` below is `continuity.policy.Policy.findings` for the findings asked for;
# test_policy.py holds both to the same answers. MEMORY USAGE and TYPE are called only
# when the mask asks for them: every call inside a script is billed on Upstash.
_PURGE_LUA = KEYS_PRELUDE + """
local action, want = ARGV[1], tonumber(ARGV[2])
local band = bit.band
local nrules = tonumber(ARGV[10])
local rules = {}
for r = 1, nrules do
  local b = 11 + (r - 1) * 4
  rules[r] = {ARGV[b] == '1', tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), ARGV[b + 3]}
end
local indexes = 11 + nrules * 4
local nindexes = tonumber(ARGV[indexes])
local calls, writes, moved = 0, 0, 0
local function failed(reply) return type(reply) == 'table' and reply.err ~= nil end
local function findings(key, rule)
  local pttl = redis.pcall('PTTL', key)
  if failed(pttl) then return nil end
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
for i = 2, nkeys do
  local key = keys[i]
  local rule = rules[(nindexes > 0 and tonumber(ARGV[indexes + i - 1])) or 1]
  local ok = plain
  if not plain then
    local f = findings(key, rule)
    if f == nil then
      moved = moved + 1
    else
      ok = (f == 0 and want == 0) or (f > 0 and (want == 0 or band(f, want) ~= 0))
      if ok and action == 'expire' and rule[2] <= 0 then ok = false end
      if not ok then skipped = skipped + 1 end
    end
  end
  if ok then
    act[#act + 1] = key
    ttls[#act] = rule[2]
  end
end
local done, gone = 0, 0
if action == 'delete' and ARGV[9] == '1' then
  for _, key in ipairs(act) do
    local n = redis.pcall('UNLINK', key)
    if failed(n) then gone = gone + 1 else done, calls, writes = done + n, calls + 1, writes + 1 end
  end
elseif action == 'delete' then
  local i = 1
  while i <= #act do
    local j = math.min(i + 3999, #act)
    done = done + redis.call('UNLINK', unpack(act, i, j))
    calls, writes = calls + 1, writes + 1
    i = j + 1
  end
elseif action == 'expire' then
  for i, key in ipairs(act) do
    local n = redis.pcall('PEXPIRE', key, ttls[i])
    if failed(n) then gone = gone + 1 else done, calls, writes = done + n, calls + 1, writes + 1 end
  end
else
  done = #act
end
moved = moved + gone
if action ~= 'count' then skipped = skipped + (#act - done - gone) end
local recorded = 0
if ARGV[3] ~= '' then
  local billed = tonumber(ARGV[7]) + calls + 1 + (writes + 1) * tonumber(ARGV[8])
  local ok = redis.pcall('SET', keys[1], ARGV[3] .. ' ' .. (tonumber(ARGV[5]) + done) .. ' '
                         .. (tonumber(ARGV[6]) + skipped) .. ' ' .. billed, 'EX', ARGV[4])
  if not failed(ok) then calls, writes, recorded = calls + 1, writes + 1, 1 end
end
return {done, skipped, calls, writes, moved, recorded}
"""
PURGE_SCRIPT = Script(_PURGE_LUA, read_only=False)
COUNT_SCRIPT = Script(_PURGE_LUA, read_only=True)  # count mode, no marker: a browse user may run it


class ScriptingRequired(KeyspaceError):
    """A Redis Cluster, or a REST token, whose user may not run scripts: a purge there cannot
    act and record its progress atomically (MULTI/EXEC cannot span slots; over REST there is
    no WATCH)."""


def want_mask(findings) -> int:
    """The script's mask for a set of finding names (empty: the key must still exist)."""
    return sum(FINDING_BITS[finding] for finding in set(findings))


@dataclass(frozen=True)
class BatchResult:
    """What one call did: keys acted on (or, for 'count', that would be), keys that no longer
    qualified, keys the node no longer serves (untouched), and what it cost: requests sent,
    commands billed (a write counted once more per read region), of which writes."""

    done: int
    skipped: int
    commands: int
    billed: int = 0
    writes: int = 0
    moved: int = 0
    ahead: tuple = ()  # the replies of the commands sent ahead in the same round trip
    recorded: bool = True  # the marker holds this page (when one was asked for)


@dataclass(frozen=True)
class Progress:
    """A node's totals to record with a page: the marker's head ("page cursor matched"),
    and done, skipped and billed before the page (billed: its SCAN included)."""

    key: bytes
    head: str
    done: int
    skipped: int
    billed: int
    regions: int = 0


@dataclass(frozen=True)
class Marker:
    """A node's totals as of the last page it acted on, and the cursor after it."""

    page: int
    cursor: str
    matched: int
    done: int
    skipped: int
    billed: int


def marker_key(node, run_id) -> bytes:
    return node.own_key(MARKER_PREFIX) + str(run_id).encode()


def marker_head(page, cursor, matched_total) -> str:
    return f"{page} {cursor} {matched_total}"


def _rules(policies):
    """(number of policies, their script arguments, 1-based policy index per key)."""
    if len(policies) == 1:
        return 1, list(policies[0].script_rule()), [1]
    index, rules, per_key = {}, [], []
    for policy in policies:
        at = index.get(policy)
        if at is None:
            at = index[policy] = len(index) + 1
            rules.extend(policy.script_rule())
        per_key.append(at)
    return len(index), rules, per_key


def act(node, keys, *, action, policies, want=(), progress=None, cost=None, before=()) -> BatchResult:
    """Re-check and act on `keys` of `node` in one command. `policies[i]` is the Policy of
    `keys[i]`; a key is acted on while it still has one of the findings `want` under it
    (or, with `want` empty, while it still exists). `delete` unlinks, `expire` sets the
    policy's maximum TTL (keys of a policy without one are skipped), `count` only counts.
    With `progress` the node's marker records its totals after this page (see the module
    docstring); a page without keys then only writes the marker. `before`: commands sent
    ahead in the same round trip (the next page's SCAN), their replies in `ahead`; their
    cost is counted, and recorded in the marker. `cost`: a Cost to add what was sent,
    billed and written to."""
    if action not in PAGE_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    keys, policies = list(keys), list(policies)
    cost = Cost() if cost is None else cost
    if not keys:
        return _record(node, progress, before, cost) if progress else BatchResult(0, 0, 0)
    mask = want_mask(want)
    caps = capabilities.of(node.client)
    script = COUNT_SCRIPT if action == "count" and progress is None else PURGE_SCRIPT
    flag = "script" if script.read_only else "write_script"
    if getattr(caps, flag) is not False:
        count, rules, per_key = _rules(policies)
        indexes = [] if count == 1 or (mask == 0 and action == "delete") else per_key
        regions = progress.regions if progress else 0

        def args(billed):  # the billed total the marker records counts `before` and this call's retries
            return [action, mask, progress.head if progress else "", MARKER_TTL_SECONDS,
                    progress.done if progress else 0, progress.skipped if progress else 0,
                    (progress.billed if progress else 0) + billed, regions, "0" if node.declares_keys else "1",
                    count, *rules, len(indexes), *indexes]

        spent = Cost()
        try:
            reply = script.run(node.client, [progress.key if progress else keys[0], *keys], args, cost=spent,
                               declare=node.declares_keys, before=before)
        except redis.ResponseError as exc:
            if not capabilities.refused(exc):
                raise
            setattr(caps, flag, False)  # refused here: the fallback from now on
            refusal = exc
        else:
            setattr(caps, flag, True)
            ahead, reply = reply if before else ((), reply)
            done, skipped, calls, writes, moved, recorded = reply
            inner = int(calls) + int(writes) * regions
            cost.add(billed=inner, writes=int(writes))
            return BatchResult(int(done), int(skipped), spent.sent, spent.billed + inner, int(writes), int(moved),
                               tuple(ahead), bool(recorded) or progress is None)
        finally:  # what was sent counts, whatever happened to it
            cost.add(sent=spent.sent, billed=spent.billed)
        if progress:  # what the refused call cost (its `before` ran: sent again below) is recorded too
            progress = Progress(progress.key, progress.head, progress.done, progress.skipped,
                                progress.billed + spent.billed, progress.regions)
    else:
        refusal = None
    if is_rest(node.client):
        raise ScriptingRequired(_refused_over_rest(node.client, refusal))
    if not node.declares_keys:
        raise ScriptingRequired(
            "This Redis user may not run scripts (ACL: +evalsha +eval +script|load). A purge of a Redis Cluster acts and "
            "records its progress in one script call per page; MULTI/EXEC cannot span its slots. Nothing was changed.")
    try:
        result = _watched(node.client, keys, action=action, policies=policies, want=set(want), progress=progress,
                          before=before)
    except redis.exceptions.NoPermissionError:
        # Neither way is allowed. Where the ACL refused the script command itself (EVALSHA),
        # name that; a command refused inside the script is named by the fallback.
        if isinstance(refusal, redis.exceptions.NoPermissionError) and "evalsha" in str(refusal).lower():
            raise refusal from None
        raise
    cost.add(result.commands, result.billed, result.writes)
    return result


def _refused_over_rest(client, refusal):
    """Why a purge cannot run over REST with a token that may not run scripts: the endpoint
    named, never the token."""
    said = getattr(refusal, "said", "") or (str(refusal) if refusal is not None else "")  # Redis's own words
    said = f" ({said})" if said else ""
    return (f"The REST endpoint {client.rest_endpoint} refused scripts for this token{said}. A purge acts and records "
            "its progress in one script call per page, and its way without scripts (WATCH, then MULTI/EXEC) cannot "
            "run over the REST API, where each request may run on another connection. Nothing was changed. Use a "
            "token whose user may run scripts (the database's standard token, or ACL RESTTOKEN of a user allowed "
            "+evalsha +eval +script|load), or the database's TCP URL.")


def _record(node, progress, before, cost):
    """A page with nothing to act on: the marker alone, sent with `before` (one SET)."""
    pipe = node.client.pipeline(transaction=False)
    for entry in before:
        pipe.execute_command(*entry)
    billed = progress.billed + len(before) + 1 + progress.regions
    pipe.set(progress.key, f"{progress.head} {progress.done} {progress.skipped} {billed}", ex=MARKER_TTL_SECONDS)
    replies = pipe.execute(raise_on_error=False)
    executed = [not capabilities.refused(reply) for reply in replies]  # a refusal is rejected before it runs
    wrote = int(executed[-1] and not isinstance(replies[-1], Exception))
    billed = sum(executed) + wrote * progress.regions
    cost.add(sent=len(replies), billed=billed, writes=wrote)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return BatchResult(0, 0, len(replies), billed, wrote, 0, tuple(replies[:-1]))


def _send(connection, commands):
    """Replies (or the error each answered) of `commands` sent in one round trip."""
    connection.send_packed_command(connection.pack_commands(commands))
    replies = []
    for _ in commands:
        try:
            replies.append(connection.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


def _watched(client, keys, *, action, policies, want, progress, before=()):
    """`act` without scripting, on a standalone server: WATCH the page and read it (PTTL, and
    MEMORY USAGE / TYPE where `want` asks) in one round trip, decide with `Policy.findings`,
    then MULTI, the act and the marker, EXEC. EXEC refuses to run when a key of the page
    changed (or expired) since WATCH: then nothing was done and the page is read again, so
    the marker always records what Redis did. Every command executed is billed, the
    refused attempts' too (the marker's figure includes them)."""
    memory, kind = OVERSIZED in want, WRONG_TYPE in want
    regions = progress.regions if progress else 0
    sent = billed = writes_total = 0
    ahead = ()
    connection = client.connection_pool.get_connection()
    try:
        while True:
            # PTTL of every key, even for a plain delete: under WATCH the keys found are the
            # keys EXEC acts on, so the marker written with it says exactly what Redis did.
            reads = [command for key in keys for command in (
                [("PTTL", key)] + ([("MEMORY", "USAGE", key)] if memory else []) + ([("TYPE", key)] if kind else []))]
            replies = _send(connection, [*before, ("WATCH", *keys), *reads])
            sent_ahead = len(before)
            if before:  # sent once, with the first attempt
                ahead, before = tuple(replies[:sent_ahead]), ()
                for reply in ahead:
                    if isinstance(reply, Exception):
                        _send(connection, [("UNWATCH",)])
                        raise reply
            replies = replies[sent_ahead:]
            sent += sent_ahead + 1 + len(reads)
            billed += sent_ahead + 1 + sum(1 for reply in replies[1:] if not isinstance(reply, redis.ResponseError)
                                           or not capabilities.refused(reply))
            for reply in replies:
                if isinstance(reply, redis.ResponseError) and not (memory and capabilities.refused(reply)):
                    _send(connection, [("UNWATCH",)])
                    raise reply
            answers = iter(replies[1:])
            chosen = []
            for key, policy in zip(keys, policies):
                pttl = next(answers)
                used = next(answers) if memory else None
                type_reply = next(answers) if kind else None
                if pttl == -2:
                    continue
                if not want and action == "delete":
                    chosen.append((key, policy, pttl))
                    continue
                found = policy.findings(None if pttl == -1 else pttl, type_reply, used if isinstance(used, int) else None)
                if (set(found) & want) if want else True:
                    if not (action == "expire" and not policy.max_ttl_seconds):
                        chosen.append((key, policy, pttl))
            skipped = len(keys) - len(chosen)
            if action == "count":
                _send(connection, [("UNWATCH",)])
                sent += 1
                billed += 1
                return BatchResult(len(chosen), skipped, sent, billed, 0, 0, ahead)
            acts = []
            if action == "delete" and chosen:
                acts = [("UNLINK", *[key for key, _, _ in chosen])]
            elif action == "expire":
                acts = [("PEXPIRE", key, policy.max_ttl_seconds * 1000, "NX" if pttl == -1 else "LT")
                        for key, policy, pttl in chosen]
            writes = len(acts) + (1 if progress else 0)
            done = len(chosen)
            # MULTI, the acts, the marker, EXEC: all executed together, or none of the acts.
            total_billed = billed + 2 + writes + writes * regions
            if progress:
                acts.append(("SET", progress.key, f"{progress.head} {progress.done + done} "
                             f"{progress.skipped + skipped} {progress.billed + total_billed}",
                             "EX", MARKER_TTL_SECONDS))
            replies = _send(connection, [("MULTI",), *acts, ("EXEC",)])
            sent += 2 + len(acts)
            billed += 2  # MULTI and EXEC; the queued commands run only with EXEC
            result = replies[-1]
            refused = next((reply for reply in replies[1:-1] if isinstance(reply, redis.ResponseError)), None)
            if refused is not None:  # refused when queued (an ACL): EXEC discarded the transaction
                raise refused
            if isinstance(result, redis.ResponseError):
                raise result
            if result is None:  # a key of the page changed since WATCH: nothing ran, read it again
                continue
            billed += writes + writes * regions
            writes_total += writes
            acted = result[:-1] if progress else result
            actual = sum(int(reply) for reply in acted)
            if actual != done:  # cannot happen under WATCH: refuse to record a wrong figure
                raise KeyspaceError(f"The purge's transaction changed {actual} keys, not the {done} it checked.")
            return BatchResult(done, skipped, sent, billed, writes_total, 0, ahead)
    finally:
        client.connection_pool.release(connection)


def read_marker(node, run_id, *, cost=None) -> Marker | None:
    """The marker of `run_id` on `node` (one GET), or None."""
    raw = node.client.get(marker_key(node, run_id))
    if cost is not None:
        cost.add(sent=1, billed=1)
    if not raw:
        return None
    page, cursor, matched, done, skipped, billed = raw.decode().split()
    return Marker(int(page), cursor, int(matched), int(done), int(skipped), int(billed))


def clear_marker(node, run_id, *, cost=None):
    node.client.delete(marker_key(node, run_id))
    if cost is not None:
        cost.add(sent=1, billed=1, writes=1)
