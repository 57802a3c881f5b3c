"""The keyspace watch: every minute (beat task `continuity.watch_keyspaces`, twin
`manage.py watch_keyspaces`) it looks at each monitored database over all its primaries
(`keyspace.watch.read_states`) and compares with the last look where every primary
answered:

- a primary whose `run_id` changed or whose `uptime_in_seconds` went backwards restarted;
- the keys summed over the primaries dropping by more than ALERT_KEYSPACE_LOSS_SHARE is a
  loss (FLUSHALL is one too: no restart needed);
- a primary that keeps nothing on disk (no RDB `save`, no AOF; self-hosted only, a hosted
  Redis does not say) loses every key when it restarts.

Each finding alerts once: a loss or a restart is found by the one check that sees it (the
next compares with a check taken after it), and persistence off when it becomes off. The
checks of one database are taken one at a time (a lock on its record), so the beat task
and the command cannot both find, and alert, the same loss.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from continuity import keyspace
from continuity.keyspace import watch
from continuity.models import KeyspaceCheck
from continuity.models.watch import dropped_beyond
from dashboard import alerts, failure_plan
from dashboard.models import RedisDatabase


@dataclass(frozen=True)
class Finding:
    event: str  # KeyspaceCheck.LOST or RESTARTED
    text: str


def _restarts(before, after):
    """[(address, why)] of the primaries of `after` that restarted since `before` ({address: NodeState})."""
    found = []
    for address, now in after.items():
        then = before.get(address)
        if then is None or not now.ok or not then.ok:
            continue
        if now.run_id and then.run_id and now.run_id != then.run_id:
            found.append((address, f"run id changed, uptime {now.uptime:,} s" if now.uptime is not None
                          else "run id changed"))
        elif None not in (now.uptime, then.uptime) and now.uptime < then.uptime:
            found.append((address, f"uptime went back from {then.uptime:,} s to {now.uptime:,} s"))
    return found


def compare(database, previous, states, *, share):
    """The Finding of a check of `database` reading `states` ([NodeState]) after the check
    `previous` (a KeyspaceCheck where every primary answered, or None): a loss, a restart,
    or None."""
    if previous is None:
        return None
    before = {address: watch.NodeState.from_json(address, data) for address, data in (previous.nodes or {}).items()}
    after = {state.address: state for state in states}
    restarted = "; ".join(f"{address} restarted ({why})" + (
        f" and read back {after[address].loaded_keys:,} keys from disk" if after[address].loaded_keys is not None
        else "") for address, why in _restarts(before, after))
    total = _total(states)
    if dropped_beyond(previous.keys, total, share):
        lost = previous.keys - total
        text = (f"{database.name} lost {lost:,} of {previous.keys:,} keys ({lost / previous.keys:.0%}) since "
                f"{previous.checked_at:%Y-%m-%d %H:%M} UTC: {total:,} keys now.")
        return Finding(KeyspaceCheck.LOST, text + (f" {restarted}." if restarted else " No primary restarted (a "
                                                                                      "FLUSHALL, a FLUSHDB or a mass "
                                                                                      "delete?)."))
    if restarted:
        keys = f"{previous.keys:,} keys then, {total:,} now" if None not in (previous.keys, total) else "keys unknown"
        return Finding(KeyspaceCheck.RESTARTED, f"{database.name}: {restarted} ({keys}).")
    return None


def _total(states):
    """The keys summed over the primaries; None unless every one answered with its count."""
    if not states or any(not state.ok or state.keys is None for state in states):
        return None
    return sum(state.keys for state in states)


def _persistence(states):
    """'off' when any primary keeps nothing on disk (its restart loses its keys); else the
    kinds seen ('rdb', 'aof', 'rdb+aof'); '' when no primary says."""
    kinds = {state.persistence for state in states if state.ok}
    if watch.OFF in kinds:
        return watch.OFF
    kinds.discard(watch.UNKNOWN)
    return ",".join(sorted(kinds))


def _link(database):
    return settings.DASHBOARD_BASE_URL.rstrip("/") + reverse("dashboard:home")


def _alert(database, event, title, text, sent):
    """Send `event` to the enabled channels; noted in `sent` when at least one got it (with no
    channel the finding is still recorded once, and the first screen says it went nowhere)."""
    if alerts.notify(event=event, severity=failure_plan.SEVERITIES[event], title=title, text=text,
                     link=_link(database)):
        sent.append(event)


def check_database(database, *, via=KeyspaceCheck.WORKER, now=None):
    """Look at `database` once, record the KeyspaceCheck and alert what it found (once)."""
    error, states = "", []
    try:
        states = watch.read_states(database)
    except keyspace.FAILURES as exc:
        error = keyspace.describe_error(exc)
    error = error or "; ".join(f"{state.address}: {state.error}" for state in states if not state.ok)
    with transaction.atomic():
        RedisDatabase.objects.select_for_update().filter(pk=database.pk).exists()  # one check at a time
        previous = KeyspaceCheck.objects.for_database(database).answered().latest_first().first()
        ok = not error
        finding = compare(database, previous, states, share=settings.ALERT_KEYSPACE_LOSS_SHARE) if ok else None
        persistence = _persistence(states)
        sent = []
        if finding is not None:
            title = (f"Redis {database.name} lost keys" if finding.event == KeyspaceCheck.LOST
                     else f"Redis {database.name} restarted")
            _alert(database, finding.event, title, finding.text, sent)
        if ok and persistence == watch.OFF and (previous is None or previous.persistence != watch.OFF):
            _alert(database, failure_plan.PERSISTENCE_OFF, f"Redis {database.name} keeps no keys on disk",
                   f"{database.name} has no RDB snapshots and no AOF: a restart loses every key.", sent)
        keys = _total(states)
        with_ttl = [state.keys_with_ttl for state in states if state.ok]
        check = KeyspaceCheck.objects.create(
            database=database, checked_at=now or timezone.now(), via=via, ok=ok, error=error, keys=keys,
            keys_without_ttl=None if keys is None or None in with_ttl else keys - sum(with_ttl),
            persistence=persistence, nodes={state.address: state.to_json() for state in states},
            event=finding.event if finding else "", event_text=finding.text if finding else "", alerted=sent)
    return check


def watch_keyspaces(*, via=KeyspaceCheck.WORKER, now=None):
    """A check of every monitored database; old checks that found nothing are deleted."""
    checks = [check_database(database, via=via, now=now) for database in RedisDatabase.objects.all()]
    KeyspaceCheck.objects.stale(now).delete()
    return checks
