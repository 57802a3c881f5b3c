"""Jobs over a slow link: the review, the preview and the purge through the delay proxy
(`bench.proxy`) at a set round trip, against their floor and against `redis-cli`.

    python -m bench.latency                              # 100k keys, TCP, RTT 0, 5, 20, 80 ms (≈ 12 min)
    python -m bench.latency --keys 20000 --rtts 0 20 --cap 10      # a quick look (≈ 1 min)
    python -m bench.latency --transport rest             # once the REST transport is on main

It starts its own redis-server and Postgres on loopback, the proxy in front of the
redis-server, and a `bench` database record whose URL points at the proxy. For each round
trip it loads `continuity.demo.lucia_keyspace(N, seed=42)` directly (not through the proxy)
and measures, each side counted by the proxy (round trips, connections):

- the floor: one round trip per page of `SCAN COUNT 1000` over the whole keyspace (the pages
  are counted on this keyspace);
- `review_upstash`: `manage.py ttl_review --database bench --json` in a new process, the
  record's provider Upstash (the seeded plan: SCAN from the client, the metadata script over
  the batch's declared keys); `review_self_hosted`: the same with provider self-hosted (SCAN
  inside the script). The time is the run's own `duration_s` (the process's start-up, Django
  and imports, is not the job's);
- `sampled_review`: `ttl_review --sample 2000 --json` (Upstash plan): its round trips;
- `preview`: `preview_purge` of the prefix `lucia:session:` in this process (a new client:
  connection and script loading included), timed;
- `purge`: the same target estimated, confirmed and executed as `manage.py purge --yes` does
  (`estimate_purge`, `confirm_purge`, `execute_purge`), execution timed;
- `memkeys`: `redis-cli --memkeys` and `scan_xargs`: `redis-cli --scan --pattern 'lucia:session:*'
  | xargs -n 1000 redis-cli unlink`, both through the proxy, each stopped after `--cap` seconds
  ("did not finish in N s").

`--transport rest` measures the same jobs over the REST transport (the proxy in front of the
local REST endpoint's HTTP port): see `_rest_transport`, the hook it needs. Not imported by the apps.
"""

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.proxy import DelayProxy

ROOT = Path(__file__).resolve().parent.parent
PREFIX = b"lucia:session:"
FLOOR_COUNT = 1000  # the floor's SCAN COUNT


class TransportMissing(SystemExit):
    """The transport asked for is not in this tree."""


def _rest_transport(server):
    """The REST transport's hook: start the local REST endpoint (issue 17, item 2) in front of
    `server` and return (the HTTP port the proxy forwards to, {environment variable: value}
    the `bench` record reads: its REST URL pointing at the proxy's port, its token), and the
    record's field names for them. Not wired yet: the REST transport is built on its own branch."""
    if importlib.util.find_spec("continuity.keyspace.rest") is None:
        raise TransportMissing("REST transport not available yet: this tree has no continuity.keyspace.rest. "
                               "Measure --transport tcp, or run this once the REST transport is on main.")
    raise TransportMissing("REST transport present, but bench.latency._rest_transport is not wired to its local "
                           "endpoint yet: fill in this hook (start the endpoint, point the record's REST URL at "
                           "the proxy).")


def floor_pages(client):
    """Pages of SCAN COUNT 1000 over the whole keyspace (the floor: one round trip each)."""
    cursor, pages = 0, 0
    while True:
        cursor, _keys = client.scan(cursor=cursor, count=FLOOR_COUNT)
        pages += 1
        if cursor == 0:
            return pages


def _load(client, n):
    from continuity import demo

    client.flushdb()
    demo.write_keyspace(client, demo.lucia_keyspace(n, seed=42), batch=2000)


def _capped(command, cap, env=None):
    """(seconds, finished) of a shell command stopped after `cap` seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(["sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env=env)
    try:
        process.wait(timeout=cap)
        return round(time.perf_counter() - started, 3), process.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return cap, False


def _measured(proxy, seconds, seen, **more):
    counts = seen.counts
    return {"seconds": None if seconds is None else round(seconds, 3), "round_trips": counts.round_trips,
            "connections": counts.connections, **more}


class Bench:
    """One redis-server, the proxy in front of it, Django on a throwaway Postgres."""

    def __init__(self, transport, cap, log):
        from dashboard.devtools import localservers

        self.cap, self.log = cap, log
        localservers.ensure("redis-server")
        self.tmp = tempfile.mkdtemp(prefix="bench-latency-")
        self.server = localservers.LocalRedis(os.path.join(self.tmp, "redis"), localservers.free_port()).start()
        self.direct = redis.Redis.from_url(self.server.url(0))
        if transport == "rest":
            port, env = _rest_transport(self.server)
        else:
            port, env = self.server.port, {}
        self.proxy = DelayProxy(port).start()
        self.url = f"redis://127.0.0.1:{self.proxy.port}/0"
        from bench import purge as purge_bench

        self.cleanup = purge_bench._django(self.url)
        os.environ.update(env)
        self.database, self.user = purge_bench._records()

    def close(self):
        self.proxy.stop()
        self.direct.close()
        self.server.stop()
        if self.cleanup:
            self.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _env(self):
        from django.db import connection

        db = connection.settings_dict
        return {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_REDIS_URL": self.url,
                "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
                "CELERY_BROKER_URL": self.server.url(14), "CACHE_URL": self.server.url(15), "DJANGO_DEBUG": "0"}

    def review(self, provider, sample=None):
        """`manage.py ttl_review --json` in a new process: its duration_s and round trips."""
        from dashboard.models import RedisDatabase

        RedisDatabase.objects.filter(pk=self.database.pk).update(provider=provider)
        command = [sys.executable, str(ROOT / "manage.py"), "ttl_review", "--database", "bench", "--json"]
        if sample:
            command += ["--sample", str(sample)]
        with self.proxy.measure() as seen:
            started = time.perf_counter()
            done = subprocess.run(command, env=self._env(), cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"ttl_review failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout)
        return _measured(self.proxy, result["duration_s"], seen, process_s=round(wall, 3), strategy=result["strategy"],
                         keys=result["keys_scanned"], billed=result["billed_commands"], requests=result["commands"])

    def preview(self):
        from continuity import keyspace
        from continuity.operations import purge

        keyspace.forget_clients()
        with self.proxy.measure() as seen:
            started = time.perf_counter()
            preview = purge.preview_purge(database=self.database, kind="prefix", value=PREFIX, actor=self.user)
            seconds = time.perf_counter() - started
        return _measured(self.proxy, seconds, seen, matched=preview.matched, billed=preview.billed)

    def purge(self):
        from continuity import keyspace
        from continuity.operations import purge

        keyspace.forget_clients()
        with self.proxy.measure() as seen:
            run = purge.estimate_purge(database=self.database, kind="prefix", value=PREFIX, actor=self.user)
            run = purge.confirm_purge(run=run, confirmation=run.target_value, reason="benchmark", actor=self.user,
                                      source="cli")
            started = time.perf_counter()
            result = purge.execute_purge(run_id=run.pk, source="cli")
            seconds = time.perf_counter() - started
        run.refresh_from_db()
        return _measured(self.proxy, seconds, seen, done=result.done, billed=run.billed_commands,
                         batch=run.batch_size)

    def baselines(self):
        cli = f"redis-cli -h 127.0.0.1 -p {self.proxy.port}"
        memkeys_s, memkeys_done = _capped(f"{cli} --memkeys", self.cap)
        before = self.direct.dbsize()
        with self.proxy.measure() as seen:
            xargs_s, xargs_done = _capped(f"{cli} --scan --pattern 'lucia:session:*' | xargs -n 1000 {cli} unlink",
                                          self.cap)
        return ({"seconds": memkeys_s, "finished": memkeys_done},
                {"seconds": xargs_s, "finished": xargs_done, "deleted": before - self.direct.dbsize(),
                 "round_trips": seen.counts.round_trips})

    def row(self, keys, rtt):
        """Every measurement at one round trip (`rtt` ms), on a freshly loaded keyspace."""
        self.proxy.rtt_ms = 0
        _load(self.direct, keys)
        pages = floor_pages(self.direct)
        self.proxy.rtt_ms = rtt
        row = {"rtt_ms": rtt, "keys": self.direct.dbsize(), "floor_pages": pages, "floor_s": round(pages * rtt / 1000, 3)}
        self.log(f"  RTT {rtt} ms: {row['keys']:,} keys, floor {pages} pages = {row['floor_s']} s")
        row["review_upstash"] = self.review("Upstash")
        row["review_self_hosted"] = self.review("self-hosted")
        row["sampled_review"] = self.review("Upstash", sample=2000)
        row["preview"] = self.preview()
        row["purge"] = self.purge()
        _load(self.direct, keys)
        row["memkeys"], row["scan_xargs"] = self.baselines()
        for name in ("review_upstash", "review_self_hosted", "preview", "purge"):
            entry = row[name]
            entry["vs_floor"] = round(entry["seconds"] / row["floor_s"], 2) if row["floor_s"] else None
            self.log(f"    {name}: {entry['seconds']} s, {entry['round_trips']} round trips"
                     + (f", {entry['vs_floor']}x the floor" if entry["vs_floor"] else ""))
        self.log(f"    sampled review: {row['sampled_review']['round_trips']} round trips; memkeys "
                 f"{row['memkeys']['seconds']} s{'' if row['memkeys']['finished'] else ' (did not finish)'}; "
                 f"scan|xargs {row['scan_xargs']['seconds']} s"
                 f"{'' if row['scan_xargs']['finished'] else ' (did not finish)'}")
        return row


def run_latency(*, keys=100_000, rtts=(0, 5, 20, 80), transport="tcp", cap=60, log=print):
    bench = Bench(transport, cap, log)
    report = {"transport": transport, "keys": keys, "cap_s": cap, "load_1m_at_start": os.getloadavg()[0], "rows": []}
    try:
        for rtt in rtts:
            report["rows"].append(bench.row(keys, rtt))
    finally:
        bench.close()
    report["load_1m_at_end"] = os.getloadavg()[0]
    return report


def table(report):
    """The Markdown rows of docs/benchmarks.md for `report`."""
    def cell(entry, floor=True):
        if entry.get("finished") is False:
            return f"did not finish in {entry['seconds']:g} s"
        text = f"{entry['seconds']:.2f} s"
        if "round_trips" in entry:
            text += f", {entry['round_trips']} RT"
        if floor and entry.get("vs_floor"):
            text += f" ({entry['vs_floor']}×)"
        return text

    lines = []
    for row in report["rows"]:
        lines.append(f"| {report['transport'].upper()} | {row['rtt_ms']} ms | {row['floor_s']:.2f} s ({row['floor_pages']} RT) "
                     f"| {cell(row['review_upstash'])} | {cell(row['review_self_hosted'])} "
                     f"| {row['sampled_review']['round_trips']} RT | {cell(row['preview'])} | {cell(row['purge'])} "
                     f"| {cell(row['memkeys'], False)} | {cell(row['scan_xargs'], False)} |")
    return "\n".join(lines)


def main(argv=None):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rtts", type=float, nargs="+", default=[0, 5, 20, 80])
    parser.add_argument("--transport", choices=["tcp", "rest"], default="tcp")
    parser.add_argument("--cap", type=float, default=60, help="seconds before a redis-cli baseline is stopped")
    parser.add_argument("--json", help="Also write the report to this file.")
    args = parser.parse_args(argv)
    rtts = [int(r) if float(r).is_integer() else r for r in args.rtts]
    report = run_latency(keys=args.keys, rtts=rtts, transport=args.transport, cap=args.cap,
                         log=lambda line: print(line, file=sys.stderr, flush=True))
    from bench.run import write_report

    write_report(report, args.json)
    print(table(report), file=sys.stderr)


if __name__ == "__main__":
    main()
