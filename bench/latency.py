"""Jobs over a slow link: the review, the preview and the purge through the delay proxy
(`bench.proxy`) at a set round trip, against their floor and against `redis-cli`.

    python -m bench.latency                              # 100k keys, TCP, RTT 0, 5, 20, 80 ms (≈ 12 min)
    python -m bench.latency --keys 20000 --rtts 0 20 --cap 10      # a quick look (≈ 1 min)
    python -m bench.latency --transport rest             # the same jobs over the REST transport

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

`--transport rest` measures the same jobs over the REST transport: the local REST endpoint
(`dashboard.devtools.restbridge`, in a process of its own) in front of the redis-server, the
proxy in front of its HTTP port, and the `bench` record's URL variable empty, its REST URL and
token variables naming the proxy. A round trip is then an HTTP request (on kept-alive
connections: `connections` counts the TCP connections opened, one per client connection).
The `redis-cli` baselines speak RESP only: they are measured with `--transport tcp`. Not
imported by the apps.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
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


REST_TOKEN = "bench-rest-token"  # the bridge's one token (loopback only)


class RestEndpoint:
    """The local REST endpoint (`dashboard.devtools.restbridge`, a protocol bridge standing in
    for Upstash) in front of `server`'s db 0, in a process of its own: its JSON and base64
    work is the far side's, so it must not take the GIL from the client it serves (the
    preview and the purge run in this process). HTTP/1.1 with kept-alive connections."""

    def __init__(self, server):
        from dashboard.devtools import localservers

        self.port = localservers.free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dashboard.devtools.restbridge", "--redis", server.url(0), "--port", str(self.port)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "RESTBRIDGE_TOKEN": REST_TOKEN}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        localservers._wait(self._answers, "the REST bridge")

    def _answers(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"the REST bridge exited ({self.process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True
        return False

    def stop(self):
        from dashboard.devtools import localservers

        localservers.stop_process(self.process)


def _rest_transport(server):
    """The REST side: the local REST endpoint in front of `server`, and the port the proxy
    forwards to (its HTTP port). The `bench` record then reaches the proxy by REST only
    (`Bench.records`: its Redis URL variable empty, its REST URL and token variables set)."""
    endpoint = RestEndpoint(server)
    return endpoint, endpoint.port


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
        self.transport, self.endpoint = transport, None
        if transport == "rest":
            self.endpoint, port = _rest_transport(self.server)
        else:
            port = self.server.port
        self.proxy = DelayProxy(port).start()
        # Over REST the record's Redis URL variable is empty: its REST pair names the proxy.
        self.url = f"redis://127.0.0.1:{self.proxy.port}/0" if transport == "tcp" else ""
        self.rest = {"BENCH_REST_URL": f"http://127.0.0.1:{self.proxy.port}",
                     "BENCH_REST_TOKEN": REST_TOKEN} if transport == "rest" else {}
        from bench import purge as purge_bench

        self.cleanup = purge_bench._django(self.url)
        os.environ.update(self.rest)
        self.database, self.user = purge_bench._records()
        from dashboard.models import RedisDatabase

        fields = {"rest_url_env": "BENCH_REST_URL", "rest_token_env": "BENCH_REST_TOKEN"} if self.rest else \
            {"rest_url_env": "", "rest_token_env": ""}
        RedisDatabase.objects.filter(pk=self.database.pk).update(**fields)
        self.database.refresh_from_db()

    def close(self):
        self.proxy.stop()
        if self.endpoint is not None:
            self.endpoint.stop()
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
            preview = purge.preview_purge(database=self.database, kind="prefix", value=PREFIX, action="delete",
                                          actor=self.user)
            seconds = time.perf_counter() - started
        return _measured(self.proxy, seconds, seen, matched=preview.matched, billed=preview.billed)

    def purge(self):
        from continuity import keyspace
        from continuity.operations import purge

        keyspace.forget_clients()
        with self.proxy.measure() as seen:
            run = purge.estimate_purge(database=self.database, kind="prefix", value=PREFIX, action="delete",
                                         actor=self.user)
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
        if self.transport == "tcp":  # redis-cli speaks RESP only: the baselines are the TCP rows'
            _load(self.direct, keys)
            row["memkeys"], row["scan_xargs"] = self.baselines()
        for name in ("review_upstash", "review_self_hosted", "preview", "purge"):
            entry = row[name]
            entry["vs_floor"] = round(entry["seconds"] / row["floor_s"], 2) if row["floor_s"] else None
            self.log(f"    {name}: {entry['seconds']} s, {entry['round_trips']} round trips"
                     + (f", {entry['vs_floor']}x the floor" if entry["vs_floor"] else ""))
        self.log(f"    sampled review: {row['sampled_review']['round_trips']} round trips, "
                 f"{row['sampled_review']['connections']} connections")
        if "memkeys" in row:
            self.log(f"    memkeys {row['memkeys']['seconds']} s{'' if row['memkeys']['finished'] else ' (did not finish)'}; "
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
        if entry is None:
            return "(TCP only)"  # redis-cli speaks RESP only
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
                     f"| {cell(row.get('memkeys'), False)} | {cell(row.get('scan_xargs'), False)} |")
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
