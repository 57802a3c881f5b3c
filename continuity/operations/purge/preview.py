"""The purge preview: a dry run with exact counts per namespace that touches no key.

The web page never waits on it: `request_preview` decides the target (refusals before any
Redis command; `targets.decide_target`), records an instant estimate (`estimate`), saves a
`previewing` run and enqueues `run_preview` for the worker. `run_preview` goes through
every node of the keyspace (`keyspace.nodes.primaries`: one for a standalone server, each
primary of a cluster), counting the target node by node, saves its progress on the run
row (at most every PURGE_CHECKPOINT_SECONDS; a cancelled preview stops at its next save)
and ends the run `previewed`, ready for `confirm_purge`. `preview_purge` does both in the
caller (the command line, tests).

Each page costs one round trip: the next page's SCAN travels with the count of the current
one (the acting script in count mode), as execution will send them.
"""

import uuid

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from continuity import keyspace
from continuity.billing import Cost
from continuity.keyspace import nodes as keyspace_nodes
from continuity.keyspace import purge as redis_purge
from continuity.models import PurgeRun
from continuity.models.purges import PurgeTargetKey
from continuity.operations.purge import findings as finding_targets
from continuity.operations.purge import targets
from continuity.operations.purge.common import (
    CONDITION_FINDINGS,
    SAMPLE_SIZE,
    Counted,
    Pacer,
    PurgePreview,
    PurgeRefused,
    describe_failure,
    estimated_billed,
    layout_checks,
    namespace_policies,
    resharding,
    split,
)
from continuity.operations.purge.estimate import estimate_target, predicted_costs
from dashboard import jobs

PREVIEW_TASK = "continuity.preview_purge"  # continuity.tasks.purge.preview_purge_task


def scan_command(match, cursor, count):
    """The SCAN of one page, as a command tuple (sent ahead of a page's script call)."""
    return ("SCAN", cursor, "MATCH", match, "COUNT", count)


def page_of(reply):
    """(next cursor, [keys]) of a SCAN reply."""
    cursor, keys = reply
    return int(cursor), list(keys)


def count_node(node, *, database, match, policies, reach, action, condition, batch_size, sample_size=0,
               progress=None, failed=None):
    """A `Counted` for the target `match` on `node`: the figures a purge of it would start
    from, in one round trip per page. `progress(keys matched on this node)` after each page.
    `failed` (a Cost): receives what was sent when a Redis error stops the count."""
    cost = Cost()
    try:
        return _count_pages(node, cost, database=database, match=match, policies=policies, reach=reach,
                            action=action, condition=condition, batch_size=batch_size, sample_size=sample_size,
                            progress=progress)
    except (redis.RedisError, OSError):
        if failed is not None:
            failed.add(sent=cost.sent, billed=cost.billed)
        raise


def _count_pages(node, cost, *, database, match, policies, reach, action, condition, batch_size, sample_size,
                 progress):
    out = Counted()
    want = CONDITION_FINDINGS[condition]
    needs_check = bool(want) or action != PurgeRun.DELETE
    cursor, page = page_of(node.client.execute_command(*scan_command(match, 0, batch_size)))
    cost.add(sent=1, billed=1)
    out.scans += 1
    while True:
        out.pages += 1
        page_keys, page_policies, _outside = split(page, policies, reach)
        out.saw(page, page_keys, page_policies, sample_size)
        before = [scan_command(match, cursor, batch_size)] if cursor else []
        following = None
        if page_keys:
            out.acting_pages += 1
            out.acting_keys += len(page_keys)
        if page_keys and needs_check:  # the count travels with the next page's SCAN
            counted = redis_purge.act(node, page_keys, action="count", policies=page_policies, want=want, cost=cost,
                                      before=before)
            if counted.moved:
                raise resharding(database, node.address, counted.moved)
            would = counted.done
            following = counted.ahead[0] if before else None
        else:
            would = len(page_keys)
        out.actionable += would
        out.changing_pages += 1 if would else 0
        if progress:
            progress(out.matched)
        if before and following is None and not (page_keys and needs_check):
            following = node.client.execute_command(*before[0])
            cost.add(sent=1, billed=1)
        if following is None:
            break
        out.scans += 1
        cursor, page = page_of(following)
    out.commands, out.billed = cost.sent, cost.billed
    return out


def new_run(*, database, kind, value=b"", action=None, review_id=None, finding="", namespace=None, actor=None,
            actor_label="", rate_cap=None, batch_size=None, status=PurgeRun.PREVIEWING, explicit_keys=False):
    """An unsaved run of a decided target — the scope namespace ∩ literal prefix ∩ finding
    (`targets.decide_target`; `action` None: the least destructive fix, never Delete) —
    with its instant estimate and predicted costs (at most one Redis command per primary:
    DBSIZE), or PurgeRefused."""
    policies = namespace_policies(database)
    target = targets.decide_target(database, kind=kind, value=value, action=action, review_id=review_id,
                                   finding=finding, policies=policies, explicit_keys=explicit_keys,
                                   namespace=namespace)
    run = PurgeRun(database=database, target_kind=kind, target_value=target.shown,
                   target_token=keyspace.encode_key(target.head), match_pattern=keyspace.display_key(target.pattern),
                   review_id=review_id, finding=target.finding, action=target.action, condition=target.condition,
                   reach=target.reach_tokens(), requested_by=actor,
                   requested_label=actor_label or (actor.get_username() if actor else ""),
                   rate_cap=settings.PURGE_RATE_CAP if rate_cap is None else rate_cap,
                   batch_size=batch_size or settings.PURGE_BATCH_SIZE, status=status)
    try:  # before anything is saved or scanned: a record that contradicts the server is refused
        with keyspace_nodes.primaries(database) as nodes:
            if target.heads:
                estimate_target(database, heads=target.heads, policies=policies, whole_heads=target.whole,
                                reach=target.reach, findings=CONDITION_FINDINGS[target.condition],
                                nodes=nodes).apply(run)
                run.estimate_detail.update(predicted_costs(run, heads=target.heads, nodes=len(nodes.nodes),
                                                           read_regions=len(database.read_regions or ())))
            # What the estimate sent (the slot map, DBSIZE per primary) is the preview's first cost.
            for cost in nodes.drain().values():
                run.preview_commands += cost.sent
                run.preview_billed_commands += cost.billed
    except keyspace.ClusterRefusal as exc:
        raise PurgeRefused(str(exc)) from None
    return run


def request_preview(**target) -> PurgeRun:
    """Save a `previewing` run with its instant estimate and enqueue its preview for the
    worker when the transaction commits. Sends no SCAN: the page shows the estimate and
    polls the run for the preview's progress. Takes `new_run`'s arguments. When the broker
    refuses the task, the preview is recorded failed and `dashboard.jobs.EnqueueRefused`
    says so."""
    with transaction.atomic():
        run = new_run(**target)
        run.save()
        jobs.enqueue_on_commit(PREVIEW_TASK, run.pk, on_refused=preview_refused(run))
    return run


def preview_refused(run):
    """The broker refused the preview's task: the preview is recorded failed (nothing was
    scanned); the operator's message."""
    def refused(reason):
        fail_preview(run_id=run.pk, error=f"Never started: {reason}.")
        return (f"The preview of purge #{run.pk} did not start: {reason}. It is recorded failed and nothing was "
                "scanned or touched; preview again once the broker is back (/healthz shows it).")
    return refused


def estimate_purge(**target) -> PurgeRun:
    """Save a run that skips the preview scan (`manage.py purge --yes`: it is confirmed and
    executed at once, and execution counts exactly as it acts): `previewed` with only the
    instant estimate. Finding targets need their preview, which stores the keys to act on."""
    if target.get("kind") == PurgeRun.FINDING:
        raise PurgeRefused("A review-finding purge needs its preview: it finds the keys to act on.")
    run = new_run(**target, status=PurgeRun.PREVIEWED)
    run.skipped_preview = True
    run.save()
    return run


class PreviewStopped(Exception):
    """The preview was cancelled, or another worker took it over: stop quietly."""


def preview_pacer(run, claim, progress=None):
    """The `Pacer` of a running preview: `advance(scanned, matched)` after each page tells
    `progress` (every page) and saves the figures on the run's row (when due) while `claim`
    holds it; PreviewStopped once it no longer does (cancelled: the cancel cleared the claim)."""
    counts = [0, 0]

    def save():
        if not PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.PREVIEWING, claim_token=claim).update(
                preview_scanned=counts[0], preview_matched=counts[1], heartbeat_at=timezone.now()):
            raise PreviewStopped
        return "ok"

    pacer = Pacer(save)

    def advance(scanned, matched):
        counts[:] = [scanned, matched]
        if progress:
            progress(scanned, matched)
        pacer.after_page(0)

    pacer.counts, pacer.advance = counts, advance
    return pacer


def run_preview(*, run_id, keys=None, sample_size=SAMPLE_SIZE, progress=None) -> PurgePreview | None:
    """Run the dry run of `previewing` run `run_id` to its end: the exact count per
    namespace (and, for expire or findings, what still qualifies), a sample, the commands
    execution will cost; the run becomes `previewed`. Touches no key.

    Idempotent: a run that is no longer previewing is left alone (None), and a delivery
    that finds another worker's preview in progress takes it over (the other stops at its
    next save). Cancelled meanwhile: None. Redis errors and refusals propagate with the run
    still previewing (`fail_preview` records a final failure)."""
    claim = uuid.uuid4().hex
    if not PurgeRun.objects.filter(pk=run_id, status=PurgeRun.PREVIEWING).update(
            claim_token=claim, heartbeat_at=timezone.now(), preview_scanned=0, preview_matched=0):
        return None
    run = PurgeRun.objects.select_related("database").get(pk=run_id)
    pacer = preview_pacer(run, claim, progress)
    failed = Cost()  # what a Redis error stopped: executed all the same, and billed to the run
    try:
        policies = namespace_policies(run.database)  # the target was decided with the run (`new_run`)
        targets.check_keyspace(run.database, targets.run_heads(run))
        stats = None
        if run.target_kind == PurgeRun.FINDING and keys is None:
            stats = targets.finding_stats(database=run.database, review_id=run.review_id, finding=run.finding)
            reach = targets.stored_reach(run, policies)  # the scope decided with the run
            stats = targets.scoped_stats(stats, head=run.target_bytes(),
                                         reach=None if reach is None else {policy.prefix for policy in reach})
            if not stats:
                raise PurgeRefused(f"The namespaces of this purge's scope no longer have {run.finding} keys in "
                                   f"review #{run.review_id}, or are no longer registered.")
        PurgeTargetKey.objects.filter(run=run).delete()  # a previous attempt's partial list
        try:
            with keyspace_nodes.primaries(run.database) as nodes:
                if nodes.is_cluster:  # a record naming another node of this cluster reaches the same keys
                    targets.check_keyspace(run.database, targets.run_heads(run),
                                           [node.address for node in nodes.nodes])
                preview = _count(run, nodes, policies, stats, keys, sample_size, pacer, failed)
        except (keyspace.ClusterRefusal, redis_purge.ScriptingRequired) as exc:  # final: a retry is refused alike
            raise PurgeRefused(str(exc)) from None
        except keyspace_nodes.SlotsMoved as exc:
            raise PurgeRefused(f"{exc}: the cluster is being resharded, so the counts would be wrong. Preview again "
                               "once the slots stopped moving. Nothing was changed.") from None
        figures = {"preview_matched": preview.matched, "preview_actionable": preview.actionable,
                   "preview_namespaces": preview.namespaces, "preview_sample": preview.sample,
                   "preview_commands": run.preview_commands + preview.commands,
                   "estimated_commands": preview.estimated_commands,
                   "preview_billed_commands": run.preview_billed_commands + preview.billed,
                   "estimated_billed_commands": preview.estimated_billed,
                   "preview_nodes": preview.nodes}
        if not PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.PREVIEWING, claim_token=claim).update(
                status=PurgeRun.PREVIEWED, claim_token="", heartbeat_at=None, preview_scanned=pacer.counts[0],
                **figures):
            raise PreviewStopped
    except PreviewStopped:
        PurgeTargetKey.objects.filter(run_id=run_id).delete()
        return None
    except BaseException:
        PurgeTargetKey.objects.filter(run_id=run_id).delete()
        PurgeRun.objects.filter(pk=run_id, claim_token=claim).update(
            claim_token="", heartbeat_at=None, preview_commands=F("preview_commands") + failed.sent,
            preview_billed_commands=F("preview_billed_commands") + failed.billed)
        raise
    run.refresh_from_db()
    # The preview's cost is the run's: its instant estimate's commands and its scan's.
    return PurgePreview(run=run, matched=preview.matched, actionable=preview.actionable,
                        namespaces=preview.namespaces, sample=preview.sample, commands=run.preview_commands,
                        estimated_commands=preview.estimated_commands, billed=run.preview_billed_commands,
                        estimated_billed=preview.estimated_billed, nodes=preview.nodes)


def _count(run, nodes, policies, stats, keys, sample_size, pacer, failed):
    """The preview's figures, node by node (`count_node`, or a finding's offenders); what a
    Redis error stopped is added to `failed` (the nodes counted before it, the keyspace's
    own CLUSTER NODES, the node's pages so far)."""
    if run.target_kind == PurgeRun.FINDING:
        return finding_targets.preview_offenders(run, nodes, policies=policies, keys=keys, stats=stats,
                                                 sample_size=sample_size, pacer=pacer, failed=failed)
    total, per_node = Counted(), {}
    try:
        nodes.check()  # a slot being migrated now would make the counts wrong
        for node in nodes.nodes:
            base = total.matched

            def seen(matched, base=base):
                pacer.advance(base + matched, base + matched)

            part = count_node(node, match=run.match_bytes(), policies=policies,
                              reach=targets.stored_reach(run, policies), action=run.action,
                              condition=run.condition, batch_size=run.batch_size, sample_size=sample_size,
                              progress=seen, database=run.database, failed=failed)
            per_node[node.address] = part.matched
            total.merge(part, sample_size)
    except (redis.RedisError, OSError):
        failed.add(sent=total.commands, billed=total.billed)
        for cost in nodes.drain().values():
            failed.add(sent=cost.sent, billed=cost.billed)
        raise
    for cost in nodes.drain().values():  # the keyspace's own CLUSTER NODES
        total.commands += cost.sent
        total.billed += cost.billed
    checks = layout_checks(nodes)
    return PurgePreview(run=run, matched=total.matched, actionable=total.actionable, namespaces=total.namespaces,
                        sample=total.sample, commands=total.commands,
                        estimated_commands=total.scans + total.pages + 2 * len(nodes.nodes) + checks,
                        billed=total.billed,
                        estimated_billed=estimated_billed(
                            total, nodes=len(nodes.nodes), action=run.action, condition=run.condition, scanned=True,
                            unlink_each=nodes.is_cluster, read_regions=len(run.database.read_regions or ()),
                            checks=checks),
                        nodes=per_node)


def fail_preview(*, run_id, error):
    """Record a preview as failed (it will not be retried). A dry run: not audited."""
    return bool(PurgeRun.objects.filter(pk=run_id, status=PurgeRun.PREVIEWING).update(
        status=PurgeRun.FAILED, error=error, finished_at=timezone.now(), claim_token="", heartbeat_at=None))


def preview_purge(*, database, kind, value=b"", action=None, review_id=None, finding="", namespace=None,
                  keys=None, actor=None, actor_label="", rate_cap=None, batch_size=None, sample_size=SAMPLE_SIZE,
                  progress=None, on_estimate=None) -> PurgePreview:
    """The preview, here and now (the command line): save a `previewing` run and count
    exactly, node by node and per namespace, what a purge would match. Touches no key.
    Returns the `previewed` run's figures for `confirm_purge`; a refusal saves nothing, a
    Redis error leaves the run failed and propagates. `on_estimate(run)`: called with the
    decided run and its instant estimate (scope, keys, predicted costs) before any SCAN."""
    run = new_run(database=database, kind=kind, value=value, action=action, review_id=review_id, finding=finding,
                  namespace=namespace, actor=actor, actor_label=actor_label, rate_cap=rate_cap, batch_size=batch_size,
                  explicit_keys=keys is not None)
    if on_estimate:
        on_estimate(run)
    run.save()
    try:
        return run_preview(run_id=run.pk, keys=keys, sample_size=sample_size, progress=progress)
    except Exception as exc:
        fail_preview(run_id=run.pk, error=str(exc) if isinstance(exc, PurgeRefused) else describe_failure(exc))
        raise
