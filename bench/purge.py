"""Purge throughput: the purge engine against the usual shell pipeline

    redis-cli --scan --pattern 'lucia:session:*' | xargs -n 1000 redis-cli unlink

on the same freshly generated Lucia keyspace (`continuity.demo.lucia_keyspace`) and the
same redis-server. Each side gets its own fresh copy of the data.

    python -m bench.purge --url redis://127.0.0.1:PORT/0 --keys 1000000

Three measurements:
- `baseline`: the pipeline above, process start to exit;
- `cli`: end to end, process start to exit, the command an operator runs:
  `manage.py purge --database bench --prefix lucia:session: --reason bench --yes --json`
  as a subprocess (Django start-up, the instant estimate, the audited confirmation, the
  execution with its Postgres checkpoints and audit entries): `ratio` = baseline / cli;
- `engine`: execution alone, in this process (preview, confirm, then `execute_purge` timed).

Without `BENCH_DATABASE_URL` (or an already configured Django), a throwaway Postgres
cluster is started for it (`dashboard.devtools.localservers.LocalPostgres`). The URL must point at
a scratch database: it is flushed. Self-contained; not imported by the apps.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlsplit

PREFIX = b"lucia:session:"


def _commands(client):
    return sum(v.get("calls", 0) for k, v in client.info("commandstats").items() if k.startswith("cmdstat_"))


def _load(client, n_keys):
    from continuity import demo

    client.flushdb()
    started = time.perf_counter()
    demo.write_keyspace(client, demo.lucia_keyspace(n_keys))
    return time.perf_counter() - started


def _count(client, prefix=PREFIX):
    from continuity.keyspace import match_pattern

    return sum(1 for _ in client.scan_iter(match=match_pattern(prefix), count=5000))


def _baseline(client, url):
    parts = urlsplit(url)
    db = (parts.path or "/0").lstrip("/") or "0"
    cli = f"redis-cli -h {parts.hostname} -p {parts.port} -n {db}"
    pipeline = f"{cli} --scan --pattern 'lucia:session:*' | xargs -n 1000 {cli} unlink > /dev/null"
    # Counted by SCAN before and after, outside the timing: DBSIZE would also count the
    # demo keys with short TTLs that expire meanwhile.
    before_keys, before_cmds = _count(client), _commands(client)
    started = time.perf_counter()
    subprocess.run(["sh", "-c", pipeline], check=True)
    seconds = time.perf_counter() - started
    commands = _commands(client) - before_cmds - 1
    deleted = before_keys - _count(client)
    return {"seconds": round(seconds, 3), "deleted": deleted, "keys_per_s": round(deleted / seconds),
            "commands": commands}


def _django(redis_url):
    """Set Django up (once) with the bench Redis as the `bench` database's URL."""
    os.environ["BENCH_REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
    cleanup = None

    if "DATABASE_URL" not in os.environ:
        if os.environ.get("BENCH_DATABASE_URL"):
            os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
        else:
            from dashboard.devtools import localservers

            localservers.ensure("postgres")
            tmp = tempfile.mkdtemp(prefix="bench-purge-pg-")
            os.chmod(tmp, 0o755)
            server = localservers.LocalPostgres(os.path.join(tmp, "data"), localservers.free_port())
            server.start()
            os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{server.port}/postgres"

            def cleanup():
                server.stop()
                shutil.rmtree(tmp, ignore_errors=True)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return cleanup


def _records():
    """The `bench` database record (URL from $BENCH_REDIS_URL), its namespaces, an operator."""
    from django.contrib.auth import get_user_model

    from continuity import seed
    from continuity.models import Namespace
    from dashboard import roles
    from dashboard.models import RedisDatabase

    roles.ensure_roles()
    database, _ = RedisDatabase.objects.get_or_create(name="bench", defaults={"key_prefix": "lucia:",
                                                                             "url_env": "BENCH_REDIS_URL"})
    for spec in seed.NAMESPACES:
        Namespace.objects.get_or_create(database=database, name=spec["name"],
                                        defaults={"prefix": f"lucia:{spec['name']}:",
                                                  "max_ttl_seconds": spec["max_ttl_seconds"]})
    user, _ = get_user_model().objects.get_or_create(username="bench-operator")
    roles.set_role(user, roles.OPERATOR)
    return database, user


def _cli(client, redis_url):
    """`manage.py purge … --yes` as an operator runs it: a new process, timed from its
    start to its exit."""
    from django.db import connection

    database, user = _records()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    db = connection.settings_dict
    base = redis_url.rsplit("/", 1)[0]
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "BENCH_REDIS_URL": redis_url, "REDIS_URL": redis_url, "CELERY_BROKER_URL": f"{base}/14",
           "CACHE_URL": f"{base}/15", "DJANGO_DEBUG": "0"}
    command = [sys.executable, os.path.join(root, "manage.py"), "purge", "--database", database.name,
               "--prefix", PREFIX.decode(), "--reason", "bench", "--yes", "--json", "--as", user.get_username()]
    before_cmds = _commands(client)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    result = json.loads(done.stdout)
    return {"seconds": round(seconds, 3), "deleted": result["deleted"], "matched": result["matched"],
            "skipped": result["skipped"], "keys_per_s": round(result["deleted"] / seconds),
            "inside_command_s": result["duration_s"], "commands": _commands(client) - before_cmds - 1,
            "commands_counted_by_run": result["commands"], "preview_scan": result["preview_scan"],
            "estimate": result["estimate"]}


def _engine(client):
    from continuity.operations import purge

    database, user = _records()
    started = time.perf_counter()
    preview = purge.preview_purge(action="delete", database=database, kind="prefix", value=PREFIX, actor=user)
    preview_seconds = time.perf_counter() - started
    run = purge.confirm_purge(run=preview.run, confirmation=preview.run.target_value, reason="benchmark",
                              actor=user, source="cli")
    before_cmds = _commands(client)
    started = time.perf_counter()
    result = purge.execute_purge(run_id=run.pk, source="cli")
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "deleted": result.done, "matched": result.matched,
            "skipped": result.skipped, "keys_per_s": round(result.done / seconds),
            "commands": _commands(client) - before_cmds - 1, "commands_counted_by_run": result.commands,
            "preview_seconds": round(preview_seconds, 3), "preview_matched": preview.matched,
            "preview_commands": preview.commands, "estimated_commands": preview.estimated_commands,
            "rate_cap": run.rate_cap, "batch_size": run.batch_size}


def run_purge_bench(redis_url, n_keys, *, with_engine=True) -> dict:
    """Load `n_keys` Lucia-like keys afresh for each side and purge `lucia:session:` with
    the pipeline, the command line end to end and (`with_engine`) the engine alone.
    Returns the timings, `ratio` (baseline seconds / CLI seconds, process start to exit),
    the Redis commands each side sent, and the load average at the end."""
    import redis

    cleanup = _django(redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        load_s = _load(client, n_keys)
        session_keys = _count(client)
        baseline = _baseline(client, redis_url)
        baseline["left_behind"] = _count(client)
        _load(client, n_keys)
        cli = _cli(client, redis_url)
        cli["left_behind"] = _count(client)
        engine = None
        if with_engine:
            _load(client, n_keys)
            engine = _engine(client)
            engine["left_behind"] = _count(client)
        client.flushdb()
    finally:
        client.close()
        if cleanup:
            cleanup()
    out = {"keys": n_keys, "session_keys": session_keys, "load_seconds": round(load_s, 1),
           "load_average": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count(),
           "baseline": baseline, "cli": cli, "ratio": round(baseline["seconds"] / cli["seconds"], 2)}
    if engine:
        out.update(engine=engine, engine_speedup=round(engine["keys_per_s"] / baseline["keys_per_s"], 2))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="scratch Redis URL (flushed); default: start a local redis-server")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--no-engine", action="store_true", help="skip the in-process engine measurement")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    server = tmp = None
    url = args.url
    if not url:
        from dashboard.devtools import localservers

        tmp = tempfile.mkdtemp(prefix="bench-purge-redis-")
        server = localservers.LocalRedis(tmp, localservers.free_port()).start()
        url = server.url(0)
    try:
        print(json.dumps(run_purge_bench(url, args.keys, with_engine=not args.no_engine), indent=2))
    finally:
        if server:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
