"""One part of a TTL review: one node of the keyspace, read from its own checkpoint.

A review is one part per node (`keyspace.nodes.primaries`: one for a standalone server, one
per primary of a Redis Cluster), each a ReviewNodeRun row with its own SCAN cursor,
checkpoint (its Tally) and claim, so a part whose worker died resumes alone. `review_node`
is the one loop every part runs, on either topology; `run.finish` merges the parts.

Exact review: `scan_node` streams the node's batches (`keyspace.stream.batches`) and
folds them into the part's Tally, checkpointing every `checkpoint_every` batches. A batch
sent ahead when the loop stops early is read and counted (`stream.Stopped`).

Sampled review: the part draws its share of the sample at random from its node
(`stream.sample_batches`); small and cheap, it keeps no checkpoint (a crashed worker draws
it again).

Postgres outages: a part's checkpoints ride through a short outage
(`postgres.ride_through`, JOB_DB_OUTAGE_SECONDS); past the bound the part stops with its
checkpoint and is handed back (`NodeInterrupted.postgres`), and the run stays running.
"""

import contextlib
import time

import redis
from django.conf import settings
from django.utils import timezone

from continuity import keyspace
from continuity.billing import Cost
from continuity.keyspace import nodes as keyspace_nodes
from continuity.keyspace import stream
from continuity.models import Namespace, ReviewNodeRun, ReviewRun
from continuity.operations.review.tally import Classifier, Tally, fold
from continuity.policy import Policies
from dashboard import postgres


DBSIZE = ("DBSIZE",)


class NodeInterrupted(Exception):
    """Reading a node failed, or Postgres stayed away past JOB_DB_OUTAGE_SECONDS
    (`postgres`); its part was handed back (queued) with its checkpoint (with Postgres
    away, its lease lapses instead)."""

    def __init__(self, node, reason, cause, *, postgres=False):
        super().__init__(reason)
        self.node = node
        self.reason = reason
        self.cause = cause
        self.postgres = postgres
        self.transient = postgres or keyspace.capabilities.is_transient(cause)


def plan(database, policies, strategy=None):
    """(strategy, Needs) of a review of `database` with `policies`: see `keyspace.stream`.
    On Upstash every read is billed and a script on undeclared keys takes the global lock:
    read only what a policy needs, over declared keys. Elsewhere speed counts: SCAN inside
    the script, and MEMORY USAGE always (the per-namespace bytes and top keys). `strategy`
    overrides the choice (tests and benchmarks)."""
    upstash = database.bills_per_command()
    strategy = strategy or (stream.DECLARED_KEYS if upstash else stream.SCAN_SCRIPT)
    needs_type = any(policy.expected_type for policy in policies)
    needs_memory = any(policy.max_payload_bytes for policy in policies) or not upstash
    return strategy, stream.Needs(type=needs_type, memory=needs_memory)


def sample_node(node, classifier, tally, *, size, needs, on_batch, clock=time.perf_counter, population=None,
                failed=None):
    """A review of a random sample of about `size` keys (see `stream.sample_keys`) of
    `node`, counted into `tally`. `failed`: see `stream.batches`."""
    started = clock()
    for fetched in stream.sample_batches(node, size=size, prefix=classifier.key_prefix, needs=needs,
                                         population=population, failed=failed):
        fold(tally, classifier, fetched)
        tally.elapsed_s = clock() - started
        if on_batch is not None:
            on_batch(tally)


def scan_node(node, classifier, tally, *, cursor, batch, on_checkpoint, checkpoint_every, on_batch,
              clock=time.perf_counter, strategy=stream.SCAN_SCRIPT, needs=stream.Needs(), fault=None, closing=None,
              failed=None):
    """The SCAN loop of one node. Returns True when the scan completed, False when
    `on_checkpoint` said stop (cancelled, or the claim was lost): the batch already
    requested is then read and its cost added to `tally`. Redis errors propagate. At a
    checkpoint no request is in flight, so a worker that dies right after one has nothing
    read and unrecorded. `fault(point, node)`: the test hook, called at "checkpointed".
    `closing`: a list that receives the replies of DBSIZE sent with the last batch, where the
    stream could carry it (its cost is in the tally then). `failed`: see `stream.batches`."""
    last_mark = clock()
    sizer = stream.BatchSizer(node.client, budget_ms=settings.SCRIPT_BUDGET_MS, start=batch)
    feed = stream.batches(node, cursor=cursor, count=batch, prefix=classifier.key_prefix, needs=needs,
                          strategy=strategy, sizer=sizer, pause_every=checkpoint_every, counted=tally.batches,
                          closing=[DBSIZE] if closing is not None else (), failed=failed)
    with contextlib.closing(feed):
        for fetched in feed:
            fold(tally, classifier, fetched)
            now = clock()
            tally.elapsed_s += now - last_mark
            last_mark = now
            if on_batch is not None:
                on_batch(tally)
            if fetched.cursor == 0:
                if closing is not None:
                    closing.extend(fetched.closing)
                return True
            if tally.batches % checkpoint_every == 0:
                if not on_checkpoint(fetched.cursor, tally):
                    _stop(feed, tally)
                    return False
                if fault is not None:
                    fault("checkpointed", node)
    return True


def _stop(feed, tally):
    """Stop `feed` early, counting the request it had in flight."""
    spent = Cost()
    with contextlib.suppress(StopIteration):
        feed.throw(stream.Stopped(spent))
    tally.commands += spent.sent
    tally.billed += spent.billed


def review_node(part, *, namespaces=None, checkpoint_every=None, on_batch=None, strategy=None, fault=None):
    """Review the node of `part` (a ReviewNodeRun) from its checkpoint (or, a sampled part,
    draw its share of the sample) and store its Tally on the row (status succeeded);
    merges nothing. Returns the row's status; a part another worker holds or that already
    ended (cancelled with its run) is left alone, and a part whose run was cancelled stops
    at its next checkpoint. Redis failures raise NodeInterrupted after releasing the part;
    so does Postgres staying away past JOB_DB_OUTAGE_SECONDS (`postgres`; checkpoints ride
    through shorter outages)."""
    token, _resumed = postgres.ride_through(lambda: part.claim(settings.REVIEW_LEASE_SECONDS))
    if token is None:
        return part.status
    run = ReviewRun.objects.select_related("database").get(pk=part.run_id)
    database = run.database
    if namespaces is None:
        namespaces = list(Namespace.objects.for_database(database))
    classifier = Classifier(database, namespaces)
    strategy, needs = plan(database, Policies.of(namespaces), strategy or run.strategy or None)
    tally = Tally.from_json(part.aggregates)

    def save(**fields):  # rides through a Postgres restart; False when cancelled or taken over
        return postgres.ride_through(lambda: part.checkpoint(token, **fields)) == "ok"

    node = None
    failed = Cost()  # a round trip that raised: executed all the same
    try:
        node = keyspace_nodes.node_at(database, part.address, part.slots)
        if node.address != part.address:  # the one node of a standalone server, reached at another address
            postgres.ride_through(lambda: ReviewNodeRun.objects.filter(pk=part.pk).update(address=node.address))
            part.address = node.address
        if part.sample_size:
            sample_node(node, classifier, tally, size=part.sample_size, needs=needs, on_batch=on_batch,
                        population=part.dbsize_before, failed=failed)
            postgres.ride_through(lambda: _succeeded(part, token, tally, part.dbsize_before))
            part.refresh_from_db()
            return part.status
        if part.dbsize_before is None:
            size = keyspace.dbsize(node.client)
            tally.commands += 1
            tally.billed += 1
            save(dbsize_before=size, aggregates=tally.to_json(), commands=tally.commands,
                 billed_commands=tally.billed)

        def on_checkpoint(cursor, tally):
            return save(cursor=str(cursor), batches=tally.batches, keys_scanned=tally.keys_scanned,
                        commands=tally.commands, billed_commands=tally.billed, aggregates=tally.to_json())

        closing = []
        finished = scan_node(node, classifier, tally, cursor=int(part.cursor), batch=run.batch_size,
                             on_checkpoint=on_checkpoint,
                             checkpoint_every=checkpoint_every or settings.REVIEW_CHECKPOINT_BATCHES,
                             on_batch=on_batch, strategy=strategy, needs=needs, fault=fault, closing=closing,
                             failed=failed)
        if finished:
            if closing and not isinstance(closing[0], Exception):  # it travelled with the last page
                size_after = int(closing[0])
            else:
                size_after = keyspace.dbsize(node.client) if not closing else None
                tally.commands += 0 if closing else 1
                tally.billed += 0 if closing else 1
            postgres.ride_through(lambda: _succeeded(part, token, tally, size_after))
    except (postgres.PostgresAway, *postgres.GONE) as exc:
        reason = (f"{part.address}: {postgres.describe_outage(exc)}. The part keeps its last checkpoint and is not "
                  f"failed: its task retries it, and the next review request resumes it.")
        postgres.let_go(lambda: part.release(token, reason))
        raise NodeInterrupted(part, reason, exc, postgres=True) from exc
    except (redis.RedisError, keyspace.KeyspaceError, OSError) as exc:
        if node is not None and keyspace_nodes.is_moved(exc):  # its slots moved away mid-read: final
            exc = keyspace_nodes.moved_away(database, node, part.slots)
        reason = f"{part.address}: {keyspace.describe_error(exc)}"
        postgres.let_go(lambda: _hand_back(part, token, tally, failed, reason))
        raise NodeInterrupted(part, reason, exc) from exc
    postgres.ride_through(part.refresh_from_db)
    return part.status


def _hand_back(part, token, tally, failed, reason):
    """Hand a part back after a Redis error, its counts those of its checkpoint (what was read
    since is read again) and its commands and billed figures all it sent: Redis executed
    them (the worker is alive to say so; one killed cannot, see docs/engine.md)."""
    part.refresh_from_db(fields=["aggregates"])
    kept = Tally.from_json(part.aggregates)
    kept.commands, kept.billed = tally.commands + failed.sent, tally.billed + failed.billed
    part.checkpoint(token, aggregates=kept.to_json(), commands=kept.commands, billed_commands=kept.billed)
    return part.release(token, reason)


def _succeeded(part, token, tally, size_after):
    """Store a part's Tally and end it, while it holds the claim (a cancelled part stays so);
    why an earlier attempt stopped (`release`) is no longer its news."""
    ReviewNodeRun.objects.filter(pk=part.pk, status=ReviewNodeRun.RUNNING, claim_token=token).update(
        status=ReviewNodeRun.SUCCEEDED, error="", cursor="0", batches=tally.batches, keys_scanned=tally.keys_scanned,
        commands=tally.commands, billed_commands=tally.billed, dbsize_after=size_after,
        aggregates=tally.to_json(), claim_token="", finished_at=timezone.now(), heartbeat_at=timezone.now())
