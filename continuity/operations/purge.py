"""Purges: preview (a dry run with exact counts) → confirm (retyped target + reason,
audited) → execute (re-checked, batched, rate-capped, checkpointed, resumable, audited).

Targets
- a literal prefix: escaped with `keyspace.match_pattern`, so `*?[]\\` in it match themselves;
- a raw glob pattern (advanced);
- the offending keys of a TTL review finding: any iterable of keys, re-checked one by one.

Safety (decided here, before any Redis command): the target must stay inside the
registered namespaces of the database. A prefix must *start with* a registered namespace
prefix; a pattern's literal head (everything before its first unescaped `*`, `?` or `[`,
with `\\x` read as `x`) must start with one. So `lucia:session:` and `lucia:session:ab*`
pass, while ``, `*`, `lucia:*` and `lucia:sess*` are refused: `lucia:sess*` would also match
`lucia:sessions-old:1`, which no namespace covers. Nothing is scanned for a refused target.

Review findings: see `purge_findings`. The preview finds the finding's current offenders
again (SCAN of the namespaces that had it, one metadata command per batch) and stores them
in order (`PurgeTargetKey`); execution walks that list by position (the checkpoint) and
re-checks each key inside the acting script: `no_ttl` → still without TTL;
`ttl_above_max` → TTL still above the namespace maximum; `oversized` / `wrong_type` →
still exists. Keys outside the registered namespaces are skipped, never touched.
`unknown_namespace` keys are in no namespace and are refused as a target.

Counting: `matched` = keys the SCAN (or the finding) yielded, `done` = deleted or expired,
`skipped` = matched keys that no longer qualified when their batch ran; done + skipped ==
matched. Resuming a crashed run neither recounts nor loses a batch (see keyspace.purge).
"""

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from continuity import keyspace
from continuity.keyspace import purge as redis_purge
from continuity.models import Namespace, PurgeRun
from continuity.models.purges import PurgeTargetKey, new_claim, stored_target_keys
from continuity.operations import alerting, purge_findings
from dashboard import audit, roles

SAMPLE_SIZE = 20
FINDING_CONDITIONS = {"no_ttl": PurgeRun.NO_TTL, "ttl_above_max": PurgeRun.TTL_ABOVE,
                      "oversized": PurgeRun.ANY, "wrong_type": PurgeRun.ANY}
_GLOB = frozenset(b"*?[")


class PurgeRefused(Exception):
    """The purge cannot go ahead. The message says why, for an operator; nothing was touched."""


@dataclass(frozen=True)
class PurgePreview:
    """A dry run's figures. `actionable` is how many matched keys the action would change
    right now (delete: all of them; expire: those without TTL)."""

    run: PurgeRun
    matched: int
    actionable: int
    namespaces: dict
    sample: list
    commands: int
    estimated_commands: int


@dataclass(frozen=True)
class PurgeResult:
    run: PurgeRun
    status: str
    matched: int
    done: int
    skipped: int
    commands: int
    resumed: bool = False


@dataclass
class PolicyPurgeResult:
    database: str
    runs: list = field(default_factory=list)
    reported: dict = field(default_factory=dict)
    skipped_reason: str = ""


# --- targets --------------------------------------------------------------------------
def literal_head(pattern: bytes) -> bytes:
    """The literal bytes every key matching glob `pattern` starts with."""
    out = bytearray()
    i = 0
    while i < len(pattern):
        byte = pattern[i]
        if byte == 0x5C and i + 1 < len(pattern):  # backslash: the next byte is literal
            out.append(pattern[i + 1])
            i += 2
            continue
        if byte in _GLOB:
            break
        out.append(byte)
        i += 1
    return bytes(out)


def _namespace_prefixes(database):
    namespaces = list(Namespace.objects.for_database(database))
    # Longest first: a key belongs to the longest registered prefix it starts with.
    return sorted(((ns.prefix.encode(), ns) for ns in namespaces), key=lambda p: len(p[0]), reverse=True)


def _refusal_beyond(database, shown, prefixes):
    listed = ", ".join(sorted(p.decode("utf-8", "backslashreplace") for p, _ in prefixes)) or "none registered"
    return PurgeRefused(
        f"{shown!r} reaches beyond the registered namespaces of {database.name}: a purge target must start "
        f"with one of their prefixes ({listed}). Register a namespace first if these keys need purging."
    )


def resolve_target(database, kind, value: bytes):
    """(MATCH pattern, [(prefix bytes, Namespace)] the target can reach) or PurgeRefused."""
    prefixes = _namespace_prefixes(database)
    shown = keyspace.display_key(value)
    if kind == PurgeRun.PREFIX:
        if not value:
            raise PurgeRefused("An empty prefix would match every key. Give a namespace prefix such as "
                               f"{database.key_prefix}session: or something under it.")
        head, pattern = value, keyspace.match_pattern(value)
    elif kind == PurgeRun.PATTERN:
        if not value or value.strip(b"*") == b"":
            raise PurgeRefused(f"The pattern {shown!r} matches every key. Start it with a namespace prefix.")
        head, pattern = literal_head(value), value
    else:
        raise PurgeRefused(f"Unknown target kind {kind!r}.")
    if not any(head.startswith(p) for p, _ in prefixes):
        raise _refusal_beyond(database, shown, prefixes)
    reach = [(p, ns) for p, ns in prefixes if head.startswith(p) or p.startswith(head)]
    return pattern, reach


def _classify(key, prefixes):
    for prefix, ns in prefixes:
        if key.startswith(prefix):
            return ns
    return None


def _condition_for(action, condition):
    # Applying the policy TTL never shortens a TTL a key already has: EXPIRE … NX.
    if action == PurgeRun.EXPIRE and condition == PurgeRun.ANY:
        return PurgeRun.NO_TTL
    return condition


def _finding_condition(finding):
    if finding == "unknown_namespace":
        raise PurgeRefused("unknown_namespace keys belong to no registered namespace, so a purge will not touch "
                           "them. Register a namespace for them first.")
    if finding not in FINDING_CONDITIONS:
        raise PurgeRefused(f"Unknown review finding {finding!r}.")
    return FINDING_CONDITIONS[finding]


# --- preview --------------------------------------------------------------------------
def _check_action(action):
    if action not in (PurgeRun.DELETE, PurgeRun.EXPIRE):
        raise PurgeRefused(f"Unknown action {action!r}: choose delete or expire.")


def _pages(database, run, client, prefixes, keys=None, start=0, cursor=0):
    """Yield (next position, [keys]) pages: SCAN pages, or slices of a finding's keys.
    The position is a SCAN cursor (0 = done) or the last position read from the finding's
    stored list (or from an explicit `keys` list), None at the end."""
    size = run.batch_size
    if run.target_kind == PurgeRun.FINDING:
        source = (((i, bytes(k)) for i, k in enumerate(keys, 1) if i > start) if keys is not None
                  else stored_target_keys(run, after=start, size=size))
        batch = []
        for position, key in source:
            batch.append(key)
            if len(batch) >= size:
                yield position, batch, 0
                batch = []
        yield None, batch, 0
        return
    pattern = run.match_bytes()
    while True:
        cursor, page = keyspace.scan_page(match=pattern, cursor=cursor, count=size, client=client)
        yield (None if cursor == 0 else cursor), page, 1
        if cursor == 0:
            return


def _split(page, prefixes, run):
    """Keys of a page that may be acted on, with their namespace max TTLs; and how many
    keys (of a finding) fall outside every namespace."""
    if len(prefixes) == 1 and run.target_kind != PurgeRun.FINDING:  # every SCAN match is in it
        return page, [prefixes[0][1].max_ttl_seconds or 0] * len(page), 0
    keys, ttls, outside = [], [], 0
    for key in page:
        ns = _classify(key, prefixes)
        if ns is None:
            outside += 1
            continue
        keys.append(key)
        ttls.append(ns.max_ttl_seconds or 0)
    return keys, ttls, outside


def preview_purge(*, database, kind, value=b"", action=PurgeRun.DELETE, review_id=None, finding="", keys=None,
                  actor=None, actor_label="", rate_cap=None, batch_size=None, sample_size=SAMPLE_SIZE,
                  progress=None) -> PurgePreview:
    """Dry run: stream the whole target with SCAN and count exactly, per namespace, what a
    purge would match (and, for expire or findings, what still qualifies). Touches no key.
    Saves and returns a `previewed` PurgeRun for `confirm_purge`."""
    _check_action(action)
    condition = PurgeRun.ANY
    stats = None
    if kind == PurgeRun.FINDING:
        condition = _finding_condition(finding)
        prefixes = reach = _namespace_prefixes(database)
        if keys is None:  # an explicit key list comes from a caller that chose it
            stats = purge_findings.check_target(database=database, review_id=review_id, finding=finding,
                                                action=action, refused=PurgeRefused)
            reach = [(ns.prefix.encode(), ns) for ns in (stat.namespace for stat in stats)]
        pattern = purge_findings.match_text(stats) if stats else b""
        shown = purge_findings.phrase(review_id, finding)
    else:
        pattern, prefixes = resolve_target(database, kind, value)
        reach = prefixes
        shown = keyspace.display_key(value)
    condition = _condition_for(action, condition)
    if action == PurgeRun.EXPIRE and not any(ns.max_ttl_seconds for _, ns in reach):
        raise PurgeRefused("None of the namespaces this target reaches has a maximum TTL to apply.")
    run = PurgeRun(database=database, target_kind=kind, target_value=shown, target_token=keyspace.encode_key(value),
                   match_pattern=keyspace.display_key(pattern), review_id=review_id, finding=finding,
                   action=action, condition=condition, requested_by=actor,
                   requested_label=actor_label or (actor.get_username() if actor else ""),
                   rate_cap=settings.PURGE_RATE_CAP if rate_cap is None else rate_cap,
                   batch_size=batch_size or settings.PURGE_BATCH_SIZE)
    client = keyspace.client_for(database)
    if kind == PurgeRun.FINDING:
        # One transaction: a refusal or a Redis error mid-preview leaves no half-stored list.
        with transaction.atomic():
            run.save()
            return purge_findings.preview_offenders(run, client, prefixes=prefixes, keys=keys, stats=stats,
                                                     sample_size=sample_size, progress=progress)
    matched = actionable = commands = acting_batches = 0
    per_namespace, sample = {}, []
    needs_check = condition != PurgeRun.ANY
    for _, page, cost in _pages(database, run, client, prefixes, keys=keys):
        commands += cost
        page_keys, ttls, _outside = _split(page, prefixes, run)
        matched += len(page)
        for key in page_keys:
            ns = _classify(key, prefixes)
            per_namespace[ns.prefix] = per_namespace.get(ns.prefix, 0) + 1
        if page_keys:
            acting_batches += 1
            if len(sample) < sample_size:
                sample.extend(keyspace.encode_key(k) for k in page_keys[: sample_size - len(sample)])
            if needs_check:
                counted = redis_purge.act_on_batch(client, page_keys, action="count", condition=condition,
                                                   max_ttls=ttls)
                actionable += counted.done
                commands += counted.commands
            else:
                actionable += len(page_keys)
        if progress:
            progress(matched)
    scans = commands - (acting_batches if needs_check else 0)
    run.preview_matched, run.preview_actionable = matched, actionable
    run.preview_namespaces, run.preview_sample = per_namespace, sample
    run.preview_commands = commands
    # Execution repeats the SCAN and sends one acting command per batch holding keys.
    run.estimated_commands = scans + acting_batches
    run.save()
    return PurgePreview(run=run, matched=matched, actionable=actionable, namespaces=per_namespace, sample=sample,
                        commands=commands, estimated_commands=run.estimated_commands)


# --- confirm, cancel ------------------------------------------------------------------
def _audit(run, action, *, request=None, actor=None, actor_label="", source=None, before=None, note=""):
    audit.record(action=action, target=run, before=before, after=run.summary(), note=note or run.reason,
                 request=request, actor=actor, actor_label=actor_label, source=source)


def confirm_purge(*, run, confirmation, reason, request=None, actor=None, source=None) -> PurgeRun:
    """Queue a previewed run once the operator retyped its target and gave a reason.
    Refuses (PurgeRefused) on a mismatch, a missing reason, a non-operator, or when another
    purge of the same database is queued or running. Audited in the status change's
    transaction; the caller enqueues `purge_task` with `delay_on_commit`."""
    user = request.user if request is not None else actor
    roles.require_role(user, roles.OPERATOR)
    if run.status != PurgeRun.PREVIEWED:
        raise PurgeRefused(f"Purge #{run.pk} is {run.status}; only a previewed purge can be confirmed.")
    if (confirmation or "") != run.target_value:
        raise PurgeRefused("The confirmation does not match the target exactly; nothing was queued.")
    if not (reason or "").strip():
        raise PurgeRefused("Give a reason: it goes into the audit log with the purge.")
    if run.target_kind != PurgeRun.FINDING:  # namespaces may have changed since the preview
        resolve_target(run.database, run.target_kind, keyspace.decode_key(run.target_token))
    try:
        with transaction.atomic():
            updated = PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.PREVIEWED).update(
                status=PurgeRun.QUEUED, reason=reason.strip(), queued_at=timezone.now(),
                requested_by=user, requested_label=user.get_username())
            if not updated:
                raise PurgeRefused(f"Purge #{run.pk} was confirmed or cancelled meanwhile.")
            run.refresh_from_db()
            _audit(run, "purge.queue", request=request, actor=None if request else user, source=source)
    except IntegrityError:
        raise PurgeRefused(f"Another purge of {run.database.name} is already queued or running; "
                           "wait for it to finish or cancel it.") from None
    return run


def cancel_purge(*, run, request=None, actor=None, source=None) -> PurgeRun:
    """Ask a queued or running purge to stop between batches (audited). A queued run that
    no worker has started is cancelled at once."""
    user = request.user if request is not None else actor
    roles.require_role(user, roles.OPERATOR)
    with transaction.atomic():
        now = timezone.now()
        if PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.QUEUED).update(
                status=PurgeRun.CANCELLED, cancel_requested=True, finished_at=now):
            run.refresh_from_db()
            _audit(run, "purge.cancel", request=request, actor=None if request else user, source=source)
            return run
        if not PurgeRun.objects.filter(pk=run.pk, status=PurgeRun.RUNNING).update(cancel_requested=True):
            raise PurgeRefused(f"Purge #{run.pk} is {run.status}; there is nothing to cancel.")
        run.refresh_from_db()
        _audit(run, "purge.cancel_request", request=request, actor=None if request else user, source=source)
    return run


# --- execute --------------------------------------------------------------------------
def _claim(run_id, lease_seconds):
    """Conditional UPDATE: take a queued run, or a running one whose worker went silent."""
    claim, now = new_claim(), timezone.now()
    stale = now - timezone.timedelta(seconds=lease_seconds)
    queued = PurgeRun.objects.filter(pk=run_id, status=PurgeRun.QUEUED).update(
        status=PurgeRun.RUNNING, claim=claim, heartbeat_at=now, started_at=now, attempts=F("attempts") + 1)
    if queued:
        return claim, False
    from django.db.models import Q

    resumed = PurgeRun.objects.filter(pk=run_id, status=PurgeRun.RUNNING).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale)).update(
        claim=claim, heartbeat_at=now, attempts=F("attempts") + 1)
    return (claim, True) if resumed else (None, False)


def _finish(run, status, *, error="", source="task"):
    with transaction.atomic():
        PurgeRun.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now(), error=error,
                                                  claim=None, heartbeat_at=None)
        PurgeTargetKey.objects.filter(run=run).delete()  # a finding's key list is spent
        run.refresh_from_db()
        verb = {PurgeRun.SUCCEEDED: "purge.finish", PurgeRun.FAILED: "purge.fail",
                PurgeRun.CANCELLED: "purge.cancel"}[status]
        _audit(run, verb, actor=run.requested_by, actor_label=run.requested_label or "system", source=source,
               note=error or run.reason)
        # Delivered when the transaction commits, like the audit entry it accompanies.
        alerting.alert_on_purge(run)
    return run


def fail_purge(*, run_id, error, source="task"):
    """Record a run as failed with `error` (after the last retry). Idempotent."""
    run = PurgeRun.objects.get(pk=run_id)
    if run.is_finished:
        return run
    return _finish(run, PurgeRun.FAILED, error=error, source=source)


def execute_purge(*, run_id, keys=None, lease_seconds=None, progress=None, source="task") -> PurgeResult:
    """Run (or resume) a queued purge to its end, a cancel, or an error.

    Each batch: one SCAN page, one acting command that re-checks and acts and writes the
    progress marker, then one checkpoint UPDATE guarded by this worker's claim; the cancel
    flag is read between batches and the rate cap is held by sleeping. A Redis error
    releases the claim and propagates (the task retries); the run stays `running`.
    Idempotent: a finished run, or one another worker holds, is returned as it is.
    """
    lease = settings.PURGE_LEASE_SECONDS if lease_seconds is None else lease_seconds
    claim, resumed = _claim(run_id, lease)
    run = PurgeRun.objects.select_related("database").get(pk=run_id)
    if claim is None:
        return PurgeResult(run, run.status, run.matched, run.done, run.skipped, run.commands)
    database = run.database
    try:
        client = keyspace.client_for(database, write=True)
        if resumed:
            _recover_batch(run, client, claim)
        if run.cancel_requested:
            return _result(_finish(run, PurgeRun.CANCELLED, source=source), resumed)
        prefixes = (_namespace_prefixes(database) if run.target_kind == PurgeRun.FINDING
                    else resolve_target(database, PurgeRun.PATTERN, run.match_bytes())[1])
        status = _loop(run, client, claim, prefixes, keys, progress)
        if status is None:  # lost the claim to another worker
            run.refresh_from_db()
            return _result(run, resumed)
        redis_purge.clear_marker(client, run.pk)
        return _result(_finish(run, status, source=source), resumed)
    except BaseException:
        PurgeRun.objects.filter(pk=run.pk, claim=claim).update(claim=None, heartbeat_at=None)
        raise


def _result(run, resumed):
    return PurgeResult(run, run.status, run.matched, run.done, run.skipped, run.commands, resumed)


def _recover_batch(run, client, claim):
    """A worker died after acting on batches it had not checkpointed yet: the marker,
    written atomically with each batch, holds the run's totals and cursor after the last."""
    marker = redis_purge.read_marker(client, run.pk)
    run.commands += 1
    if marker and marker.batch > run.batches:
        run.batches, run.cursor = marker.batch, marker.cursor
        run.matched, run.done, run.skipped = marker.matched, marker.done, marker.skipped
    _checkpoint(run, claim)


def _checkpoint(run, claim):
    """Save progress, guarded by this worker's claim. Returns "ok", "cancel" (an operator
    asked to stop) or "lost" (another worker holds the run now).

    Committed without waiting for the WAL flush (synchronous_commit off, this transaction
    only): a worker killed after this call still leaves the checkpoint in Postgres, and
    only a crash of Postgres itself could lose the last fraction of a second of progress
    (the run then resumes from an earlier cursor, never counting a key twice)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        updated = PurgeRun.objects.filter(pk=run.pk, claim=claim, cancel_requested=False).update(
            cursor=run.cursor, batches=run.batches, matched=run.matched, done=run.done, skipped=run.skipped,
            commands=run.commands, heartbeat_at=timezone.now())
        if updated:
            return "ok"
        # Still ours but flagged for cancel: save the progress, then stop.
        if PurgeRun.objects.filter(pk=run.pk, claim=claim).update(
                cursor=run.cursor, batches=run.batches, matched=run.matched, done=run.done, skipped=run.skipped,
                commands=run.commands, heartbeat_at=timezone.now()):
            return "cancel"
    return "lost"


def _loop(run, client, claim, prefixes, keys, progress):
    """Batches until the target is exhausted (SUCCEEDED), cancelled (CANCELLED) or the claim
    is lost (None)."""
    if run.cursor == "end":
        return PurgeRun.SUCCEEDED
    finding = run.target_kind == PurgeRun.FINDING
    if not finding and settings.PURGE_SCAN_IN_SCRIPT:
        status = _scripted_loop(run, client, claim, prefixes, progress)
        if status != "refused":
            return status
    start = int(run.cursor)
    pages = _pages(run.database, run, client, prefixes, keys=keys, start=start, cursor=start)
    if not finding:
        pages = redis_purge.prefetched(pages)
    started, touched = time.monotonic(), 0
    action = run.action
    every = settings.PURGE_CHECKPOINT_SECONDS
    last_checkpoint = 0.0
    for position, page, cost in pages:
        run.commands += cost
        next_cursor = "end" if position is None else str(position)
        page_keys, ttls, outside = _split(page, prefixes, run)
        run.skipped += outside
        run.matched += len(page)
        if page_keys:
            head = redis_purge.marker_head(run.batches + 1, next_cursor, run.matched)
            result = redis_purge.act_on_batch(client, page_keys, action=action, condition=run.condition,
                                              max_ttls=ttls, marker=redis_purge.marker_key(run.pk), head=head,
                                              totals=(run.done, run.skipped))
            run.batches += 1
            run.done += result.done
            run.skipped += result.skipped
            run.commands += result.commands
        run.cursor = next_cursor
        now = time.monotonic()
        # Checkpoints may lag the Redis side by a fraction of a second: the marker holds
        # the exact totals, so a resumed run loses and repeats nothing.
        if position is None or now - last_checkpoint >= every:
            last_checkpoint = now
            state = _checkpoint(run, claim)
            if state == "lost":
                return None
            if progress:
                progress(run)
            if state == "cancel":
                return PurgeRun.CANCELLED
        touched += len(page)
        if run.rate_cap and touched:
            ahead = touched / run.rate_cap - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    return PurgeRun.SUCCEEDED


class _Pacer:
    """Checkpoint cadence and the rate cap, shared by both loops."""

    def __init__(self, run, claim, progress):
        self.run, self.claim, self.progress = run, claim, progress
        self.every = settings.PURGE_CHECKPOINT_SECONDS
        self.started, self.last, self.touched = time.monotonic(), 0.0, 0

    def after_batch(self, keys, final):
        """'ok', 'cancel' or 'lost' after checkpointing when due; sleeps for the rate cap."""
        state = "ok"
        now = time.monotonic()
        if final or now - self.last >= self.every:
            self.last = now
            state = _checkpoint(self.run, self.claim)
            if state != "lost" and self.progress:
                self.progress(self.run)
        self.touched += keys
        cap = self.run.rate_cap
        if cap and self.touched and state == "ok":
            ahead = self.touched / cap - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)
        return state


def _scripted_loop(run, client, claim, prefixes, progress):
    """SCAN and act inside one script call per batch (one billed command, no key sent to
    the client). "refused" when the server will not run SCAN in a script."""
    pacer = _Pacer(run, claim, progress)
    namespaces = [(prefix, ns.max_ttl_seconds or 0) for prefix, ns in prefixes]
    cursor, match, marker = int(run.cursor), run.match_bytes(), redis_purge.marker_key(run.pk)
    while True:
        result = redis_purge.scan_and_act(
            client, cursor=cursor, match=match, count=run.batch_size, action=run.action, condition=run.condition,
            namespaces=namespaces, marker=marker, batch=run.batches + 1, totals=(run.matched, run.done, run.skipped))
        if result is None:
            return "refused"
        cursor = result.cursor
        run.batches += 1
        run.commands += 1
        run.matched += result.matched
        run.done += result.done
        run.skipped += result.skipped
        run.cursor = "end" if cursor == 0 else str(cursor)
        state = pacer.after_batch(result.matched, final=cursor == 0)
        if state == "lost":
            return None
        if state == "cancel":
            return PurgeRun.CANCELLED
        if cursor == 0:
            return PurgeRun.SUCCEEDED


# --- resume and policy ------------------------------------------------------------------
def stalled_purges(*, lease_seconds=None):
    """Ids of running purges whose worker stopped checkpointing (killed, lost)."""
    lease = settings.PURGE_LEASE_SECONDS if lease_seconds is None else lease_seconds
    return list(PurgeRun.objects.stalled(lease).values_list("pk", flat=True))


def _policy_condition(ns):
    if ns.ttl_required and ns.max_ttl_seconds:
        return PurgeRun.VIOLATES
    if ns.ttl_required:
        return PurgeRun.NO_TTL
    if ns.max_ttl_seconds:
        return PurgeRun.TTL_ABOVE
    return None


def policy_purge(*, database, progress=None, source="task") -> PolicyPurgeResult:
    """Apply each namespace's violation action to its keys without TTL / above the max TTL:
    `report` counts them, `apply_ttl` sets the namespace max TTL, `delete` unlinks them.
    One audited run per acting namespace, executed here one after the other."""
    outcome = PolicyPurgeResult(database=database.name)
    if PurgeRun.objects.for_database(database).active().exists():
        outcome.skipped_reason = "another purge is queued or running"
        return outcome
    for prefix, ns in _namespace_prefixes(database):
        condition = _policy_condition(ns)
        if condition is None:
            continue
        action = {Namespace.APPLY_TTL: PurgeRun.EXPIRE, Namespace.DELETE: PurgeRun.DELETE}.get(ns.violation_action)
        if action == PurgeRun.EXPIRE and not ns.max_ttl_seconds:
            action = None
        if action is None:
            preview = preview_purge(database=database, kind=PurgeRun.PREFIX, value=prefix,
                                    action=PurgeRun.EXPIRE if ns.max_ttl_seconds else PurgeRun.DELETE,
                                    actor_label="policy_purge")
            outcome.reported[ns.prefix] = preview.actionable
            continue
        run = PurgeRun(database=database, target_kind=PurgeRun.POLICY, target_value=ns.prefix,
                       target_token=keyspace.encode_key(prefix), match_pattern=keyspace.display_key(
                           keyspace.match_pattern(prefix)), action=action, condition=condition,
                       reason=f"Scheduled policy purge: {ns.get_violation_action_display()} for {ns.prefix}",
                       requested_label="policy_purge", status=PurgeRun.QUEUED, queued_at=timezone.now(),
                       rate_cap=settings.PURGE_RATE_CAP, batch_size=settings.PURGE_BATCH_SIZE)
        try:
            with transaction.atomic():
                run.save()
                _audit(run, "purge.queue", actor_label="policy_purge", source=source)
        except IntegrityError:
            outcome.skipped_reason = "another purge started meanwhile"
            return outcome
        outcome.runs.append(execute_purge(run_id=run.pk, progress=progress, source=source))
    return outcome
