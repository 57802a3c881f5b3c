"""The purge preview: a dry run with exact counts per namespace that touches no key.

The web page never waits on it: `request_preview` decides the target (refusals before any
Redis command), records an instant estimate (`estimate`), saves a `previewing` run and
enqueues `run_preview` for the worker. `run_preview` streams the target with SCAN, saves
its progress on the run row (at most every PURGE_CHECKPOINT_SECONDS; a cancelled preview
stops at its next save) and ends the run `previewed`, ready for `confirm_purge`.
`preview_purge` does both in the caller (the command line, tests).
"""

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from continuity import keyspace
from continuity.keyspace import purge as redis_purge
from continuity.models import PurgeRun
from continuity.models.purges import PurgeTargetKey, new_claim
from continuity.operations.purge import findings as finding_targets
from continuity.operations.purge import targets
from continuity.operations.purge.common import (
    CONDITION_FINDINGS,
    SAMPLE_SIZE,
    PurgePreview,
    estimated_billed,
    PurgeRefused,
    namespace_policies,
    split,
)
from continuity.operations.purge import cluster as purge_cluster
from continuity.operations.purge.estimate import estimate_target
from dashboard import jobs, postgres
from dashboard.scanning import find_secrets

PREVIEW_TASK = "continuity.preview_purge"  # continuity.tasks.purge.preview_purge_task
SECRET_TARGET = ("This target looks like a secret ({kinds}). It was not saved and is not shown again. A purge "
                 "target is a key prefix or pattern; if it was a real secret, rotate it.")


def scan_pages(client, *, match, cursor=0, count):
    """Yield (next cursor or None at the end, [keys]) SCAN pages from `cursor`."""
    while True:
        cursor, page = keyspace.scan_page(match=match, cursor=cursor, count=count, client=client)
        yield (None if cursor == 0 else cursor), page
        if cursor == 0:
            return


@dataclass
class Counted:
    """What a SCAN over a target found, acting on nothing: keys matched, keys the action
    would change now, matches per namespace prefix, a sample (key tokens), the commands
    sent, and the SCAN pages of them that held keys of a namespace (one acting call each)."""

    matched: int = 0
    actionable: int = 0
    namespaces: dict = field(default_factory=dict)
    sample: list = field(default_factory=list)
    commands: int = 0
    billed: int = 0
    scans: int = 0
    acting_batches: int = 0
    acting_keys: int = 0


def count_matches(client, *, match, policies, reach, action, condition, batch_size, sample_size=0, progress=None,
                  by_slot=False):
    """A `Counted` for the target `match`: the figures a purge of it would start from.
    `progress(scanned, matched)` is called after each page. `by_slot`: a cluster node,
    where one script call may touch one hash slot only."""
    out = Counted()
    per_namespace, sample = out.namespaces, out.sample
    want = CONDITION_FINDINGS[condition]
    needs_check = bool(want) or action != PurgeRun.DELETE
    for _, page in scan_pages(client, match=match, count=batch_size):
        out.scans += 1
        page_keys, page_policies, _outside = split(page, policies, reach)
        out.matched += len(page)
        for policy in page_policies:
            label = policy.prefix.decode("utf-8", "backslashreplace")
            per_namespace[label] = per_namespace.get(label, 0) + 1
        if page_keys:
            out.acting_batches += purge_cluster.slot_groups(page_keys) if by_slot else 1
            out.acting_keys += len(page_keys)
            if len(sample) < sample_size:
                sample.extend(keyspace.encode_key(k) for k in page_keys[: sample_size - len(sample)])
            if needs_check:
                if by_slot:  # the page's slot groups in one round trip
                    results = (result for _, result in redis_purge.act_on_groups(
                        client, purge_cluster.by_slot(page_keys, page_policies), action="count", want=want))
                else:
                    results = [redis_purge.act_on_batch(client, page_keys, action="count", policies=page_policies,
                                                        want=want)]
                for counted in results:
                    out.actionable += counted.done
                    out.commands += counted.commands
                    out.billed += counted.billed
            else:
                out.actionable += len(page_keys)
        if progress:
            progress(out.matched, out.matched)
    out.commands += out.scans
    out.billed += out.scans
    return out


def count_target(database, client, *, sample_size=0, progress=None, **target):
    """(`Counted`, {primary: keys matched there}) of `count_matches` over the whole
    database: each primary of a cluster, slot group by slot group (the figures summed, and
    the CLUSTER NODES asked counted), or the one server ({} then). `target`: count_matches's
    match, policies, reach, action, condition, batch_size."""
    if not purge_cluster.is_cluster(database, client):
        return count_matches(client, sample_size=sample_size, progress=progress, **target), {}
    per_node = purge_cluster.count_nodes(
        database, client, progress=progress,
        count=lambda on, seen: count_matches(on, sample_size=sample_size, progress=seen, by_slot=True, **target))
    counted = merge_counted(per_node.values(), sample_size)
    counted.commands += 1  # CLUSTER NODES
    counted.billed += 1
    return counted, {address: part.matched for address, part in per_node.items()}


@dataclass(frozen=True)
class Target:
    """A decided target: what SCAN matches, the namespaces it may act on, the condition
    each key must show, the literal heads it covers, and (findings) the review's figures."""

    pattern: bytes
    reach: list
    condition: str
    heads: list
    whole: bool
    shown: str
    stats: list | None = None


def refuse_secret_target(value: bytes):
    """PurgeRefused, without quoting it, when a prefix or pattern looks like a secret: a run
    stores its target, shows it to viewers and puts it in the audit log. Every prefix or
    pattern run is decided by `decide_target` (the pages, `manage.py purge`, scripts, and the
    preview task again), so this is the one check before anything is saved or sent to Redis."""
    # As shown and stored (control bytes escaped), and as typed (a token split by one).
    kinds = find_secrets(keyspace.display_key(value)) or find_secrets(value.decode("utf-8", "replace"))
    if kinds:
        raise PurgeRefused(SECRET_TARGET.format(kinds=", ".join(kinds)))


def decide_target(database, *, kind, value, action, review_id, finding, policies, explicit_keys=False) -> Target:
    """The `Target` of a purge, or PurgeRefused. Reads Postgres only: nothing is sent to
    Redis for a refused target."""
    targets.check_action(action)
    if kind == PurgeRun.FINDING:
        condition = targets.finding_condition(finding, action)
        stats, reach = None, list(policies)
        if not explicit_keys:  # an explicit key list comes from a caller that chose it
            stats = targets.finding_stats(database=database, review_id=review_id, finding=finding)
            reach = [policies.for_key(stat.namespace.prefix.encode()) for stat in stats]
        heads = targets.scan_prefixes(stat.namespace.prefix.encode() for stat in stats) if stats else []
        target = Target(pattern=b" ".join(keyspace.match_pattern(p) for p in heads), reach=reach, condition=condition,
                        heads=heads, whole=True, shown=targets.phrase(review_id, finding), stats=stats)
    else:
        refuse_secret_target(value)
        pattern, reach = targets.resolve_target(database, kind, value, policies)
        head = value if kind == PurgeRun.PREFIX else targets.literal_head(value)
        target = Target(pattern=pattern, reach=reach, condition=targets.condition_for(action, PurgeRun.ANY),
                        heads=[head], whole=pattern == keyspace.match_pattern(head),
                        shown=keyspace.display_key(value))
    if action == PurgeRun.EXPIRE and not any(p.max_ttl_seconds for p in target.reach):
        raise PurgeRefused("None of the namespaces this target reaches has a maximum TTL to apply.")
    targets.check_keyspace(database, target.heads)
    return target


def new_run(*, database, kind, value=b"", action=PurgeRun.DELETE, review_id=None, finding="", actor=None,
            actor_label="", rate_cap=None, batch_size=None, status=PurgeRun.PREVIEWING, explicit_keys=False):
    """An unsaved run of a decided target with its instant estimate (at most one Redis
    command: DBSIZE), or PurgeRefused."""
    policies = namespace_policies(database)
    target = decide_target(database, kind=kind, value=value, action=action, review_id=review_id, finding=finding,
                           policies=policies, explicit_keys=explicit_keys)
    # before anything is saved or scanned: a record that contradicts the server is refused
    purge_cluster.is_cluster(database, keyspace.client_for(database))
    run = PurgeRun(database=database, target_kind=kind, target_value=target.shown,
                   target_token=keyspace.encode_key(value), match_pattern=keyspace.display_key(target.pattern),
                   review_id=review_id, finding=finding, action=action, condition=target.condition,
                   requested_by=actor, requested_label=actor_label or (actor.get_username() if actor else ""),
                   rate_cap=settings.PURGE_RATE_CAP if rate_cap is None else rate_cap,
                   batch_size=batch_size or settings.PURGE_BATCH_SIZE, status=status)
    if target.heads:
        estimate_target(database, heads=target.heads, policies=policies, whole_heads=target.whole).apply(run)
    return run


def request_preview(**target) -> PurgeRun:
    """Save a `previewing` run with its instant estimate and enqueue its preview for the
    worker when the transaction commits. Sends no SCAN: the page shows the estimate and
    polls the run for the preview's progress. Takes `new_run`'s arguments."""
    with transaction.atomic():
        run = new_run(**target)
        run.save()
        jobs.enqueue_on_commit(PREVIEW_TASK, run.pk)
    return run


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


class ProgressSaver:
    """Saves a running preview's progress on its row, at most every
    PURGE_CHECKPOINT_SECONDS, while `claim` holds it; raises PreviewStopped when it no
    longer does (cancelled: the cancel cleared the claim)."""

    def __init__(self, run, claim, progress=None, *, clock=time.monotonic):
        self.run, self.claim, self.progress, self.clock = run, claim, progress, clock
        self.every, self.last = settings.PURGE_CHECKPOINT_SECONDS, clock()
        self.scanned = 0

    def __call__(self, scanned, matched):
        self.scanned = scanned
        if self.progress:
            self.progress(scanned, matched)
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        if not PurgeRun.objects.filter(pk=self.run.pk, status=PurgeRun.PREVIEWING, claim=self.claim).update(
                preview_scanned=scanned, preview_matched=matched, heartbeat_at=timezone.now()):
            raise PreviewStopped


def merge_counted(parts, sample_size):
    """One Counted from the per-node ones: figures summed, namespaces merged, the sample capped."""
    out = Counted()
    for part in parts:
        for name in ("matched", "actionable", "commands", "billed", "scans", "acting_batches", "acting_keys"):
            setattr(out, name, getattr(out, name) + getattr(part, name))
        for label, count in part.namespaces.items():
            out.namespaces[label] = out.namespaces.get(label, 0) + count
        out.sample.extend(part.sample[:max(0, sample_size - len(out.sample))])
    return out


def run_preview(*, run_id, keys=None, sample_size=SAMPLE_SIZE, progress=None) -> PurgePreview | None:
    """Run the dry run of `previewing` run `run_id` to its end: the exact count per
    namespace (and, for expire or findings, what still qualifies), a sample, the commands
    execution will cost; the run becomes `previewed`. Touches no key.

    Idempotent: a run that is no longer previewing is left alone (None), and a delivery
    that finds another worker's preview in progress takes it over (the other stops at its
    next save). Cancelled meanwhile: None. Redis errors and refusals propagate with the run
    still previewing (`fail_preview` records a final failure)."""
    claim = new_claim()
    if not PurgeRun.objects.filter(pk=run_id, status=PurgeRun.PREVIEWING).update(
            claim=claim, heartbeat_at=timezone.now(), preview_scanned=0, preview_matched=0):
        return None
    run = PurgeRun.objects.select_related("database").get(pk=run_id)
    saver = ProgressSaver(run, claim, progress)
    try:
        policies = namespace_policies(run.database)
        target = decide_target(run.database, kind=run.target_kind, value=run.target_bytes(), action=run.action,
                               review_id=run.review_id, finding=run.finding, policies=policies,
                               explicit_keys=keys is not None)
        client = keyspace.client_for(run.database)
        PurgeTargetKey.objects.filter(run=run).delete()  # a previous attempt's partial list
        if run.target_kind == PurgeRun.FINDING:
            preview = finding_targets.preview_offenders(run, client, policies=policies, keys=keys, stats=target.stats,
                                                        sample_size=sample_size, progress=saver)
            scanned = saver.scanned
        else:
            counted, node_figures = count_target(
                run.database, client, match=target.pattern, policies=policies, reach=target.reach,
                action=run.action, condition=run.condition, batch_size=run.batch_size, sample_size=sample_size,
                progress=saver)
            # Execution repeats the SCAN and sends one acting command per page holding keys
            # (on a cluster: per slot group of such a page, without the progress marker, and
            # the CLUSTER NODES checks of `purge.cluster.check_layout`).
            checks = purge_cluster.layout_checks(len(node_figures)) if node_figures else 0
            preview = PurgePreview(run=run, matched=counted.matched, actionable=counted.actionable,
                                   namespaces=counted.namespaces, sample=counted.sample, commands=counted.commands,
                                   estimated_commands=counted.scans + counted.acting_batches + checks,
                                   billed=counted.billed,
                                   estimated_billed=estimated_billed(
                                       scans=counted.scans, acting_batches=counted.acting_batches,
                                       keys=counted.acting_keys, actionable=counted.actionable, action=run.action,
                                       condition=run.condition, read_regions=len(run.database.read_regions or ()),
                                       marker=not node_figures, extra=checks))
            scanned = counted.matched
        figures = {"preview_matched": preview.matched, "preview_actionable": preview.actionable,
                   "preview_namespaces": preview.namespaces, "preview_sample": preview.sample,
                   "preview_commands": preview.commands, "estimated_commands": preview.estimated_commands,
                   "preview_billed_commands": preview.billed, "estimated_billed_commands": preview.estimated_billed}
        if run.target_kind == PurgeRun.FINDING:
            node_figures = preview.nodes
        figures["preview_nodes"] = node_figures
        if not PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.PREVIEWING, claim=claim).update(
                status=PurgeRun.PREVIEWED, claim=None, heartbeat_at=None, preview_scanned=scanned, **figures):
            raise PreviewStopped
    except PreviewStopped:
        PurgeTargetKey.objects.filter(run_id=run_id).delete()
        return None
    except BaseException:
        PurgeTargetKey.objects.filter(run_id=run_id).delete()
        PurgeRun.objects.filter(pk=run_id, claim=claim).update(claim=None, heartbeat_at=None)
        raise
    run.refresh_from_db()
    return PurgePreview(run=run, matched=preview.matched, actionable=preview.actionable,
                        namespaces=preview.namespaces, sample=preview.sample, commands=preview.commands,
                        estimated_commands=preview.estimated_commands, billed=preview.billed,
                        estimated_billed=preview.estimated_billed)


def fail_preview(*, run_id, error):
    """Record a preview as failed (it will not be retried). A dry run: not audited."""
    return bool(PurgeRun.objects.filter(pk=run_id, status=PurgeRun.PREVIEWING).update(
        status=PurgeRun.FAILED, error=error, finished_at=timezone.now(), claim=None, heartbeat_at=None))


def preview_purge(*, database, kind, value=b"", action=PurgeRun.DELETE, review_id=None, finding="", keys=None,
                  actor=None, actor_label="", rate_cap=None, batch_size=None, sample_size=SAMPLE_SIZE,
                  progress=None) -> PurgePreview:
    """The preview, here and now (the command line): save a `previewing` run, stream the
    whole target with SCAN and count exactly, per namespace, what a purge would match.
    Touches no key. Returns the `previewed` run's figures for `confirm_purge`; a refusal
    saves nothing, a Redis error leaves the run failed and propagates."""
    run = new_run(database=database, kind=kind, value=value, action=action, review_id=review_id, finding=finding,
                  actor=actor, actor_label=actor_label, rate_cap=rate_cap, batch_size=batch_size,
                  explicit_keys=keys is not None)
    run.save()
    try:
        return run_preview(run_id=run.pk, keys=keys, sample_size=sample_size, progress=progress)
    except Exception as exc:
        fail_preview(run_id=run.pk, error=str(exc) if isinstance(exc, PurgeRefused) else postgres.describe_failure(exc))
        raise
