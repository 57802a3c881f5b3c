"""manage.py purge: preview and execute a purge from the command line, synchronously,
through the same operations as the pages and the Celery task."""

import getpass
import json
import os
import sys
import time

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError

from continuity import keyspace
from continuity.models import FINDINGS
from continuity.operations import purge
from dashboard import postgres, roles
from dashboard.command_scanning import RefuseSecretArguments
from dashboard.models import RedisDatabase


def acting_user(username):
    """The dashboard user a command acts as: --as, else $DASHBOARD_USER, else the login name."""
    name = username or os.environ.get("DASHBOARD_USER") or getpass.getuser()
    try:
        return get_user_model().objects.get(username=name, is_active=True)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No active dashboard user {name!r}; pass --as USERNAME.") from None


class ProgressLine:
    """At most one progress line a second on stderr."""

    def __init__(self, stream, label):
        self.stream, self.label, self.last, self.started = stream, label, 0.0, time.monotonic()

    def _due(self):
        now = time.monotonic()
        if now - self.last < 1.0:
            return None
        self.last = now
        return max(now - self.started, 1e-6)

    def preview(self, scanned, matched):
        """The preview's callback: keys scanned and matched so far."""
        if self._due() is not None:
            self.stream.write(f"purge: preview scanned {scanned} keys, {matched} matched so far\n")
            self.stream.flush()

    def __call__(self, run):
        """Execution's callback, after a checkpoint."""
        elapsed = self._due()
        if elapsed is not None:
            self.stream.write(f"purge: matched {run.matched}, {run.done_label} {run.done}, skipped "
                              f"{run.skipped}, {run.matched / elapsed:,.0f} keys/s\n")
            self.stream.flush()


class Command(RefuseSecretArguments, BaseCommand):
    help = ("Purge keys under a registered namespace: a literal prefix, a glob pattern, a namespace, or the "
            "offending keys of a TTL review finding (--review ID --finding F). The scope is the intersection of "
            "what you give: --namespace, --prefix (on a review finding: the prefix it is limited to) and --finding "
            "(on a prefix or pattern: only keys that still show it). The default action is the least destructive "
            "fix (apply the policy TTL for no_ttl and ttl_above_max); delete must be given as --action delete. "
            "Previews the exact count and asks you to retype the target; with --yes it skips both and scans once, "
            "counting exactly as it acts. --dry-run: the exact preview only. Refusals exit non-zero and touch "
            "nothing.")

    # No system checks before a purge: they import every URL and view (about 0.15 s of the
    # command's start-up, a scripted purge's fixed cost). `check --deploy` runs at deploy time.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--database", required=True)
        parser.add_argument("--prefix", help="literal key prefix; glob characters in it match themselves (with "
                            "--review: the prefix the finding's purge is limited to)")
        parser.add_argument("--pattern", help="raw Redis glob (advanced); its literal head must be a namespace")
        parser.add_argument("--namespace", help="limit the purge to this namespace's own keys (by name)")
        parser.add_argument("--review", type=int, help="a succeeded TTL review's id; with --finding")
        parser.add_argument("--resume", type=int, metavar="RUN",
                            help="resume purge RUN whose worker died (from its checkpoint; counts stay exact)")
        parser.add_argument("--finding", choices=list(FINDINGS),
                            help="with --review: purge that finding's current offenders; with --prefix, --pattern or "
                                 "--namespace: only keys that still show it (each re-checked)")
        parser.add_argument("--action", choices=["delete", "expire"], default=None,
                            help="expire applies the policy TTL (the default for no_ttl and ttl_above_max); delete "
                                 "is never the default")
        parser.add_argument("--dry-run", action="store_true", help="preview only: count, touch nothing")
        parser.add_argument("--reason", default="", help="why; recorded in the audit log (required to execute)")
        parser.add_argument("--yes", action="store_true", help="no retyped confirmation and no preview scan: "
                            "show the instant estimate, then purge (the keyspace is scanned once)")
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--as", dest="username", help="the dashboard user to act as (needs the operator role)")
        parser.add_argument("--rate-cap", type=int, default=None, help="keys per second (0 = none)")

    def handle(self, *args, **opts):
        user = acting_user(opts["username"])
        try:
            roles.require_role(user, roles.VIEWER if opts["dry_run"] else roles.OPERATOR)
            database = RedisDatabase.objects.get(name=opts["database"])
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None
        except RedisDatabase.DoesNotExist:
            raise CommandError(f"No database record named {opts['database']!r}.") from None
        if opts["resume"] is not None:
            if any(opts[name] for name in ("prefix", "pattern", "namespace", "review", "finding")):
                raise CommandError("--resume RUN continues that run as it was decided: give no other target.")
            return self._resume(opts, database, user)
        if not opts["dry_run"]:
            blocking = purge.blocking_run(database)  # before any scan: the purge could not run anyway
            if blocking is not None:
                raise CommandError(f"Refused: {purge.describe_blocking(blocking)}")
        if not opts["dry_run"] and not opts["reason"].strip():
            raise CommandError("Give --reason: it goes into the audit log with the purge.")
        kind, value = self._target(opts)
        # --yes without --dry-run: no preview scan; execution counts exactly as it acts, so
        # the keyspace is scanned once. (A finding's preview is its only scan: it stays.)
        skip_preview = opts["yes"] and not opts["dry_run"] and kind != "finding"
        target = {"database": database, "kind": kind, "value": value, "action": opts["action"], "actor": user,
                  "rate_cap": opts["rate_cap"], "namespace": opts["namespace"], "finding": opts["finding"] or ""}
        try:
            if skip_preview:
                preview, run = None, purge.estimate_purge(**target)
            else:
                preview = purge.preview_purge(**target, review_id=opts["review"],
                                              progress=ProgressLine(self.stderr, "").preview,
                                              on_estimate=None if opts["json"] else self._show_estimate)
                run = preview.run
        except purge.PurgeRefused as exc:
            raise CommandError(f"Refused: {exc}") from None
        except Exception as exc:  # noqa: BLE001 — Redis errors, told the operator's way
            raise CommandError(purge.describe_failure(exc)) from exc
        if opts["dry_run"]:
            return self._report(opts, run, dry_run=True, preview=preview)
        if not opts["json"] and preview:
            self._show_preview(preview)
        elif not opts["json"]:
            self._show_estimate(run)
            self.stderr.write("No preview scan with --yes: the purge counts exactly as it acts.")
        if not opts["yes"]:
            typed = self._ask(f"Type the {'target' if kind == 'finding' else kind} to confirm ({run.target_value}): ")
            if typed != run.target_value:
                raise CommandError("Refused: the confirmation does not match the target; nothing was touched.")
        try:
            run = purge.confirm_purge(run=run, confirmation=run.target_value, reason=opts["reason"], actor=user,
                                      source="cli")
            result = purge.execute_purge(run_id=run.pk, source="cli", progress=ProgressLine(self.stderr, ""))
        except purge.PurgeRefused as exc:
            raise CommandError(f"Refused: {exc}") from None
        except purge.PurgeStopped as exc:  # Postgres went away: resumable, not failed
            raise CommandError(str(exc)) from None
        except postgres.GONE as exc:  # before the run started: nothing ran, nothing to mark
            raise CommandError(f"Purge #{run.pk} did not start: {postgres.describe_outage(exc)}.") from None
        except Exception as exc:  # noqa: BLE001
            error = purge.describe_failure(exc)
            purge.fail_purge(run_id=run.pk, error=error, source="cli")
            raise CommandError(f"Purge #{run.pk} failed: {error}") from exc
        self._report(opts, result.run, dry_run=False)
        if result.status != "succeeded":
            raise CommandError(f"Purge #{run.pk} ended {result.status}.")

    def _resume(self, opts, database, user):
        from continuity.models import PurgeRun

        run = PurgeRun.objects.filter(pk=opts["resume"], database=database).select_related("database").first()
        if run is None:
            raise CommandError(f"No purge #{opts['resume']} of {database.name}.")
        try:
            purge.resume_purge(run=run, actor=user, source="cli")
            result = purge.execute_purge(run_id=run.pk, source="cli", progress=ProgressLine(self.stderr, ""))
        except purge.PurgeRefused as exc:
            raise CommandError(f"Refused: {exc}") from None
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001
            raise CommandError(f"Purge #{run.pk} stopped again: {purge.describe_failure(exc)}; it stays resumable.") from exc
        self._report(opts, result.run, dry_run=False)
        if result.status != "succeeded":
            raise CommandError(f"Purge #{run.pk} ended {result.status}.")

    @staticmethod
    def _target(opts):
        """(kind, value) of the target the options give; the scope's other parts
        (--namespace, --finding) travel beside it."""
        if opts["review"] is not None:
            if not opts["finding"]:
                raise CommandError("Give --finding with --review (no_ttl, ttl_above_max, oversized, wrong_type).")
            if opts["pattern"] is not None:
                raise CommandError("A review finding's purge is limited by a literal --prefix, not a --pattern.")
            return "finding", os.fsencode(opts["prefix"]) if opts["prefix"] else b""
        if opts["prefix"] is not None and opts["pattern"] is not None:
            raise CommandError("Give --prefix or --pattern, not both.")
        if opts["prefix"] is not None:
            return "prefix", os.fsencode(opts["prefix"])
        if opts["pattern"] is not None:
            return "pattern", os.fsencode(opts["pattern"])
        if opts["namespace"]:
            return "prefix", b""  # the namespace's own prefix
        raise CommandError("Give a target: --prefix, --pattern, --namespace, --review ID --finding F, or --resume RUN.")

    def _ask(self, prompt):
        self.stderr.write(prompt, ending="")
        self.stderr.flush()
        line = sys.stdin.readline()
        return line.rstrip("\n")

    def _show_preview(self, preview):
        self.stderr.write(f"Preview: {preview.matched} keys match {preview.run.match_pattern} "
                          f"({preview.actionable} would change); it will cost about {preview.run.estimated_billed_commands} "
                          f"billed commands ≈ ${preview.run.estimated_execution_cost_usd:.4f}.")
        reviewed = purge.review_counts(preview.run)
        for prefix in sorted(set(preview.namespaces) | set(reviewed)):
            then = f" (review #{preview.run.review_id} counted {reviewed.get(prefix, 0)})" if reviewed else ""
            self.stderr.write(f"  {prefix:<30} {preview.namespaces.get(prefix, 0)}{then}")

    def _show_estimate(self, run):
        """The scope and the instant estimate, before any SCAN."""
        scope = purge.scope_of(run)
        where = ", ".join(scope["namespaces"]) if scope["namespaces"] is not None else "any it reaches"
        self.stderr.write(f"Scope: namespaces {where}; prefix {scope['prefix'] or '(the namespaces)'}; keys "
                          f"{scope['keys']}; action {run.action}.")
        self.stderr.write(f"Estimate: {describe_estimate(run)}.")


    def _report(self, opts, run, *, dry_run, preview=None):
        data = {"run": run.pk, "database": run.database.name, "target_kind": run.target_kind,
                "target": run.target_value, "match": run.match_pattern, "action": run.action, "dry_run": dry_run}
        if run.target_kind == "finding":
            data.update(review=run.review_id, finding=run.finding)
            if dry_run:
                data["review_counts"] = purge.review_counts(run)
        if dry_run:
            data.update(matched=preview.matched, actionable=preview.actionable, namespaces=preview.namespaces,
                        sample=[keyspace.display_key(keyspace.decode_key(t)) for t in preview.sample],
                        commands=preview.commands, estimated_commands=preview.estimated_commands,
                        billed_commands=run.preview_billed_commands,
                        estimated_billed_commands=run.estimated_billed_commands,
                        estimated_cost_usd=run.estimated_execution_cost_usd)
        else:
            data.update(status=run.status, matched=run.matched, skipped=run.skipped, commands=run.commands,
                        billed_commands=run.billed_commands, estimated_cost_usd=run.estimated_cost_usd,
                        duration_s=round(run.duration_seconds() or 0, 3), preview_scan=not run.skipped_preview,
                        estimate={"keys": run.estimate_keys, "at_most": run.estimate_at_most,
                                  "source": run.estimate_source})
            data[run.done_label] = run.done
        nodes = run.preview_nodes if dry_run else run.node_stats
        if len(nodes or {}) > 1:  # a Redis Cluster: per primary
            data["nodes"] = nodes
        if opts["json"]:
            self.stdout.write(json.dumps(data))
        elif dry_run:
            self.stdout.write(f"Dry run: {data['matched']} keys match {data['match']} ({data['actionable']} would "
                              f"change); nothing was touched.")
        else:
            self.stdout.write(f"Purge #{run.pk} {run.status}: matched {run.matched}, {run.done_label} {run.done}, "
                              f"skipped {run.skipped}.")
            for node, row in sorted((data.get("nodes") or {}).items()):
                self.stdout.write(f"  {node}: pages {row['pages']}, matched {row['matched']}, {run.done_label} "
                                  f"{row['done']}, skipped {row['skipped']}, billed commands {row['billed']}")


def describe_estimate(run):
    """The instant estimate in one line: keys (with a sampled review's interval), the keys
    the action would change, and the predicted costs of the preview and the purge."""
    detail = run.estimate_detail or {}
    if run.estimate_keys is None:
        return "unknown (DBSIZE did not answer)"
    bound = "at most" if run.estimate_at_most else "about"
    source = (f"{'sampled' if detail.get('sampled') else 'exact'} review #{run.estimate_review_id}"
              if run.estimate_source == "review" else "DBSIZE")
    interval = (f" (95%: {detail['low']}–{detail['high']})" if detail.get("sampled") and detail.get("low") is not None
                else "")
    text = f"{bound} {run.estimate_keys}{interval} keys match {run.match_pattern} (from {source})"
    if detail.get("acting"):
        value, low, high = detail["acting"]
        text += f", {bound} {value}" + (f" (95%: {low}–{high})" if detail.get("sampled") else "") + \
            f" of them {run.get_condition_display()}"
    if detail.get("preview_billed") is not None:
        text += (f"; the preview will cost about {detail['preview_billed']} billed commands, the purge about "
                 f"{detail['execution_billed']}")
    return text
