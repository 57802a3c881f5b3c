"""The TTL review of one redis-server against the same keys in a local Redis Cluster,
through the production path: a real Celery worker, `review_requests.request_review`, the
`continuity.review_database` task (on the cluster: its chord of one `continuity.review_node`
per primary and the `continuity.finish_cluster_review` callback).

    python -m bench.cluster --keys 1000000 [--repeats 3] [--primaries 3] [--json out.json]

It starts its own servers on loopback (`dashboard.devtools.localservers`): a throwaway Postgres (the
run rows and Celery's result backend), a redis-server for the broker and the cache, the
monitored single redis-server, and a `LocalRedisCluster` of `--primaries` primaries. Both
monitored sides get the same keyspace: `continuity.demo.lucia_keyspace(N, seed=42)` (the
generator `bench.run` uses), with TTLs under TTL_FLOOR_S raised to it, so that no key expires
during the benchmark and the two reviews can be compared exactly (the policy's findings are
unchanged: the floor is below every namespace's maximum, and keys above a maximum keep their
TTL). Each side's records are the seeded Lucia namespaces with the demo keyspace's expected
types, on a self-hosted record (strategy `scan_script` on both sides).

Per repetition, the sides in turn, each with a freshly started worker:
- (a) single node, `celery worker --concurrency 1`; (b) cluster, `--concurrency <primaries>`;
  (c) unless `--no-sequential`, the cluster again with `--concurrency 1`: its parts one after
  another, so each node's rate is measured with a core for Redis and one for the worker (the
  basis of the projection for N primaries, `projection`);
- the 1-minute load average before it; `CONFIG RESETSTAT` on every monitored node;
- timed from `request_review` to the run's finished state (polled in Postgres every 20 ms;
  the run's own `finished_at - created_at` is reported beside it);
- billed commands from `INFO commandstats` summed over the nodes (free commands and CLIENT
  left out, as `bench.run.billed_calls`) beside the run's `billed_commands`;
- Redis CPU per node (`INFO cpu`) and the worker's CPU (its whole process tree, /proc);
- the counts: keys, foreign keys, findings, per-namespace keys and findings.

Self-contained; not imported by the apps.
"""

import argparse
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
# Below every namespace's maximum TTL (the shortest is 1 h), and longer than a 1M-key run.
TTL_FLOOR_S = 3000
POLL_S = 0.02


def static_keyspace(n, seed=42):
    """`demo.lucia_keyspace(n, seed)` with TTLs under TTL_FLOOR_S raised to it: nothing
    expires while the benchmark runs, and every key keeps its finding."""
    from continuity import demo

    for spec in demo.lucia_keyspace(n, seed=seed):
        if spec.ttl_seconds is not None and spec.ttl_seconds < TTL_FLOOR_S:
            spec = dataclasses.replace(spec, ttl_seconds=TTL_FLOOR_S)
        yield spec


def load_single(client, n, seed=42):
    from continuity import demo

    client.flushall()
    return demo.write_keyspace(client, static_keyspace(n, seed), batch=2000)


def slot_owners(ports):
    """[(first, last, port)] of the cluster, as CLUSTER SLOTS of its first node says."""
    with redis.Redis(port=ports[0]) as node:
        slots = node.execute_command("CLUSTER", "SLOTS")
    return [(int(first), int(last), int(primary[1])) for first, last, primary, *_ in slots]


def load_cluster(ports, n, seed=42):
    """The same keys written straight to the primary that owns each key's slot, one plain
    pipeline per node (quicker than a cluster client's pipeline); {port: keys written}."""
    from redis.crc import key_slot

    from continuity import demo

    owners = slot_owners(ports)
    by_slot = [0] * 16384
    for first, last, port in owners:
        for slot in range(first, last + 1):
            by_slot[slot] = port
    clients = {port: redis.Redis(port=port) for port in ports}
    try:
        for client in clients.values():
            client.flushall()
        pending = {port: [] for port in ports}
        written = dict.fromkeys(ports, 0)
        for spec in static_keyspace(n, seed):
            port = by_slot[key_slot(spec.key)]
            pending[port].append(spec)
            if len(pending[port]) == 2000:
                written[port] += demo.write_keyspace(clients[port], pending[port], batch=2000)
                pending[port] = []
        for port, specs in pending.items():
            written[port] += demo.write_keyspace(clients[port], specs, batch=2000)
    finally:
        for client in clients.values():
            client.close()
    return written


# --- the machine --------------------------------------------------------------------------
def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid):
    """CPU seconds (user + system) of process `pid` and all its descendants, from /proc."""
    children, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


def machine_busy_s():
    """CPU seconds the whole machine spent busy (every core, every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def postmaster_pid(datadir):
    try:
        return int((Path(datadir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def redis_cpu_s(port):
    with redis.Redis(port=port) as node:
        cpu = node.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def billed_on(ports):
    """{port: (billed commands since CONFIG RESETSTAT, {command: calls} of them)} for each
    node (free commands and CLIENT left out, as `bench.run.billed_calls`)."""
    from bench.run import billed_calls, command_calls
    from continuity.billing import FREE

    out = {}
    for port in ports:
        with redis.Redis(port=port) as node:
            calls = {command: n for command, n in command_calls(node).items()
                     if command.split("|")[0] not in FREE | {"client"}}
            out[port] = (billed_calls(node), dict(sorted(calls.items())))
    return out


def reset_stats(ports):
    for port in ports:
        with redis.Redis(port=port) as node:
            node.config_resetstat()


# --- Django, records, workers -------------------------------------------------------------
class Services:
    """Postgres and the broker/cache redis-server of the benchmark, with Django set up on them."""

    def __init__(self, tmp):
        from dashboard.devtools import localservers

        localservers.ensure("postgres", "redis-server")
        self.postgres = localservers.LocalPostgres(os.path.join(tmp, "pg"), localservers.free_port()).start()
        self.postgres_pid = postmaster_pid(os.path.join(tmp, "pg"))
        self.broker = localservers.LocalRedis(os.path.join(tmp, "broker"), localservers.free_port()).start()
        self.env = {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{self.postgres.port}/postgres",
            # REDIS_URL is the default monitored keyspace; the bench's records name their own.
            "REDIS_URL": self.broker.url(0), "CELERY_BROKER_URL": self.broker.url(1), "CACHE_URL": self.broker.url(2),
            "DJANGO_SETTINGS_MODULE": "dashboard.settings", "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY")
            or "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        }
        os.environ.update(self.env)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def stop(self):
        self.broker.stop()
        self.postgres.stop()


def make_record(name, url_env, url):
    """A self-hosted database record `name` (URL in $url_env) with the seeded Lucia
    namespaces and the demo keyspace's expected types."""
    from bench.review_process import TYPES
    from continuity.models import Namespace
    from continuity import seed
    from dashboard.models import RedisDatabase

    os.environ[url_env] = url
    database, _ = RedisDatabase.objects.update_or_create(
        name=name, defaults={"key_prefix": "lucia:", "url_env": url_env, "provider": "self-hosted"})
    seed.seed_namespaces(database)
    for ns_name, kind in TYPES.items():
        Namespace.objects.filter(database=database, name=ns_name).update(expected_type=kind)
    return database


class Worker:
    """`celery -A dashboard worker --concurrency N` as production runs it (prefork pool),
    in its own session so that stopping it stops its pool."""

    def __init__(self, env, concurrency, log_path):
        self.concurrency = concurrency
        command = [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--pool=prefork",
                   f"--concurrency={concurrency}", "--without-mingle", "--without-gossip", "--loglevel=WARNING",
                   f"--hostname=bench{concurrency}-{os.getpid()}@%h"]
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(command, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                                        start_new_session=True, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=60):
        from dashboard.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited ({self.process.returncode}):\n{self.log_tail()}")
            if app.control.ping(timeout=0.5):
                return self
        raise RuntimeError(f"the Celery worker did not answer a ping within {timeout} s:\n{self.log_tail()}")

    def log_tail(self):
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def cpu_s(self):
        return tree_cpu_s(self.process.pid)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# --- one review ---------------------------------------------------------------------------
def counts_of(run):
    """What must be equal between the two sides: keys, foreign keys, findings, and per
    namespace its keys and findings (bytes differ: MEMORY USAGE of a cluster node counts its
    own overhead; TTL histograms move as TTLs run down between the runs)."""
    return {"keys": run.keys_scanned, "foreign": run.foreign_keys, "findings": dict(sorted(run.findings.items())),
            "namespaces": {stat.label: {"keys": stat.keys, "findings": dict(sorted(stat.findings.items()))}
                           for stat in run.namespace_stats.order_by("label")}}


def review_once(database, ports, worker, postgres_pid=None):
    """Request a review of `database` (whose nodes listen on `ports`) and wait for the
    run's end, timed. Returns its figures, with the CPU the machine spent meanwhile: ours
    (Redis, the worker's process tree, Postgres, this process) and everything else's."""
    from continuity.models import ReviewRun
    from continuity.operations import review_requests

    reset_stats(ports)
    cpu_before = {port: redis_cpu_s(port) for port in ports}
    worker_before = worker.cpu_s()
    postgres_before = tree_cpu_s(postgres_pid) if postgres_pid else 0.0
    machine_before, own_before = machine_busy_s(), sum(os.times()[:2])
    started = time.perf_counter()
    run, created = review_requests.request_review(database=database)
    if not created:
        raise RuntimeError(f"a review of {database.name} was already active (run {run.pk})")
    while ReviewRun.objects.filter(pk=run.pk, status__in=ReviewRun.ACTIVE).exists():
        if time.perf_counter() - started > 1800:
            raise RuntimeError(f"review {run.pk} of {database.name} did not end within 30 min")
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    machine_cpu, own_cpu = machine_busy_s() - machine_before, sum(os.times()[:2]) - own_before
    worker_cpu = worker.cpu_s() - worker_before
    postgres_cpu = (tree_cpu_s(postgres_pid) - postgres_before) if postgres_pid else 0.0
    redis_cpu = {port: round(redis_cpu_s(port) - cpu_before[port], 2) for port in ports}
    meters = billed_on(ports)
    meter = sum(total for total, _ in meters.values())
    by_command = {}
    for _, calls in meters.values():
        for command, n in calls.items():
            by_command[command] = by_command.get(command, 0) + n
    run = ReviewRun.objects.get(pk=run.pk)
    if run.status != ReviewRun.SUCCEEDED:
        raise RuntimeError(f"review {run.pk} of {database.name} ended {run.status}: {run.error}")
    nodes, previous_end = [], run.started_at
    for node in run.node_runs.order_by("finished_at"):
        port = int(node.address.rsplit(":", 1)[1])
        seconds = (node.finished_at - run.started_at).total_seconds()
        # With one worker process the parts run one after another: a part's own time is from
        # the previous part's end to its own.
        own = (node.finished_at - previous_end).total_seconds()
        previous_end = node.finished_at
        nodes.append({"address": node.address, "keys": node.keys_scanned, "billed_commands": node.billed_commands,
                      "seconds_from_run_start": round(seconds, 3), "keys_per_s": round(node.keys_scanned / seconds),
                      "seconds_after_previous_part": round(own, 3),
                      "keys_per_s_one_after_another": round(node.keys_scanned / own) if own > 0 else None,
                      "redis_cpu_s": redis_cpu[port], "commandstats_billed": meters[port][0],
                      "commandstats_by_command": meters[port][1]})
    nodes.sort(key=lambda n: n["address"])
    last_node = max((n["seconds_from_run_start"] for n in nodes), default=None)
    return {
        "run": run.pk, "wall_s": round(wall, 3),
        "run_s": round((run.finished_at - run.created_at).total_seconds(), 3),
        "queued_s": round((run.started_at - run.created_at).total_seconds(), 3),
        "merge_s": round((run.finished_at - run.started_at).total_seconds() - last_node, 3) if nodes else None,
        "keys_per_s": round(run.keys_scanned / wall), "billed_commands": run.billed_commands,
        "commandstats_billed": meter, "commandstats_by_command": dict(sorted(by_command.items())),
        # What Redis executed for the run but the run did not count (0 when they agree).
        "uncounted": meter - run.billed_commands, "commands": run.commands, "strategy": run.strategy,
        "redis_cpu_s": round(sum(redis_cpu.values()), 2), "worker_cpu_s": round(worker_cpu, 2),
        "postgres_cpu_s": round(postgres_cpu, 2), "bench_cpu_s": round(own_cpu, 2),
        "machine_cpu_s": round(machine_cpu, 2),
        # Cores kept busy by everything else on the machine meanwhile (other people's work).
        "others_cores": round(max(0.0, machine_cpu - sum(redis_cpu.values()) - worker_cpu - postgres_cpu
                                  - own_cpu) / wall, 2),
        "nodes": nodes, "counts": counts_of(run),
    }


def _side(runs, keys, primaries, sequential=False):
    """The medians of one side's repetitions (`sequential`: the parts ran one after another)."""
    wall = statistics.median(r["wall_s"] for r in runs)
    out = {"wall_s_median": round(wall, 3), "run_s_median": round(statistics.median(r["run_s"] for r in runs), 3),
           "keys_per_s": round(keys / wall), "keys_per_s_per_primary": round(keys / wall / primaries),
           "billed_commands": runs[0]["billed_commands"], "commandstats_billed": runs[0]["commandstats_billed"],
           "billed_per_key": round(runs[0]["commandstats_billed"] / keys, 4),
           "billed_agrees_every_run": all(r["billed_commands"] == r["commandstats_billed"] for r in runs),
           "uncounted": [r["uncounted"] for r in runs],
           "redis_cpu_s_median": round(statistics.median(r["redis_cpu_s"] for r in runs), 2),
           "worker_cpu_s_median": round(statistics.median(r["worker_cpu_s"] for r in runs), 2),
           "cores_busy_median": round(statistics.median((r["redis_cpu_s"] + r["worker_cpu_s"]) / r["wall_s"]
                                                        for r in runs), 2),
           "machine_cores_busy_median": round(statistics.median(r["machine_cpu_s"] / r["wall_s"] for r in runs), 2),
           "others_cores_median": round(statistics.median(r["others_cores"] for r in runs), 2),
           "runs": runs}
    if runs[0]["nodes"]:
        out["merge_s_median"] = round(statistics.median(r["merge_s"] for r in runs), 3)
        out["queued_s_median"] = round(statistics.median(r["queued_s"] for r in runs), 3)
        rate = "keys_per_s_one_after_another" if sequential else "keys_per_s"
        out["per_node_keys_per_s_median"] = {
            node["address"]: round(statistics.median(r["nodes"][i][rate] for r in runs))
            for i, node in enumerate(runs[0]["nodes"])}
    else:
        out["queued_s_median"] = round(statistics.median(r["queued_s"] for r in runs), 3)
    return out


def project(*, node_rate, overhead_s, keys, primaries):
    """Projected wall time of a review of `keys` keys spread evenly over `primaries`
    primaries: every primary read at once at `node_rate` keys/s (one worker process and
    enough cores per primary), plus a fixed `overhead_s` (queueing, fan-out, merge)."""
    return overhead_s + keys / primaries / node_rate


def projection(report, sizes=(1_000_000, 10_000_000), primaries=(1, 3, 6, 12)):
    """The table of docs/benchmarks.md. Per-node rate: a cluster node's, measured with the
    parts read one after another (one worker process: Redis and the worker each had a core),
    or, without that side, the single node's; overhead: the parallel cluster runs' median
    queueing + merge time (the single node's queueing for N = 1)."""
    node_rate = report.get("cluster_sequential", report["single"])["node_rate"]
    overhead = report["cluster"]["queued_s_median"] + report["cluster"]["merge_s_median"]
    alone = report["single"]["queued_s_median"]
    return {"node_rate_keys_per_s": round(node_rate), "overhead_s": round(overhead, 3),
            "basis": "cluster_sequential" if "cluster_sequential" in report else "single",
            "wall_s": {str(keys): {str(n): round(project(node_rate=node_rate, overhead_s=overhead if n > 1 else alone,
                                                         keys=keys, primaries=n), 2)
                                   for n in primaries} for keys in sizes}}


def run_cluster_bench(keys, *, repeats=3, primaries=3, sequential=True, log=print):
    """Load `keys` keys into a single redis-server and a `primaries`-primary cluster, review
    each `repeats` times through a real worker (1 process for the single node, `primaries`
    for the cluster, and with `sequential` the cluster again with 1 process: its parts one
    after another, the per-node rate of a cluster node); returns the JSON-ready report."""
    from dashboard.devtools import localservers

    tmp = tempfile.mkdtemp(prefix="bench-cluster-")
    os.chmod(tmp, 0o755)
    services = single_server = cluster = worker = None
    try:
        services = Services(tmp)
        single_server = localservers.LocalRedis(os.path.join(tmp, "single"), localservers.free_port()).start()
        cluster = localservers.LocalRedisCluster(os.path.join(tmp, "cluster"), size=primaries).start()
        single = make_record("bench-single", "BENCH_SINGLE_URL", single_server.url(0))
        clustered = make_record("bench-cluster", "BENCH_CLUSTER_URL", cluster.url(0))

        log(f"loading {keys:,} keys into a single node and a {primaries}-primary cluster…")
        started = time.perf_counter()
        with redis.Redis(port=single_server.port) as client:
            load_single(client, keys)
        single_load_s = time.perf_counter() - started
        started = time.perf_counter()
        per_node = load_cluster(cluster.ports, keys)
        cluster_load_s = time.perf_counter() - started
        with redis.Redis(port=single_server.port) as client:
            single_size = client.dbsize()
        cluster_sizes = {}
        for port in cluster.ports:
            with redis.Redis(port=port) as node:
                cluster_sizes[port] = node.dbsize()
        if single_size != keys or sum(cluster_sizes.values()) != keys or cluster_sizes != per_node:
            raise RuntimeError(f"loaded {single_size:,} and {sum(cluster_sizes.values()):,} keys, not {keys:,}")

        sides = {"single": (single, [single_server.port], 1), "cluster": (clustered, cluster.ports, primaries)}
        if sequential:
            sides["cluster_sequential"] = (clustered, cluster.ports, 1)
        runs = {name: [] for name in sides}
        for i in range(repeats):
            for name, (database, ports, concurrency) in sides.items():
                worker = Worker(services.env | {"BENCH_SINGLE_URL": single_server.url(0),
                                                "BENCH_CLUSTER_URL": cluster.url(0)},
                                concurrency, os.path.join(tmp, "worker.log")).wait_ready()
                time.sleep(1)  # the pool's children settle
                before = load_average()
                figures = review_once(database, ports, worker, services.postgres_pid)
                figures["load_1m_before"] = before
                worker.stop()
                worker = None
                runs[name].append(figures)
                log(f"  {i + 1}/{repeats} {name}: {figures['wall_s']:.2f} s (load {before}), "
                    f"billed {figures['billed_commands']:,} / commandstats {figures['commandstats_billed']:,}")

        report = {
            "keys": keys, "primaries": primaries, "repeats": repeats, "cores": os.cpu_count(),
            "ttl_floor_s": TTL_FLOOR_S, "workers": {name: side[2] for name, side in sides.items()},
            "load_s": {"single": round(single_load_s, 1), "cluster": round(cluster_load_s, 1)},
            "keys_per_node": sorted(cluster_sizes.values()), "load_1m_before": {
                name: [r["load_1m_before"] for r in side] for name, side in runs.items()},
            **{name: _side(runs[name], keys, 1 if name == "single" else primaries,
                           sequential=name == "cluster_sequential") for name in sides},
        }
        report["ratio"] = round(report["single"]["wall_s_median"] / report["cluster"]["wall_s_median"], 2)
        counts = [r["counts"] for side in runs.values() for r in side]
        report["counts"] = counts[0]
        report["exact"] = all(c == counts[0] for c in counts) and counts[0]["keys"] == keys
        report["billed_agrees"] = all(report[name]["billed_agrees_every_run"] for name in sides)
        # Per-node rates, from the run's start to its last node's end (queueing and merge left
        # out), where Redis and the one worker process each had a core: the single node's, and
        # a cluster node's (its parts one after another).
        report["single"]["node_rate"] = keys / statistics.median(r["run_s"] - r["queued_s"] for r in runs["single"])
        if sequential:
            report["cluster_sequential"]["node_rate"] = keys / statistics.median(
                r["run_s"] - r["queued_s"] - r["merge_s"] for r in runs["cluster_sequential"])
        report["projection"] = projection(report)
        report["load_1m_at_end"] = load_average()
        return report
    finally:
        if worker:
            worker.stop()
        if cluster:
            cluster.stop()
        if single_server:
            single_server.stop()
        if services:
            services.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the `finally` that stops the servers
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--primaries", type=int, default=3)
    parser.add_argument("--no-sequential", action="store_true",
                        help="skip the cluster reviewed by one worker process (the per-node rate)")
    parser.add_argument("--json", help="Also write the report to this file.")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    report = run_cluster_bench(args.keys, repeats=args.repeats, primaries=args.primaries,
                               sequential=not args.no_sequential,
                               log=lambda line: print(line, file=sys.stderr, flush=True))
    from bench.run import write_report

    write_report(report, args.json)


if __name__ == "__main__":
    main()
