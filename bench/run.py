"""The benchmark harness: TTL review speed, Redis command cost, review memory, and
key-browser page time, against baselines on the same data and the same redis-server.

    python -m bench.run                      # 100k and 1M keys, 3 repetitions, the purge and the cluster review at 1M (≈ 14 min)
    python -m bench.run --sizes 20000 --repeats 1 --browse-pages 10   # smoke
    python -m bench.run --json bench/results/latest.json

It reports, in one run: review speed against `redis-cli --memkeys`, billed commands per key
and p99 script-call time per plan, and (`--purge-keys`) the end-to-end purge against the
`redis-cli --scan | xargs unlink` pipeline (`bench.purge`), and (`--cluster-keys`) the review of
a 3-primary Redis Cluster on Celery workers against a single node holding the same keys
(`bench.cluster`).

It starts its own redis-server (`dashboard.devtools.localservers.LocalRedis`) on a free loopback
port, loads `continuity.demo.lucia_keyspace(N)`, and for each N measures:
- the review (a subprocess running `bench.review_process`, persistence off): keys/s,
  Redis commands per 1,000 keys (from `INFO commandstats`), peak RSS;
- `redis-cli --memkeys` on the same keyspace: keys/s (the baseline, default settings);
- on the largest N, a key-browser page: SCAN MATCH 'lucia:session:*' until 100 keys,
  then their metadata in one `key_metadata` call; median and p95 server time.
Not imported by the apps.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


def write_report(report, path=None):
    """Print `report` as JSON, and also write it to `path` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "redis": version, "kernel": platform.release()}


CLIENT_LEVEL = ("evalsha_ro", "eval_ro", "evalsha", "eval", "script|load", "dbsize")  # never called from inside a script
INSIDE_SCRIPT = ("scan", "pttl", "type", "memory|usage")  # on the Lua path, only inside scripts


def command_calls(client):
    """({command: calls}) from INFO commandstats, without our own INFO/CONFIG."""
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
            if k.removeprefix("cmdstat_") not in ("info", "config|resetstat", "config")}


def command_usec(client):
    """({command: total µs}) from INFO commandstats: where Redis spent its time."""
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["usec"] for k, v in stats.items()
            if k.removeprefix("cmdstat_") not in ("info", "config|resetstat", "config")}


def redis_cpu_s(client):
    """Redis's own CPU time so far (user + system, all its threads)."""
    cpu = client.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def load(client, n):
    from continuity import demo

    client.flushall()
    started = time.perf_counter()
    demo.write_keyspace(client, demo.lucia_keyspace(n, seed=42), batch=2000)
    return time.perf_counter() - started


def run_review(url, batch, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.review_process", "--url", url, "--batch", str(batch), *extra],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise RuntimeError(f"the review process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def billed_calls(client):
    """Every command Redis executed since CONFIG RESETSTAT, free ones left out (the honest
    meter of what Upstash would bill)."""
    from continuity.billing import FREE

    # CLIENT SETNAME: once per new connection, which the engine does not count.
    skip = FREE | {"client"}
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k.removeprefix("cmdstat_").split("|")[0] not in skip)


SCRIPT_COMMANDS = (b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO")
SLOWLOG_FLOOR_US = 1000  # only calls of 1 ms or more are logged (the calls inside scripts are logged too)


def script_call_times(client):
    """[µs] of every script call of at least SLOWLOG_FLOOR_US since SLOWLOG RESET."""
    entries = client.slowlog_get(1_000_000)
    return [e["duration"] for e in entries if (e["command"] or b"").split(b" ", 1)[0].upper() in SCRIPT_COMMANDS]


def upper_percentile(slow, total, q):
    """The q-quantile (e.g. 0.99) of `total` call times of which only those at or above the
    SLOWLOG floor are known (`slow`): exact when it lies among them, else "below the floor"."""
    rank = max(1, int(round((1 - q) * total)))  # the rank-th longest call
    ordered = sorted(slow, reverse=True)
    return ordered[rank - 1] / 1000 if len(ordered) >= rank else f"< {SLOWLOG_FLOOR_US / 1000:g}"


def measure_cost(client, url, batch, n, *extra):
    """One review (`extra`: its plan) with its slow calls logged: billed commands per key
    (engine count and INFO commandstats), and the p99/max time of one script call
    (SLOWLOG, calls of 1 ms or more; the other calls are counted by commandstats). Not
    timed for speed."""
    client.config_set("slowlog-log-slower-than", SLOWLOG_FLOOR_US)
    client.config_set("slowlog-max-len", 100_000)
    client.slowlog_reset()
    client.config_resetstat()
    try:
        figures = run_review(url, batch, *extra)
        meter = billed_calls(client)
        stats = client.info("commandstats")
        scripts = sum(v["calls"] for k, v in stats.items()
                      if k.removeprefix("cmdstat_").upper().encode() in SCRIPT_COMMANDS)
        times = script_call_times(client)
    finally:
        client.config_set("slowlog-log-slower-than", 10000)
        client.config_set("slowlog-max-len", 128)
        client.slowlog_reset()
    return {"strategy": figures["strategy"], "plan": list(extra), "billed_commands": figures["billed_commands"],
            "commandstats_billed": meter, "billed_per_key": round(meter / n, 4), "script_calls": scripts,
            "script_calls_over_1ms": len(times), "script_p99_ms": upper_percentile(times, scripts, 0.99),
            "script_max_ms": round(max(times) / 1000, 2) if times else f"< {SLOWLOG_FLOOR_US / 1000:g}"}


def run_memkeys(port):
    started = time.perf_counter()
    subprocess.run(["redis-cli", "-p", str(port), "--memkeys"], capture_output=True, check=True)
    return time.perf_counter() - started


def browse_pages(url, pages):
    """Server time of `pages` key-browser pages of 100 keys with metadata (seconds each)."""
    os.environ["BENCH_REDIS_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
    import django

    django.setup()
    from continuity import keyspace
    from dashboard.models import RedisDatabase

    database = RedisDatabase(name="bench", key_prefix="lucia:", url_env="BENCH_REDIS_URL")
    match = keyspace.match_pattern(b"lucia:session:")
    timings, cursor = [], 0
    for _ in range(pages):
        started = time.perf_counter()
        keys = []
        while len(keys) < 100:
            cursor, found = keyspace.scan_page(database, match=match, cursor=cursor, count=1000)
            keys.extend(found)
            if cursor == 0:
                break
        meta = keyspace.key_metadata(database, keys[:100])
        timings.append(time.perf_counter() - started)
        assert len(meta) == min(100, len(keys))
    return timings


def load_average():
    """The 1-minute load average (the machine is shared: the report says how loaded it was;
    it includes the benchmark's own processes while they run)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def p95(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def run_purge(url, keys):
    """`bench.purge` in a subprocess on the bench's redis-server (flushed): the end-to-end
    `manage.py purge --yes` against the `redis-cli --scan | xargs unlink` pipeline."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.purge", "--url", url, "--keys", str(keys), "--no-engine"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise RuntimeError(f"the purge benchmark failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def run_cluster(keys, repeats):
    """`bench.cluster` in a subprocess (it sets Django up on a Postgres of its own): the
    review of a single node and of a 3-primary cluster holding the same keys, each through a
    real Celery worker."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "bench.cluster", "--keys", str(keys), "--repeats", str(repeats)],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        raise RuntimeError(f"the cluster benchmark failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def run_benchmark(*, sizes=(100_000, 1_000_000), repeats=3, batch=1000, browse=200, purge_keys=0, cluster_keys=0,
                  log=print):
    """Run everything; returns a JSON-ready dict. `purge_keys`: also the end-to-end purge
    benchmark on a keyspace of that many keys (0: not); `cluster_keys`: also the cluster
    review benchmark on that many keys (0: not)."""
    from dashboard.devtools import localservers

    localservers.ensure("redis-server")
    datadir = tempfile.mkdtemp(prefix="bench-redis-")
    server = localservers.LocalRedis(datadir, localservers.free_port()).start()
    url = server.url(0)
    client = redis.Redis.from_url(url)
    report = {"machine": machine(), "batch": batch, "repeats": repeats, "load_1m_at_start": load_average(),
              "sizes": {}}
    try:
        for n in sizes:
            log(f"loading {n:,} keys…")
            load_s = load(client, n)
            dbsize = client.dbsize()
            used = client.info("memory")["used_memory"]
            reviews, memkeys, loads, memkeys_cpu = [], [], [], []
            for i in range(repeats):
                loads.append(load_average())
                client.config_resetstat()
                cpu_before = redis_cpu_s(client)
                figures = run_review(url, batch, "--provider", "self-hosted")
                figures["redis_cpu_s"] = round(redis_cpu_s(client) - cpu_before, 2)
                figures["commandstats_usec"] = command_usec(client)
                calls = command_calls(client)
                figures["redis_calls"] = sum(calls.get(c, 0) for c in CLIENT_LEVEL)
                figures["calls_inside_scripts"] = sum(calls.get(c, 0) for c in INSIDE_SCRIPT)
                figures["commandstats"] = calls
                reviews.append(figures)
                cpu_before = redis_cpu_s(client)
                memkeys_s = run_memkeys(server.port)
                memkeys.append(memkeys_s)
                memkeys_cpu.append(round(redis_cpu_s(client) - cpu_before, 2))
                log(f"  {n:,}: review {figures['seconds']:.2f}s ({figures['redis_calls']} calls, "
                    f"peak RSS {figures['peak_rss_kb'] / 1024:.1f} MiB), redis-cli --memkeys {memkeys_s:.2f}s")
            review_s = statistics.median(r["seconds"] for r in reviews)
            memkeys_s = statistics.median(memkeys)
            entry = {
                "keys": dbsize, "load_s": round(load_s, 2), "redis_used_memory_mb": round(used / 2**20, 1),
                "review_s_median": round(review_s, 3), "review_keys_per_s": round(dbsize / review_s),
                "memkeys_s_median": round(memkeys_s, 3), "memkeys_keys_per_s": round(dbsize / memkeys_s),
                "speedup_vs_memkeys": round(memkeys_s / review_s, 2),
                "redis_calls_per_review": reviews[0]["redis_calls"],
                "engine_counted_commands": reviews[0]["commands"],
                "commands_per_1000_keys": round(1000 * reviews[0]["redis_calls"] / dbsize, 2),
                "calls_inside_scripts": reviews[0]["calls_inside_scripts"],
                "commandstats": reviews[0]["commandstats"],
                "commandstats_usec_median_run": min(reviews, key=lambda r: abs(r["seconds"] - review_s))["commandstats_usec"],
                "peak_rss_mb_median": round(statistics.median(r["peak_rss_kb"] for r in reviews) / 1024, 1),
                "rss_before_review_mb": round(reviews[0]["rss_before_review_kb"] / 1024, 1),
                "findings": reviews[0]["findings"], "foreign": reviews[0]["foreign"],
                "reviewed_keys": reviews[0]["keys"],
                "runs": {"review_s": [round(r["seconds"], 3) for r in reviews], "memkeys_s": [round(s, 3) for s in memkeys],
                         "load_1m_before": loads, "review_redis_cpu_s": [r["redis_cpu_s"] for r in reviews],
                         "review_process_cpu_s": [round(r["cpu_s"], 2) for r in reviews],
                         "memkeys_redis_cpu_s": memkeys_cpu},
            }
            # Cost on Upstash: the seeded policies as seeded (no expected type), the billed plan;
            # and the self-hosted plan's script time, for the lock budget.
            entry["upstash"] = measure_cost(client, url, batch, dbsize, "--provider", "Upstash", "--untyped")
            entry["self_hosted_cost"] = measure_cost(client, url, batch, dbsize, "--provider", "self-hosted")
            log(f"  {n:,}: Upstash plan {entry['upstash']['billed_per_key']} billed/key "
                f"(p99 script {entry['upstash']['script_p99_ms']} ms); self-hosted plan "
                f"{entry['self_hosted_cost']['billed_per_key']} billed/key "
                f"(p99 script {entry['self_hosted_cost']['script_p99_ms']} ms)")
            report["sizes"][str(n)] = entry
        largest = str(max(sizes))
        if browse:
            log(f"key-browser pages on {int(largest):,} keys…")
            timings = browse_pages(url, browse)
            report["browse"] = {"keyspace": int(largest), "pages": len(timings),
                                "median_ms": round(1000 * statistics.median(timings), 2),
                                "p95_ms": round(1000 * p95(timings), 2)}
        if len(sizes) > 1:
            small, big = report["sizes"][str(min(sizes))], report["sizes"][largest]
            report["rss_growth_mb"] = round(big["peak_rss_mb_median"] - small["peak_rss_mb_median"], 1)
        if purge_keys:
            log(f"purge, end to end, on {purge_keys:,} keys…")
            report["purge"] = run_purge(url, purge_keys)
            log(f"  purge --yes {report['purge'].get('ratio')}x the redis-cli | xargs pipeline")
        if cluster_keys:
            log(f"cluster review on {cluster_keys:,} keys: one node (1 worker process) against 3 primaries (3)…")
            report["cluster"] = run_cluster(cluster_keys, repeats)
            single, on_cluster = report["cluster"]["single"], report["cluster"]["cluster"]
            log(f"  single {single['wall_s_median']:.2f} s, cluster {on_cluster['wall_s_median']:.2f} s: "
                f"{report['cluster']['ratio']}x; counts equal: {report['cluster']['exact']}")
    finally:
        client.close()
        server.stop()
        shutil.rmtree(datadir, ignore_errors=True)
    return report


def main(argv=None):
    import signal

    # SIGTERM runs the `finally` that stops the benchmark's redis-server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--browse-pages", type=int, default=200)
    parser.add_argument("--purge-keys", type=int, default=None,
                        help="keys for the end-to-end purge benchmark (default: the largest size; 0: skip)")
    parser.add_argument("--cluster-keys", type=int, default=None,
                        help="keys for the cluster review benchmark (default: the largest size; 0: skip)")
    parser.add_argument("--json", help="Also write the report to this file.")
    args = parser.parse_args(argv)
    purge_keys = max(args.sizes) if args.purge_keys is None else args.purge_keys
    cluster_keys = max(args.sizes) if args.cluster_keys is None else args.cluster_keys
    report = run_benchmark(sizes=args.sizes, repeats=args.repeats, batch=args.batch, browse=args.browse_pages,
                           purge_keys=purge_keys, cluster_keys=cluster_keys,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    write_report(report, args.json)


if __name__ == "__main__":
    main()
