"""Prefix purge on a local 3-primary Redis Cluster: execution time of `execute_purge`.

    python -m bench.cluster_purge --keys 100000 --repeats 3

Starts its own cluster (`dashboard.devtools.localservers.LocalRedisCluster`, three cluster-enabled
redis-servers on loopback, no replicas) and, without `BENCH_DATABASE_URL`, a throwaway
Postgres (as `bench.purge`). Each repetition writes `--keys` keys `lucia:session:<i>`
without a TTL through a cluster client (they spread over the three primaries), previews
and confirms a prefix delete of `lucia:session:` with the default settings (batch size,
rate cap), then times `execute_purge` alone. Reports each run's seconds, keys deleted,
the requests written to the nodes (round trips: a single command or a whole pipeline each),
the commands the run billed against the primaries' `INFO commandstats` delta, the
1-minute load average before it, and the median. Self-contained; not imported by the apps.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

PREFIX = b"lucia:session:"


def _stats(ports):
    import redis

    out = {}
    for port in ports:
        with redis.Redis(port=port) as node:
            out[port] = node.info("commandstats")
    return out


def _billed(before, after):
    free = ("info", "config", "ping", "auth", "hello", "select", "command", "client")
    total = 0
    for port, stats in after.items():
        for name, row in stats.items():
            command = name.removeprefix("cmdstat_")
            if command.split("|")[0] not in free:
                total += row["calls"] - before[port].get(name, {}).get("calls", 0)
    return total


def _round_trips(ports):
    """Count the requests written to the cluster's nodes (a single command or a whole
    pipeline: one write each, one round trip each) until the returned function is called,
    which stops counting and returns the count."""
    from redis.connection import AbstractConnection

    original, ports, count = AbstractConnection.send_packed_command, set(ports), [0]

    def send_packed_command(self, command, check_health=True):
        if getattr(self, "port", None) in ports:
            count[0] += 1
        return original(self, command, check_health)

    AbstractConnection.send_packed_command = send_packed_command

    def stop():
        AbstractConnection.send_packed_command = original
        return count[0]

    return stop


def run(n_keys, repeats):
    import redis

    from bench.purge import _django, _records
    from dashboard.devtools import localservers

    tmp = tempfile.mkdtemp(prefix="bench-cluster-purge-")
    cluster = localservers.LocalRedisCluster(tmp).start()
    cleanup = _django(cluster.url(0))
    runs = []
    try:
        from continuity.operations import purge

        database, user = _records()
        client = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        for _ in range(repeats):
            keys = [PREFIX + str(i).encode() for i in range(n_keys)]
            for start in range(0, n_keys, 10_000):
                client.mset_nonatomic(dict.fromkeys(keys[start:start + 10_000], b"v"))
            preview = purge.preview_purge(action="delete", database=database, kind="prefix", value=PREFIX, actor=user)
            confirmed = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value,
                                            reason="benchmark", actor=user, source="cli")
            for port in cluster.ports:  # each primary loads the script once per run, as in production
                with redis.Redis(port=port) as node:
                    node.script_flush()
            load = os.getloadavg()[0]
            before = _stats(cluster.ports)
            trips = _round_trips(cluster.ports)
            started = time.perf_counter()
            try:
                result = purge.execute_purge(run_id=confirmed.pk, source="cli")
            finally:
                seconds = time.perf_counter() - started
                trips = trips()
            after = _stats(cluster.ports)
            left = sum(1 for port in cluster.ports for _ in redis.Redis(port=port).scan_iter(match="lucia:session:*"))
            confirmed.refresh_from_db()
            runs.append({"seconds": round(seconds, 3), "status": result.status, "deleted": result.done,
                         "left_behind": left, "batch_size": confirmed.batch_size, "round_trips": trips,
                         "script_calls": confirmed.batches, "billed_by_run": confirmed.billed_commands,
                         "commandstats_delta": _billed(before, after), "load_1m_before": round(load, 2)})
        client.close()
    finally:
        if cleanup:
            cleanup()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"keys": n_keys, "runs": runs, "median_seconds": statistics.median(r["seconds"] for r in runs),
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(json.dumps(run(args.keys, args.repeats), indent=2))


if __name__ == "__main__":
    main()
