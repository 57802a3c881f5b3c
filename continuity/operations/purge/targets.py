"""Purge targets, decided before any Redis command: a literal prefix, a raw glob, or the
offending keys of a TTL review finding.

Every target is a *scope*, the intersection of what the operator gave: a namespace, a
literal prefix (inside it), and a finding kind (keys that still show it when their page
runs). `decide_target` decides it once and the run stores it (`target_token`: the literal
head; `reach`: the namespaces it may act on; `condition`: the finding), so the preview
scans only the head and execution acts only inside the reach, whichever page, command or
task started it. A typed prefix is never dropped: on a review-finding target it is the
head that is scanned. The default action is the least destructive one that fixes the
finding (`default_action`); Delete is never a default.

A prefix must *start with* a registered namespace prefix; a pattern's literal head
(everything before its first unescaped `*`, `?` or `[`, with `\\x` read as `x`) must start
with one. So `lucia:session:` and `lucia:session:ab*` pass, while ``, `*`, `lucia:*` and
`lucia:sess*` are refused: `lucia:sess*` would also match `lucia:sessions-old:1`, which no
namespace covers. Nothing is scanned for a refused target.
"""

from dataclasses import dataclass

from continuity import keyspace
from continuity.models import Namespace, PurgeRun, ReviewNamespaceStat, ReviewRun
from dashboard.models import RedisDatabase
from dashboard.scanning import find_secrets
from continuity.operations.purge.common import PurgeRefused, namespace_policies
from continuity.policy import NO_TTL, OVERSIZED, TTL_ABOVE_MAX, UNKNOWN_NAMESPACE, WRONG_TYPE

_GLOB = frozenset(b"*?[")
SECRET_TARGET = ("This target looks like a secret ({kinds}). It was not saved and is not shown again. A purge "
                 "target is a key prefix or pattern; if it was a real secret, rotate it.")
# The condition a finding purge re-checks for each key: the finding itself.
FINDING_CONDITIONS = {NO_TTL: PurgeRun.NO_TTL, TTL_ABOVE_MAX: PurgeRun.TTL_ABOVE,
                      OVERSIZED: PurgeRun.OVERSIZED, WRONG_TYPE: PurgeRun.WRONG_TYPE}
# Findings that applying the policy TTL repairs.
EXPIRE_REPAIRS = (NO_TTL, TTL_ABOVE_MAX)


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


def _refusal_beyond(database, shown, policies):
    listed = ", ".join(sorted(p.prefix.decode("utf-8", "backslashreplace") for p in policies)) or "none registered"
    return PurgeRefused(
        f"{shown!r} reaches beyond the registered namespaces of {database.name}: a purge target must start "
        f"with one of their prefixes ({listed}). Register a namespace first if these keys need purging."
    )


def resolve_target(database, kind, value: bytes, policies=None):
    """(MATCH pattern, [Policy] of the namespaces the target can reach) or PurgeRefused."""
    policies = namespace_policies(database) if policies is None else policies
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
    if not any(head.startswith(p.prefix) for p in policies):
        raise _refusal_beyond(database, shown, policies)
    reach = [p for p in policies if head.startswith(p.prefix) or p.prefix.startswith(head)]
    return pattern, reach


def check_keyspace(database, heads, addresses=()):
    """Refuse (PurgeRefused) a purge whose literal heads reach too far on the Redis keyspace
    `database` reaches, whichever record, form or command led here. For every record on that
    keyspace (`RedisDatabase.objects.on_keyspace_of`, read from the environment now):

    - no head may cover the record's whole key prefix (`lucia:` covers `lucia:`, `lucia`
      and `` cover it too);
    - a head inside the record's key prefix must lie inside one of its namespaces, so it
      reaches at most one namespace (and the namespaces nested in it).

    A second record on the same Redis cannot open the first one's keys: its own namespaces
    do not count for the first one's key prefix. `addresses`: the nodes of `database`'s Redis
    Cluster (a record naming another node of it reaches the same keys). Reads Postgres only."""
    records = sorted(RedisDatabase.objects.on_keyspace_of(database, addresses) or [database],
                     key=lambda r: r.pk != database.pk)
    prefixes = {}
    for record_id, prefix in Namespace.objects.filter(database__in=[r.pk for r in records]).values_list(
            "database_id", "prefix"):
        prefixes.setdefault(record_id, []).append(prefix.encode())
    for head in heads:
        shown = keyspace.display_key(head)
        for record in records:
            key_prefix = record.key_prefix.encode()
            where = "" if record.pk == database.pk else f", which monitors the same Redis keyspace as {database.name}"
            if key_prefix.startswith(head):
                raise PurgeRefused(f"{shown!r} covers the whole key prefix {record.key_prefix!r} of {record.name}"
                                   f"{where}. A purge target must lie inside one namespace.")
            if head.startswith(key_prefix) and not any(head.startswith(p) for p in prefixes.get(record.pk, ())):
                raise PurgeRefused(f"{shown!r} lies in no namespace of {record.name}{where}: a purge target must lie "
                                   f"inside one registered namespace of every record on that keyspace.")


def check_action(action):
    if action not in (PurgeRun.DELETE, PurgeRun.EXPIRE):
        raise PurgeRefused(f"Unknown action {action!r}: choose delete or expire.")


def default_action(finding):
    """The least destructive action that fixes `finding`: applying the policy TTL repairs
    `no_ttl` and `ttl_above_max` and deletes nothing. Anything else (no finding, oversized,
    wrong type) has no default: Delete must be chosen (PurgeRefused)."""
    if finding in EXPIRE_REPAIRS:
        return PurgeRun.EXPIRE
    what = f"{finding} keys" if finding else "a purge without a finding"
    raise PurgeRefused(f"Choose an action for {what}: Delete is never chosen for you. Applying the policy TTL "
                       "(the default for no_ttl and ttl_above_max) repairs only TTL findings.")


def scope_namespace(database, policies, name):
    """The Policy of the namespace named `name` of `database` (None: no namespace given), or
    PurgeRefused."""
    if not name:
        return None
    for policy in policies:
        if policy.name == name:
            return policy
    raise PurgeRefused(f"{database.name} has no namespace named {name!r}.")


def _narrow(reach, namespace, head, policies, shown):
    """`reach` limited to `namespace` (None: unchanged), or PurgeRefused when that leaves
    nothing: the namespace must own keys under `head` (be the namespace of `head`, or one
    nested under it; an enclosing namespace owns none of a nested one's keys)."""
    if namespace is None:
        return reach
    owner = policies.for_key(head)
    if namespace.prefix != (owner.prefix if owner else None) and not namespace.prefix.startswith(head):
        raise PurgeRefused(f"{shown!r} lies outside the namespace {namespace.name} "
                           f"({namespace.prefix.decode('utf-8', 'backslashreplace')}): the scope is empty. Give a "
                           "prefix inside that namespace and not inside one nested in it.")
    return [policy for policy in reach if policy.prefix == namespace.prefix] or [namespace]


def scoped_stats(stats, *, head=b"", reach=None):
    """The review's namespace figures inside the scope: namespaces `head` can reach (its
    own, and those nested under it), and of those only the ones in `reach` (prefixes;
    None: any)."""
    kept = []
    for stat in stats:
        prefix = stat.namespace.prefix.encode()
        if head and not (head.startswith(prefix) or prefix.startswith(head)):
            continue
        if reach is not None and prefix not in reach:
            continue
        kept.append(stat)
    return kept


def condition_for(action, condition):
    """What a key must still show at execution. Applying the policy TTL acts only on keys
    that break a TTL rule (none, where one is required; above the maximum)."""
    if action == PurgeRun.EXPIRE and condition == PurgeRun.ANY:
        return PurgeRun.VIOLATES
    return condition


def finding_condition(finding, action):
    """The condition of a finding purge, or PurgeRefused."""
    if finding == UNKNOWN_NAMESPACE:
        raise PurgeRefused("unknown_namespace keys belong to no registered namespace, so a purge will not touch "
                           "them. Register a namespace for them first.")
    if finding not in FINDING_CONDITIONS:
        raise PurgeRefused(f"Unknown review finding {finding!r}.")
    if action == PurgeRun.EXPIRE and finding not in EXPIRE_REPAIRS:
        raise PurgeRefused(f"Applying the policy TTL cannot repair {finding} keys: it only sets a TTL. Choose "
                           "delete, or fix these keys where they are written.")
    return FINDING_CONDITIONS[finding]


def phrase(review_id, finding, head=b""):
    """What the operator retypes to confirm a finding purge: the review, the finding and,
    when the scope has one, the literal prefix it is limited to."""
    scope = f" under {keyspace.display_key(head)}" if head else ""
    return f"review {review_id} {finding}{scope}"


def finding_stats(*, database, review_id, finding):
    """The review's namespace figures that had `finding`, or PurgeRefused. Reads Postgres only."""
    review = ReviewRun.objects.select_related("database").filter(pk=review_id).first() if review_id else None
    if review is None:
        raise PurgeRefused(f"There is no TTL review #{review_id}.")
    if review.database_id != database.pk:
        raise PurgeRefused(f"Review #{review.pk} reviewed {review.database.name}, not {database.name}.")
    if review.status != ReviewRun.SUCCEEDED:
        raise PurgeRefused(f"Review #{review.pk} is {review.status}; only a succeeded review's findings can be purged.")
    if not (review.findings or {}).get(finding):
        raise PurgeRefused(f"Review #{review.pk} found no {finding} keys: there is nothing to purge.")
    stats = [stat for stat in ReviewNamespaceStat.objects.filter(run=review).select_related("namespace")
             if (stat.findings or {}).get(finding) and stat.namespace and stat.namespace.database_id == database.pk]
    if not stats:
        raise PurgeRefused(f"The namespaces where review #{review.pk} found {finding} keys are no longer registered.")
    return stats


def run_heads(run):
    """The literal heads a stored run reaches, decided again from Postgres: the literal head
    of the pattern it SCANs (a prefix, a pattern or a policy namespace), or, for a review
    finding's stored key list, the namespaces where the review found it (every namespace of
    the record when there is no such review: the run may act in any of them)."""
    if run.target_kind != PurgeRun.FINDING:
        return [literal_head(run.match_bytes())]
    if run.target_bytes():  # a scoped finding: its literal prefix is all it scans
        return [run.target_bytes()]
    prefixes = [stat.namespace.prefix for stat in ReviewNamespaceStat.objects.filter(
                    run_id=run.review_id, namespace__database=run.database).select_related("namespace")
                if (stat.findings or {}).get(run.finding)] if run.review_id else []
    if prefixes and run.reach is not None:
        reached = {keyspace.decode_key(token) for token in run.reach}
        prefixes = [prefix for prefix in prefixes if prefix.encode() in reached]
    if not prefixes:
        prefixes = Namespace.objects.filter(database=run.database).values_list("prefix", flat=True)
    return scan_prefixes(prefix.encode() for prefix in prefixes)


def scan_prefixes(prefixes):
    """The prefixes to SCAN, leaving out any that a shorter one already covers
    (`lucia:session:` covers `lucia:session:admin:`), so no key is read twice."""
    kept = []
    for prefix in sorted(set(prefixes), key=len):
        if not any(prefix.startswith(shorter) for shorter in kept):
            kept.append(prefix)
    return kept


def review_counts(run):
    """{namespace prefix: offenders the review counted} for a finding run, to set beside
    what the preview matched now."""
    if run.target_kind != PurgeRun.FINDING or not run.review_id:
        return {}
    reached = None if run.reach is None else {keyspace.decode_key(token) for token in run.reach}
    counts = {}
    for stat in ReviewNamespaceStat.objects.filter(run_id=run.review_id).select_related("namespace"):
        if reached is not None and (stat.namespace is None or stat.namespace.prefix.encode() not in reached):
            continue
        count = (stat.findings or {}).get(run.finding, 0)
        if count:
            label = stat.namespace.prefix if stat.namespace else stat.label
            counts[label] = counts.get(label, 0) + count
    return counts


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
    head: bytes = b""  # the literal prefix of the scope (a finding's: b"" when it scans its namespaces)
    finding: str = ""  # the finding every acted-on key must still show ("": any key)
    action: str = ""

    def reach_tokens(self):
        """What `PurgeRun.reach` stores: the reached namespaces' prefixes as key tokens."""
        return [keyspace.encode_key(policy.prefix) for policy in self.reach]


def refuse_secret_target(value: bytes):
    """PurgeRefused, without quoting it, when a prefix or pattern looks like a secret: a run
    stores its target, shows it to viewers and puts it in the audit log. Every prefix or
    pattern run is decided by `decide_target` (the pages, `manage.py purge`, scripts), so
    this is the one check before anything is saved or sent to Redis."""
    # As shown and stored (control bytes escaped), and as typed (a token split by one).
    kinds = find_secrets(keyspace.display_key(value)) or find_secrets(value.decode("utf-8", "replace"))
    if kinds:
        raise PurgeRefused(SECRET_TARGET.format(kinds=", ".join(kinds)))


def decide_target(database, *, kind, value, action, review_id, finding, policies, explicit_keys=False,
                  namespace=None) -> Target:
    """The `Target` of a purge, or PurgeRefused, decided once (when the run is created) and
    stored on it: the scope namespace ∩ literal prefix ∩ finding. `action` None: the
    least destructive one that fixes the finding (`default_action`). `namespace`: a
    namespace name of `database`, limiting the target to that namespace's own keys.
    `finding` on a prefix or pattern: act only on keys that still show it. Reads Postgres
    only: nothing is sent to Redis for a refused target. The keyspace guardrail
    (`check_keyspace`) holds for its heads."""
    if value:  # first: a pasted secret is refused before any other message could quote it
        refuse_secret_target(value)
    action = action or default_action(finding)
    check_action(action)
    scope = scope_namespace(database, policies, namespace)
    if kind == PurgeRun.FINDING:
        condition = finding_condition(finding, action)
        head = value or (scope.prefix if scope else b"")
        if value:  # a literal prefix: inside a registered namespace, as any prefix target
            _, reach = resolve_target(database, PurgeRun.PREFIX, value, policies)
            _narrow(reach, scope, value, policies, keyspace.display_key(value))
        stats, reach = None, list(policies)
        if not explicit_keys:  # an explicit key list comes from a caller that chose it
            stats = finding_stats(database=database, review_id=review_id, finding=finding)
            stats = scoped_stats(stats, head=head, reach=None if scope is None else {scope.prefix})
            if not stats:
                raise PurgeRefused(f"Review #{review_id} found no {finding} keys under "
                                   f"{keyspace.display_key(head)!r}: the scope is empty, there is nothing to purge.")
            reach = [policies.for_key(stat.namespace.prefix.encode()) for stat in stats]
        elif scope is not None:
            reach = [scope]
        heads = [head] if head else (scan_prefixes(stat.namespace.prefix.encode() for stat in stats) if stats else [])
        target = Target(pattern=b" ".join(keyspace.match_pattern(p) for p in heads), reach=reach, condition=condition,
                        heads=heads, whole=True, shown=phrase(review_id, finding, head), stats=stats, head=head,
                        finding=finding, action=action)
    else:
        if not value and scope is not None and kind == PurgeRun.PREFIX:
            value = scope.prefix  # the namespace alone: its prefix
        pattern, reach = resolve_target(database, kind, value, policies)
        head = value if kind == PurgeRun.PREFIX else literal_head(value)
        reach = _narrow(reach, scope, head, policies, keyspace.display_key(value))
        if finding:
            condition = finding_condition(finding, action)
        else:
            condition = condition_for(action, PurgeRun.ANY)
        target = Target(pattern=pattern, reach=reach, condition=condition,
                        heads=[head], whole=pattern == keyspace.match_pattern(head),
                        shown=keyspace.display_key(value), head=value, finding=finding or "", action=action)
    if action == PurgeRun.EXPIRE and not any(p.max_ttl_seconds for p in target.reach):
        raise PurgeRefused("None of the namespaces this target reaches has a maximum TTL to apply.")
    check_keyspace(database, target.heads)
    return target


def scope_of(run):
    """The scope a stored run acts on, for pages and commands: {"namespaces": the prefixes
    of the namespaces it may act on (None: any it reaches), "prefix": its literal head as
    text ("" for none), "keys": what each key must still show at execution}."""
    head = run.target_bytes() if run.target_kind != PurgeRun.PATTERN else literal_head(run.target_bytes())
    return {"namespaces": None if run.reach is None else [keyspace.display_key(keyspace.decode_key(token))
                                                          for token in run.reach],
            "prefix": keyspace.display_key(head) if head else "",
            "keys": run.get_condition_display()}


def stored_reach(run, policies):
    """The policies a stored run may act on: those of its decided namespaces that are still
    registered (a namespace removed since leaves its keys alone), or None (any namespace)."""
    if run.reach is None:
        return None
    wanted = {keyspace.decode_key(token) for token in run.reach}
    return [policy for policy in policies if policy.prefix in wanted]
