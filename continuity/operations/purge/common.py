"""What every part of the purge engine shares: its refusal, its results, the namespace
policies of a database, how a page of keys splits by namespace, and the audit call."""

from dataclasses import dataclass, field

from django.conf import settings

from continuity.models import Namespace, PurgeRun
from continuity.policy import NO_TTL, OVERSIZED, TTL_ABOVE_MAX, WRONG_TYPE, Policies
from dashboard import audit

SAMPLE_SIZE = 20

# The findings a key must still have, at execution, to be acted on (PurgeRun.condition).
# ANY: it must still exist.
CONDITION_FINDINGS = {
    PurgeRun.ANY: (),
    PurgeRun.NO_TTL: (NO_TTL,),
    PurgeRun.TTL_ABOVE: (TTL_ABOVE_MAX,),
    PurgeRun.VIOLATES: (NO_TTL, TTL_ABOVE_MAX),
    PurgeRun.OVERSIZED: (OVERSIZED,),
    PurgeRun.WRONG_TYPE: (WRONG_TYPE,),
}


class PurgeRefused(Exception):
    """The purge cannot go ahead. The message says why, for an operator; nothing was touched."""


class PurgeStopped(Exception):
    """Postgres went away mid-run for longer than JOB_DB_OUTAGE_SECONDS. The run stays
    `running` (never failed): its exact progress is in the Redis marker and the resume
    job continues it. The message says which run, how far it got and how it resumes."""

    def __init__(self, run, reason):
        self.run, self.reason = run, reason
        super().__init__(
            f"Purge #{run.pk} of {run.database.name} stopped: {reason}. So far it matched {run.matched:,} keys and "
            f"{run.done_label} {run.done:,} (skipped {run.skipped:,}); Redis holds these exact totals in the run's "
            f"progress marker. The run stays running and resumes where it stopped, repeating nothing: once "
            f"Postgres is back, the 'resume stalled purges' job takes it within PURGE_LEASE_SECONDS "
            f"({settings.PURGE_LEASE_SECONDS} s), or run `manage.py resume_purges`.")


@dataclass(frozen=True)
class PurgePreview:
    """A dry run's figures. `actionable` is how many matched keys the action would change
    right now (delete: all of them; expire: those breaking a TTL rule)."""

    run: PurgeRun
    matched: int
    actionable: int
    namespaces: dict
    sample: list
    commands: int
    estimated_commands: int
    billed: int = 0  # commands Redis executed for the preview
    estimated_billed: int = 0  # commands execution will make Redis execute (`estimated_billed`)
    nodes: dict = field(default_factory=dict)  # Redis Cluster: {primary host:port: keys matched there}


@dataclass(frozen=True)
class PurgeResult:
    run: PurgeRun
    status: str
    matched: int
    done: int
    skipped: int
    commands: int
    resumed: bool = False

    @classmethod
    def of(cls, run, resumed=False):
        return cls(run, run.status, run.matched, run.done, run.skipped, run.commands, resumed)


@dataclass
class PolicyPurgeResult:
    database: str
    runs: list = field(default_factory=list)
    reported: dict = field(default_factory=dict)
    skipped_reason: str = ""
    refused: dict = field(default_factory=dict)  # {namespace prefix: why the keyspace guardrail left it alone}


def namespace_policies(database) -> Policies:
    """The policies of `database`'s registered namespaces (owners: the Namespace rows)."""
    return Policies.of(Namespace.objects.for_database(database))


def split(page, policies, reach=None):
    """The keys of `page` that lie in a registered namespace, their policies, and how many
    keys lie outside (never touched). With `reach`, only keys whose namespace is one of
    those policies count as inside: a SCAN target's namespaces (`resolve_target`), or the
    one namespace of a policy purge."""
    if reach is not None and len(reach) == 1 and not policies.has_nested(reach[0]):
        return page, [reach[0]] * len(page), 0  # every key a SCAN of it returns is its own
    keys, chosen, outside = [], [], 0
    for key in page:
        policy = policies.for_key(key)
        if policy is None or (reach is not None and policy not in reach):
            outside += 1
            continue
        keys.append(key)
        chosen.append(policy)
    return keys, chosen, outside


def estimated_billed(*, scans, acting_batches, keys, actionable, action, condition, read_regions=0, marker=True,
                     extra=0):
    """The commands an execution will make Redis run: a SCAN per page (none for a stored
    finding list), then per acting call one EVALSHA, the marker SET (none on a cluster:
    `marker` False) and (delete) one UNLINK; per key the re-check's reads (none for a plain
    delete); per repaired key one PEXPIRE; plus `extra` (a cluster's CLUSTER NODES checks).
    On a cluster an acting call is one slot group of a page (`purge.cluster.by_slot`).
    Writes are counted once more per read region."""
    want = CONDITION_FINDINGS[condition]
    reads_per_key = 0 if (not want and action == PurgeRun.DELETE) else 1 + (OVERSIZED in want) + (WRONG_TYPE in want)
    writes = (acting_batches if marker else 0) + (acting_batches if action == PurgeRun.DELETE else actionable)
    return scans + acting_batches + keys * reads_per_key + writes + writes * read_regions + extra


def audit_run(run, action, *, request=None, actor=None, actor_label="", source=None, before=None, note=""):
    """The audit entry of a step of `run` (inside the caller's transaction)."""
    audit.record(action=action, target=run, before=before, after=run.summary(), note=note or run.reason,
                 request=request, actor=actor, actor_label=actor_label, source=source)
