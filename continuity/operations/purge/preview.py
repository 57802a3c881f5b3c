"""The purge preview: a dry run with exact counts per namespace that touches no key, saved
as a `previewed` PurgeRun for `confirm_purge`."""

from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from continuity import keyspace
from continuity.keyspace import purge as redis_purge
from continuity.models import PurgeRun
from continuity.operations.purge import findings as finding_targets
from continuity.operations.purge import targets
from continuity.operations.purge.common import (
    CONDITION_FINDINGS,
    SAMPLE_SIZE,
    PurgePreview,
    estimated_billed,
    PurgeRefused,
    namespace_policies,
    refuse_on_cluster,
    split,
)


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


def count_matches(client, *, match, policies, reach, action, condition, batch_size, sample_size=0, progress=None):
    """A `Counted` for the target `match`: the figures a purge of it would start from."""
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
            out.acting_batches += 1
            out.acting_keys += len(page_keys)
            if len(sample) < sample_size:
                sample.extend(keyspace.encode_key(k) for k in page_keys[: sample_size - len(sample)])
            if needs_check:
                counted = redis_purge.act_on_batch(client, page_keys, action="count", policies=page_policies,
                                                   want=want)
                out.actionable += counted.done
                out.commands += counted.commands
                out.billed += counted.billed
            else:
                out.actionable += len(page_keys)
        if progress:
            progress(out.matched)
    out.commands += out.scans
    out.billed += out.scans
    return out


def preview_purge(*, database, kind, value=b"", action=PurgeRun.DELETE, review_id=None, finding="", keys=None,
                  actor=None, actor_label="", rate_cap=None, batch_size=None, sample_size=SAMPLE_SIZE,
                  progress=None) -> PurgePreview:
    """Dry run: stream the whole target with SCAN and count exactly, per namespace, what a
    purge would match (and, for expire or findings, what still qualifies). Touches no key.
    Saves and returns a `previewed` PurgeRun for `confirm_purge`."""
    targets.check_action(action)
    policies = namespace_policies(database)
    stats = None
    if kind == PurgeRun.FINDING:
        condition = targets.finding_condition(finding, action)
        reach = list(policies)
        if keys is None:  # an explicit key list comes from a caller that chose it
            stats = targets.finding_stats(database=database, review_id=review_id, finding=finding)
            reach = [policies.for_key(stat.namespace.prefix.encode()) for stat in stats]
        pattern = b" ".join(keyspace.match_pattern(p) for p in targets.scan_prefixes(
            stat.namespace.prefix.encode() for stat in stats)) if stats else b""
        shown = targets.phrase(review_id, finding)
    else:
        pattern, reach = targets.resolve_target(database, kind, value, policies)
        condition = targets.condition_for(action, PurgeRun.ANY)
        shown = keyspace.display_key(value)
    if action == PurgeRun.EXPIRE and not any(p.max_ttl_seconds for p in reach):
        raise PurgeRefused("None of the namespaces this target reaches has a maximum TTL to apply.")
    run = PurgeRun(database=database, target_kind=kind, target_value=shown, target_token=keyspace.encode_key(value),
                   match_pattern=keyspace.display_key(pattern), review_id=review_id, finding=finding,
                   action=action, condition=condition, requested_by=actor,
                   requested_label=actor_label or (actor.get_username() if actor else ""),
                   rate_cap=settings.PURGE_RATE_CAP if rate_cap is None else rate_cap,
                   batch_size=batch_size or settings.PURGE_BATCH_SIZE)
    client = keyspace.client_for(database)
    refuse_on_cluster(database, client)
    if kind == PurgeRun.FINDING:
        # One transaction: a refusal or a Redis error mid-preview leaves no half-stored list.
        with transaction.atomic():
            run.save()
            return finding_targets.preview_offenders(run, client, policies=policies, keys=keys, stats=stats,
                                                     sample_size=sample_size, progress=progress)
    counted = count_matches(client, match=pattern, policies=policies, reach=reach, action=action, condition=condition,
                            batch_size=run.batch_size, sample_size=sample_size, progress=progress)
    run.preview_matched, run.preview_actionable = counted.matched, counted.actionable
    run.preview_namespaces, run.preview_sample = counted.namespaces, counted.sample
    run.preview_commands = counted.commands
    run.preview_billed_commands = counted.billed
    # Execution repeats the SCAN and sends one acting command per page holding keys.
    run.estimated_commands = counted.scans + counted.acting_batches
    run.estimated_billed_commands = estimated_billed(
        scans=counted.scans, acting_batches=counted.acting_batches, keys=counted.acting_keys,
        actionable=counted.actionable, action=action, condition=condition,
        read_regions=len(database.read_regions or ()))
    run.save()
    return PurgePreview(run=run, matched=counted.matched, actionable=counted.actionable,
                        namespaces=counted.namespaces, sample=counted.sample, commands=counted.commands,
                        estimated_commands=run.estimated_commands)
