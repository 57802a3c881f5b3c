"""Run one TTL review in this process and print its figures as JSON (the benchmark starts
it as a subprocess so its peak RSS is the review's alone).

    python -m bench.review_process --url redis://127.0.0.1:PORT/0 [--batch 1000]

Persistence is off: no Postgres needed. The namespaces are the seeded Lucia ones, built
in memory, with the expected types of `continuity.demo`'s keyspace."""

import argparse
import json
import os
import sys
import time


def peak_rss_kb():
    """This process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries that across exec,
    so a child of a large parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


TYPES = {"session": "string", "distress": "hash", "focus": "string", "action": "string", "rate": "string"}


def namespaces(database, typed=True):
    """The seeded Lucia namespaces; `typed` adds the demo keyspace's expected types (the
    seed leaves them blank: the runbook does not say them)."""
    from continuity.models import Namespace
    from continuity.seed import MAX_PAYLOAD_BYTES, NAMESPACES

    return [Namespace(database=database, name=spec["name"], prefix=f"{database.key_prefix}{spec['name']}:",
                      ttl_required=True, max_ttl_seconds=spec["max_ttl_seconds"], max_payload_bytes=MAX_PAYLOAD_BYTES,
                      expected_type=TYPES[spec["name"]] if typed else "") for spec in NAMESPACES]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--provider", default="self-hosted", help="the database record's provider (Upstash: billed plan)")
    parser.add_argument("--untyped", action="store_true", help="the seeded policies as they are: no expected types")
    args = parser.parse_args(argv)
    os.environ["BENCH_REDIS_URL"] = args.url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
    import django

    django.setup()
    from continuity.operations import review
    from dashboard.models import RedisDatabase

    database = RedisDatabase(name="bench", key_prefix="lucia:", url_env="BENCH_REDIS_URL", provider=args.provider)
    rss_before = peak_rss_kb()
    cpu_before = time.process_time()
    started = time.perf_counter()
    result = review.review_database(database=database, persist=False,
                                    namespaces=namespaces(database, typed=not args.untyped), batch=args.batch)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    json.dump({"keys": result.keys_scanned, "foreign": result.foreign_keys, "findings": result.findings,
               "commands": result.commands, "billed_commands": result.billed_commands, "strategy": result.strategy,
               "seconds": wall, "cpu_s": cpu,
               "rss_before_review_kb": rss_before,
               "peak_rss_kb": peak_rss_kb()}, sys.stdout)


if __name__ == "__main__":
    main()
