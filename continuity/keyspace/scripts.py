"""Lua scripts on a monitored Redis: the one place that runs them.

`Script(body, read_only=…)` runs by SHA on one node (`run`), or on a connection already
holding a request in flight (`send` / `receive`, the review's one-ahead stream). It

- sends EVALSHA_RO for a read-only script where the server has it and the user may run it
  (remembered per client in `capabilities`), else EVALSHA;
- on NOSCRIPT (a fresh server, SCRIPT FLUSH, a restart) sends SCRIPT LOAD and the call once
  more; where the server still lacks the script (Upstash: SCRIPT LOAD is not
  read-your-writes, a replica may answer) it sends the body itself with EVAL_RO / EVAL;
- counts into a `billing.Cost` what it sent and what Redis executed: a NOSCRIPT EVALSHA and
  a SCRIPT LOAD were executed (billed); an EVALSHA_RO that the server does not know or the
  ACL refuses was rejected before execution (sent, not billed), as `INFO commandstats`
  counts them (`calls` against `rejected_calls`). The calls a script makes inside are the
  caller's to add: each script reports them in its reply.

Keys. On a standalone server a script declares the keys it touches (KEYS): on Upstash that
locks only those keys, not the whole database. A Redis Cluster refuses declared keys of more
than one hash slot (CROSSSLOT) but lets a script touch any key its own node serves, so on a
cluster node (`declare=False`) the keys travel in ARGV after the arguments, followed by
their count, and `KEYS_PRELUDE` gives the script the same `keys` table either way.
"""

import hashlib

import redis

from continuity.billing import Cost
from continuity.keyspace import capabilities, rest

# The first lines of every script that takes keys: `keys` (and `nkeys`) from KEYS when
# they were declared, else from the end of ARGV (`Script.run(declare=False)`); `nargs` is
# how many ARGV entries are arguments.
KEYS_PRELUDE = """
local keys, nkeys, nargs = KEYS, #KEYS, #ARGV
if nkeys == 0 and nargs > 0 then
  nkeys = tonumber(ARGV[nargs])
  nargs = nargs - nkeys - 1
  keys = {}
  for i = 1, nkeys do keys[i] = ARGV[nargs + i] end
end
"""


def _refuses(exc, name):
    """True when `exc` refuses the command `name` itself (unknown before Redis 7, or not
    allowed to this user): rejected before execution, so not billed. Over REST an EVALSHA
    naming a non-UTF-8 key travels as EVAL of the body (`rest`), and is refused as 'eval'."""
    text = str(exc).lower()
    names = {name, name.replace("evalsha", "eval")}
    return (isinstance(exc, redis.ResponseError) and any(f"'{each}'" in text for each in names)
            and ("unknown command" in text or "no permissions to run" in text))


class Script:
    """One Lua script, run by SHA (see the module docstring)."""

    def __init__(self, body, *, read_only):
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()
        self.read_only = read_only
        rest.remember_script(body)  # over REST, a call naming a non-UTF-8 key travels as EVAL of the body

    def command(self, client, *, body=False):
        """The command for this script on `client`: EVALSHA_RO / EVAL_RO for a read-only
        script once the server took one (or before anyone asked), else EVALSHA / EVAL."""
        read_only = self.read_only and capabilities.of(client).read_only_scripts is not False
        return ("EVAL" if body else "EVALSHA") + ("_RO" if read_only else "")

    @staticmethod
    def arguments(keys, args, declare):
        """(numkeys, *arguments) of a call over `keys` with `args`."""
        if declare:
            return (len(keys), *keys, *args)
        return (0, *args, *keys, len(keys)) if keys else (0, *args)

    def run(self, client, keys=(), args=(), *, cost, declare=True, before=(), inner=None):
        """The script's reply on `client` over `keys` with `args`. `args` may be a function
        of the commands billed so far in this call (a script that records its own cost,
        such as the purge's progress marker, is told what its retries and `before` cost).
        `before`: commands sent ahead of the call in the same round trip (a page's SCAN);
        then the result is (their replies, the script's reply). Every command sent is
        counted in `cost` as the module docstring says; an error a `before` command or the
        script answered propagates once everything sent was counted. `inner(reply)`: the
        commands the script ran inside (billed), counted with the reply."""
        caps = capabilities.of(client)
        spent = Cost()
        ahead = []

        def call(command, target, load=False):
            pending = len(before) if before and not ahead else 0  # sent ahead in this round trip
            built = args(spent.billed + pending + load + 1) if callable(args) else args
            arguments = (command, target, *self.arguments(keys, built, declare))
            if load:  # SCRIPT LOAD, then the call, in one round trip
                pipe = client.pipeline(transaction=False)
                pipe.execute_command("SCRIPT LOAD", self.body)
                pipe.execute_command(*arguments)
                loaded, reply = pipe.execute(raise_on_error=False)
                spent.add(sent=2, billed=0 if _refuses(loaded, "script|load") else 1)
                if isinstance(reply, redis.ResponseError) and _refuses(reply, command.lower()):
                    pass  # rejected before execution
                else:
                    spent.add(billed=1)
                if isinstance(loaded, Exception):
                    raise loaded
                if isinstance(reply, Exception):
                    raise reply
                return reply
            if not ahead and before:
                pipe = client.pipeline(transaction=False)
                for entry in before:
                    pipe.execute_command(*entry)
                pipe.execute_command(*arguments)
                replies = pipe.execute(raise_on_error=False)
                spent.add(sent=len(before) + 1)
                for entry, answer in zip((*before, arguments), replies):
                    if not (isinstance(answer, redis.ResponseError) and _refuses(answer, str(entry[0]).lower())):
                        spent.add(billed=1)
                ahead.extend(replies[:-1])
                for answer in replies:
                    if isinstance(answer, Exception):
                        raise answer
                return replies[-1]
            spent.add(sent=1)
            try:
                reply = client.execute_command(*arguments)
            except redis.ResponseError as exc:
                if not _refuses(exc, command.lower()):
                    spent.add(billed=1)  # executed: NOSCRIPT, or an error raised inside the script
                raise
            spent.add(billed=1)
            return reply

        def result(reply):
            if inner is not None:
                spent.add(billed=inner(reply))
            return (list(ahead), reply) if before else reply

        try:
            while True:
                command = self.command(client)
                try:
                    reply = call(command, self.sha)
                except redis.exceptions.NoScriptError:
                    if command == "EVALSHA_RO":
                        caps.read_only_scripts = True
                    break
                except redis.ResponseError as exc:
                    if command == "EVALSHA_RO" and _refuses(exc, "evalsha_ro"):
                        caps.read_only_scripts = False  # remembered for this client: asked once
                        continue
                    if command == "EVALSHA_RO":
                        caps.read_only_scripts = True
                    raise
                if command == "EVALSHA_RO":
                    caps.read_only_scripts = True
                return result(reply)
            if isinstance(client, redis.RedisCluster):  # SCRIPT LOAD goes to every primary (`KeyRouter`)
                spent.add(sent=1, billed=1)
                client.script_load(self.body)
                reply = call(self.command(client), self.sha)
            else:  # SCRIPT LOAD and the call again, in one round trip
                reply = call(self.command(client), self.sha, load=True)
            return result(reply)
        except redis.exceptions.NoScriptError:  # not loaded yet where it answered (Upstash): the body itself
            return result(call(self.command(client, body=True), self.body))
        finally:
            cost.add(sent=spent.sent, billed=spent.billed)

    def run_many(self, client, calls, *, cost, declare=True, before=(), after=(), inner=None):
        """Several calls of this script on `client` in one round trip (`calls`: [(keys, args)],
        `args` not a function), with `before` commands ahead of them and `after` commands
        behind (free ones: INFO), and the replies: (`before`'s, [each call's], `after`'s).
        Counted as `run` counts; `after` commands are neither counted nor raised: their
        replies may be errors. A NOSCRIPT costs one more round trip (SCRIPT LOAD and the
        calls again, together). An error `before` or a call answered propagates once
        everything sent was counted, the commands run inside the calls that answered
        (`inner`, as in `run`) included."""
        if isinstance(client, redis.RedisCluster) or not calls:
            ahead = []
            replies = [self.run(client, keys, args, cost=cost, declare=declare, before=before if i == 0 else (),
                                inner=inner) for i, (keys, args) in enumerate(calls)]
            if before and replies:
                ahead, replies[0] = replies[0]
            return ahead, replies, []
        caps = capabilities.of(client)
        spent = Cost()
        answers = [None] * len(calls)
        pending = list(range(len(calls)))
        ahead, behind = [], []
        load = body = False
        try:
            for attempt in range(4):
                command = self.command(client, body=body)
                lead = list(before) if attempt == 0 else []
                tail = list(after) if attempt == 0 else []
                pipe = client.pipeline(transaction=False)
                for entry in lead:
                    pipe.execute_command(*entry)
                if load:
                    pipe.execute_command("SCRIPT LOAD", self.body)
                for i in pending:
                    keys, args = calls[i]
                    pipe.execute_command(command, self.body if body else self.sha, *self.arguments(keys, args, declare))
                for entry in tail:
                    pipe.execute_command(*entry)
                replies = pipe.execute(raise_on_error=False)
                failure = None
                if lead:
                    ahead = replies[:len(lead)]
                    spent.add(sent=len(lead))
                    for entry, answer in zip(lead, ahead):
                        if not (isinstance(answer, redis.ResponseError) and _refuses(answer, str(entry[0]).lower())):
                            spent.add(billed=1)
                    failure = next((answer for answer in ahead if isinstance(answer, Exception)), None)
                if tail:
                    behind = replies[len(replies) - len(tail):]
                replies = replies[len(lead):len(replies) - len(tail)]
                if load:
                    loaded, replies = replies[0], replies[1:]
                    spent.add(sent=1, billed=0 if _refuses(loaded, "script|load") else 1)
                    failure = failure or (loaded if isinstance(loaded, Exception) else None)
                again, refused_ro, noscript = [], False, False
                for i, answer in zip(pending, replies):
                    spent.add(sent=1)
                    if command == "EVALSHA_RO" and isinstance(answer, redis.ResponseError) and \
                            _refuses(answer, "evalsha_ro"):
                        refused_ro = True  # rejected before execution: not billed; EVALSHA from now on
                        again.append(i)
                        continue
                    spent.add(billed=1)  # executed: a reply, NOSCRIPT, or an error raised inside the script
                    if isinstance(answer, redis.exceptions.NoScriptError):
                        noscript = True
                        again.append(i)
                    elif isinstance(answer, Exception):
                        failure = failure or answer
                    else:
                        answers[i] = answer
                        spent.add(billed=inner(answer) if inner is not None else 0)
                if command.endswith("_RO"):
                    caps.read_only_scripts = not refused_ro
                if failure is not None:
                    raise failure
                if not again:
                    return ahead, answers, behind
                pending = again
                if noscript:  # SCRIPT LOAD with the calls again; where still unknown, the body itself
                    body, load = load, not load
            raise redis.ResponseError("the script could not be run on this server")
        finally:
            cost.add(sent=spent.sent, billed=spent.billed)

    # --- one request in flight on a connection (the review's stream) -----------------------
    def send(self, connection, client, keys=(), args=(), *, declare=True):
        """Send a call on `connection` (taken from `client`'s pool) without reading its reply."""
        connection.send_command(self.command(client), self.sha, *self.arguments(keys, args, declare))

    def receive(self, connection, client, keys=(), args=(), *, cost, declare=True):
        """The reply of a call `send` sent, counted in `cost`; on NOSCRIPT the script is
        loaded on that connection and the call sent again."""
        cost.add(sent=1, billed=1)
        try:
            return connection.read_response()
        except redis.exceptions.NoScriptError:  # SCRIPT LOAD and the call again, in one round trip
            connection.send_packed_command(connection.pack_commands([
                ("SCRIPT", "LOAD", self.body),
                (self.command(client), self.sha, *self.arguments(keys, args, declare))]))
            cost.add(sent=2, billed=2)
            errors, reply = [], None
            for _ in range(2):  # both replies are read, so none is left on the connection
                try:
                    reply = connection.read_response()
                except redis.ResponseError as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
            return reply
