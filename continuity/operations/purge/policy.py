"""The scheduled policy purge, and the clean-up of previews nobody confirmed.

Each namespace's `violation_action` decides what happens to its keys that break a TTL
rule of its policy (`continuity.policy`: no TTL where one is required, a TTL above the
maximum): `apply_ttl` sets the maximum TTL, `delete` unlinks them, `report` counts them.
The count reported is the same set the two actions would act on, found with the same
re-check script in count mode, and writes no run row.

Each run goes through every node of the keyspace, as every purge does (`execute`).

A policy purge may be limited to a scope: a namespace (by name) and/or a literal prefix.
Each namespace then acts only on the intersection of its prefix and the scope's (the run's
head is the longer of the two, its reach that namespace alone), and namespaces outside
the scope are neither touched nor counted.
"""

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from continuity import keyspace
from continuity.billing import Cost
from continuity.keyspace import nodes as keyspace_nodes
from continuity.models import Namespace, PolicyReport, PurgeRun
from continuity.operations.purge.common import PolicyPurgeResult, PurgeRefused, audit_run, namespace_policies
from continuity.operations.purge.execute import execute_purge
from continuity.operations.purge.preview import count_node
from continuity.operations.purge.targets import check_keyspace, refuse_secret_target, scope_namespace

_ACTIONS = {Namespace.APPLY_TTL: PurgeRun.EXPIRE, Namespace.DELETE: PurgeRun.DELETE}


def _action_of(namespace, policy):
    action = _ACTIONS.get(namespace.violation_action)
    if action == PurgeRun.EXPIRE and not policy.max_ttl_seconds:
        return None  # nothing to apply: report instead
    return action


def scope_head(policy, policies, prefix):
    """The literal prefix a policy purge of `policy`'s namespace scans inside the scope
    `prefix` (None: the whole namespace), or None when the two do not meet: the longer of
    the two, provided its keys are this namespace's own (a prefix inside a nested
    namespace belongs to that one)."""
    if not prefix:
        return policy.prefix
    if prefix.startswith(policy.prefix):
        return prefix if policies.for_key(prefix) == policy else None
    if policy.prefix.startswith(prefix):
        return policy.prefix
    return None


def policy_purge(*, database, progress=None, source="task", namespace=None, prefix=None) -> PolicyPurgeResult:
    """Apply each namespace's violation action to its keys that break a TTL rule, inside
    the scope namespace ∩ literal `prefix` (bytes) when given. One audited run per acting
    namespace, executed here one after the other; `report` namespaces get a count in
    `reported` and no run row. A scope that meets no namespace is refused (PurgeRefused)."""
    outcome = PolicyPurgeResult(database=database.name)
    policies = namespace_policies(database)
    if prefix:
        refuse_secret_target(prefix)
    only = scope_namespace(database, policies, namespace)
    acting = []
    for policy in policies:
        row = policies.owner_of(policy)
        head = scope_head(policy, policies, prefix)
        if (only is not None and policy != only) or head is None or not policy.has_ttl_rule:
            continue
        try:  # a namespace that covers another record's keys on this keyspace is left alone
            check_keyspace(database, [head])
        except PurgeRefused as exc:
            outcome.refused[row.prefix] = str(exc)
            continue
        acting.append((row, policy, _action_of(row, policy), head))
    if (namespace or prefix) and not acting and not outcome.refused:
        shown = keyspace.display_key(prefix) if prefix else namespace
        raise PurgeRefused(f"No namespace of {database.name} with a TTL rule lies in the scope {shown!r}: "
                           "nothing to purge.")
    if PurgeRun.objects.for_database(database).active().exists():
        outcome.skipped_reason = "another purge is queued or running"
        return outcome
    reporting = [(row, policy, head) for row, policy, action, head in acting if action is None]
    if reporting:
        try:  # a record contradicting the server: nothing is sent
            _report(database, policies, reporting, outcome)
        except keyspace.ClusterRefusal as exc:
            outcome.skipped_reason = str(exc)
            return outcome
    for namespace, policy, action, head in acting:
        if action is None:
            continue
        run = PurgeRun(database=database, target_kind=PurgeRun.POLICY, target_value=keyspace.display_key(head),
                       target_token=keyspace.encode_key(head),
                       match_pattern=keyspace.display_key(keyspace.match_pattern(head)), action=action,
                       condition=PurgeRun.VIOLATES, reach=[keyspace.encode_key(policy.prefix)],
                       reason=f"Scheduled policy purge: {namespace.get_violation_action_display()} for "
                              f"{keyspace.display_key(head)}",
                       requested_label="policy_purge", status=PurgeRun.QUEUED, queued_at=timezone.now(),
                       rate_cap=settings.PURGE_RATE_CAP, batch_size=settings.PURGE_BATCH_SIZE)
        try:
            with transaction.atomic():
                run.save()
                audit_run(run, "purge.queue", actor_label="policy_purge", source=source)
        except IntegrityError:
            outcome.skipped_reason = "another purge started meanwhile"
            return outcome
        outcome.runs.append(execute_purge(run_id=run.pk, progress=progress, source=source))
    return outcome


def _report(database, policies, reporting, outcome):
    """Count the keys breaking a TTL rule in the report-only namespaces, node by node, and
    record the counts and what counting cost (a `PolicyReport`). A Redis error stops the
    count: the report is recorded all the same, with the namespaces counted in full and
    every command sent, and the error propagates."""
    spent = Cost()
    with keyspace_nodes.primaries(database) as nodes:
        try:
            for namespace, policy, head in reporting:
                breaking = 0
                for node in nodes.nodes:
                    part = count_node(node, database=database, match=keyspace.match_pattern(head), policies=policies,
                                      reach=[policy], action=PurgeRun.DELETE, condition=PurgeRun.VIOLATES,
                                      batch_size=settings.PURGE_BATCH_SIZE, failed=spent)
                    breaking += part.actionable
                    spent.add(sent=part.commands, billed=part.billed)
                outcome.reported[keyspace.display_key(head)] = breaking
        finally:
            for cost in nodes.drain().values():
                spent.add(sent=cost.sent, billed=cost.billed)
            outcome.reported_billed = spent.billed
            PolicyReport.objects.create(database=database, counts=outcome.reported, commands=spent.sent,
                                        billed_commands=spent.billed)


def clean_up_previews(*, older_than_seconds=None):
    """Delete previews nobody confirmed (or that never finished) within `older_than_seconds` (default
    PURGE_PREVIEW_RETENTION_SECONDS), with their stored key lists. Returns how many runs
    went. A preview is a dry run: it was never audited, so nothing of the record is lost."""
    age = settings.PURGE_PREVIEW_RETENTION_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timezone.timedelta(seconds=age)
    # Never queued: previewed, and previews that were cancelled, failed or whose worker
    # vanished (a preview task's time limit is an hour).
    stale = PurgeRun.objects.filter(queued_at__isnull=True, previewed_at__lt=cutoff, status__in=(
        PurgeRun.PREVIEWING, PurgeRun.PREVIEWED, PurgeRun.CANCELLED, PurgeRun.FAILED))
    with transaction.atomic():
        count = stale.count()
        stale.delete()  # PurgeTargetKey rows go with them (on_delete=CASCADE)
    return count
