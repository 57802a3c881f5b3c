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
    allowed to this user): rejected before execution, so not billed."""
    text = str(exc).lower()
    return (isinstance(exc, redis.ResponseError) and f"'{name}'" in text
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

    def run(self, client, keys=(), args=(), *, cost, declare=True, before=()):
        """The script's reply on `client` over `keys` with `args`. `args` may be a function
        of the commands billed so far in this call (a script that records its own cost,
        such as the purge's progress marker, is told what its retries and `before` cost).
        `before`: commands sent ahead of the call in the same round trip (a page's SCAN);
        then the result is (their replies, the script's reply). Every command sent is
        counted in `cost` as the module docstring says; an error a `before` command or the
        script answered propagates once everything sent was counted."""
        caps = capabilities.of(client)
        spent = Cost()
        ahead = []

        def call(command, target):
            pending = len(before) if before and not ahead else 0  # sent ahead in this round trip
            built = args(spent.billed + pending + 1) if callable(args) else args
            arguments = (command, target, *self.arguments(keys, built, declare))
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
            spent.add(sent=1, billed=1)
            client.script_load(self.body)
            try:
                return result(call(self.command(client), self.sha))
            except redis.exceptions.NoScriptError:
                return result(call(self.command(client, body=True), self.body))
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
        except redis.exceptions.NoScriptError:
            connection.send_command("SCRIPT", "LOAD", self.body)
            connection.read_response()
            connection.send_command(self.command(client), self.sha, *self.arguments(keys, args, declare))
            cost.add(sent=2, billed=2)
            return connection.read_response()
