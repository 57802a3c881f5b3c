"""What every part of the purge engine shares: its refusal, its results, the namespace
policies of a database, how a page of keys splits by namespace, the audit call and the
failure message."""

import time
from dataclasses import dataclass, field

import redis
from django.conf import settings

from continuity import keyspace
from continuity.models import Namespace, PurgeRun
from continuity.policy import NO_TTL, OVERSIZED, TTL_ABOVE_MAX, WRONG_TYPE, Policies
from dashboard import audit, postgres

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


def describe_failure(exc):
    """A purge's failure message, naming the service that failed: Postgres, Redis, or
    neither (the exception's class)."""
    found = postgres.describe_outage(exc)
    if found:
        return found
    if isinstance(exc, (redis.RedisError, keyspace.KeyspaceError)):
        return keyspace.describe_error(exc)
    return f"{exc.__class__.__name__}: {exc}"


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
    nodes: dict = field(default_factory=dict)  # {node host:port: keys matched there}


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
    reported_billed: int = 0  # commands Redis executed to count the report-only namespaces


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


@dataclass
class Counted:
    """What a dry run over a target found, acting on nothing, in the terms execution bills
    by: keys matched, keys the action would change now, matches per namespace prefix, a
    sample (key tokens), the commands sent and billed, and per node the SCAN pages, the
    pages holding keys of a namespace (one acting call each), the keys acted on, and those
    pages holding at least one key the action would change."""

    matched: int = 0
    actionable: int = 0
    namespaces: dict = field(default_factory=dict)
    sample: list = field(default_factory=list)
    commands: int = 0
    billed: int = 0
    scans: int = 0
    pages: int = 0
    acting_pages: int = 0
    acting_keys: int = 0
    changing_pages: int = 0

    def saw(self, page, page_keys, page_policies, sample_size):
        """Count a page: its keys, each acting key in its namespace, the first acting keys as the sample."""
        self.matched += len(page)
        for policy in page_policies:
            label = policy.prefix.decode("utf-8", "backslashreplace")
            self.namespaces[label] = self.namespaces.get(label, 0) + 1
        self.sample.extend(keyspace.encode_key(k) for k in page_keys[:max(0, sample_size - len(self.sample))])

    def merge(self, other, sample_size):
        for name in ("matched", "actionable", "commands", "billed", "scans", "pages", "acting_pages", "acting_keys",
                     "changing_pages"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for label, count in other.namespaces.items():
            self.namespaces[label] = self.namespaces.get(label, 0) + count
        self.sample.extend(other.sample[:max(0, sample_size - len(self.sample))])
        return self


def estimated_billed(counted, *, nodes, action, condition, scanned, unlink_each=False, read_regions=0, checks=0):
    """The commands an execution of what `counted` found will make Redis run, as
    `execute` sends them: per node a first SCAN recorded by the marker (SCAN targets), per
    page one round trip holding the next page's SCAN and either the acting script (an
    EVALSHA, the re-check's reads per key — none for a plain delete —, the acts and the
    marker SET) or the marker SET alone; per node the marker's DEL at the end; `checks`
    (a cluster's CLUSTER NODES). Acts: delete, one UNLINK per page that changes a key (per
    deleted key on a cluster node: `unlink_each`); expire, one PEXPIRE per key it repairs.
    Writes are counted once more per read region."""
    want = CONDITION_FINDINGS[condition]
    reads_per_key = 0 if (not want and action == PurgeRun.DELETE) else 1 + (OVERSIZED in want) + (WRONG_TYPE in want)
    if action == PurgeRun.DELETE:
        acts = counted.actionable if unlink_each else counted.changing_pages
    else:
        acts = counted.actionable
    markers = counted.pages + (nodes if scanned else 0) + nodes  # per page, a first one per node, the DELs
    writes = acts + markers
    return (counted.scans + counted.acting_pages + counted.acting_keys * reads_per_key + writes
            + writes * read_regions + checks)


def resharding(database, address, moved):
    """PurgeRefused for a preview that met keys whose slot moved away from `address`."""
    return PurgeRefused(f"{database.name} is being resharded: {address} no longer serves {moved:,} of the keys "
                        f"(their slot moved). Its counts would be wrong; preview again once the slots stopped moving. "
                        f"Nothing was changed.")


def layout_checks(nodes):
    """The CLUSTER NODES an execution sends (`execute`): the slot map when it opens the
    keyspace, every other primary's before the first node, then every primary's before
    each further node and at the end. None on a standalone server."""
    if not nodes.is_cluster:
        return 0
    count = len(nodes.nodes)
    return count * (count + 1)


class Pacer:
    """When a job saves its progress (every PURGE_CHECKPOINT_SECONDS, and with its last
    page) and how long it sleeps to hold a rate cap. `save()` saves and answers "ok",
    "cancel" (saved, and an operator asked to stop) or "lost" (another worker holds the
    run); `progress()`, when given, is called after each save."""

    def __init__(self, save, *, rate_cap=0, progress=None, clock=time.monotonic, sleep=time.sleep, every=None):
        self.save, self.rate_cap, self.progress = save, rate_cap, progress
        self.every = settings.PURGE_CHECKPOINT_SECONDS if every is None else every
        self.clock, self.sleep = clock, sleep
        self.started, self.last, self.touched = clock(), None, 0

    def after_page(self, keys, final=False):
        """'ok', 'cancel' or 'lost', saving when due; sleeps for the rate cap."""
        state = "ok"
        now = self.clock()
        if final or self.last is None or now - self.last >= self.every:
            self.last = now
            state = self.save()
            if state != "lost" and self.progress:
                self.progress()
        self.touched += keys
        if self.rate_cap and self.touched and state == "ok":
            ahead = self.delay()
            if ahead > 0:
                self.sleep(ahead)
        return state

    def delay(self):
        """Seconds to wait so that the keys touched so far took at least touched / cap."""
        return self.touched / self.rate_cap - (self.clock() - self.started)


def audit_run(run, action, *, request=None, actor=None, actor_label="", source=None, before=None, note=""):
    """The audit entry of a step of `run` (inside the caller's transaction)."""
    audit.record(action=action, target=run, before=before, after=run.summary(), note=note or run.reason,
                 request=request, actor=actor, actor_label=actor_label, source=source)
