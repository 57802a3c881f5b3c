"""`make run`: the whole dashboard on this machine, under one process manager.

- Starts a throwaway Postgres (when DATABASE_URL is unset) and a local redis-server (for
  whichever of REDIS_URL / CELERY_BROKER_URL / CACHE_URL is unset) in `.local/`, on
  loopback ports. Servers given by the environment are used as they are, never touched.
- Migrates as the owner role (DATABASE_OWNER_URL when set), then runs everything else as
  the app role (README, "Database roles"); seeds the runbook, creates the first admin, and — only when it started the
  monitored Redis itself — loads a demo keyspace.
- Starts local stand-ins for 1Password Connect and the Upstash Developer API
  (`sourceservers`, for whichever the environment does not configure), points the dashboard
  at them, writes the demo's references, rotation, region and Upstash link
  (`demo_sources`) and checks them once (`check_sources`).
- Runs web, Celery worker and Celery beat under honcho; Ctrl-C stops everything it started.

`DEMO_CLUSTER=1 make run` (only when REDIS_URL is unset): the monitored keyspace is a local
3-primary Redis Cluster instead (`localservers.LocalRedisCluster`, new in `.local/cluster` at
every start), REDIS_URL names its first node, and the demo keyspace is written through a
cluster client (each key on the primary of its slot), and the demo writer does not run (the
store adapter writes to one node). The broker and the cache stay on the standalone local
redis-server.

`DEMO_REST=1 make run` (only when REDIS_URL and the REST pair are unset): the monitored
keyspace is reached over Upstash's REST protocol only: a local REST endpoint
(`restbridge.RestBridge`, a protocol bridge standing in for Upstash) in front of the local
redis-server's db 0, UPSTASH_REDIS_REST_URL / UPSTASH_REDIS_REST_TOKEN set (a token made for
the run) and REDIS_URL unset for the dashboard's processes. The demo keyspace is written,
and the demo writer writes, through the REST API.
"""

import os
import secrets
import shutil
import signal
import sys
from pathlib import Path

from honcho.manager import Manager

from dashboard import dbroles
from dashboard.devtools import localservers

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
PYTHON = sys.executable


def read_dotenv(path):
    """KEY=VALUE lines of a .env file; the real environment wins."""
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip().strip("'\"")
    return values


def _last_port(name, preferred):
    path = LOCAL / f"{name}.port"
    return int(path.read_text()) if path.exists() else preferred


def _remember_port(name, port):
    LOCAL.mkdir(exist_ok=True)
    (LOCAL / f"{name}.port").write_text(str(port))


def _port_file(name, preferred):
    """Reuse the port of the last run so bookmarks keep working, when it is free."""
    path = LOCAL / f"{name}.port"
    last = int(path.read_text()) if path.exists() else preferred
    port = localservers.free_port(last)
    LOCAL.mkdir(exist_ok=True)
    path.write_text(str(port))
    return port


def cluster_demo_keyspace(ports, keys=3000, seed=7):
    """The demo keyspace (`continuity.demo`, violations included) written through a cluster
    client, so each key lands on the primary of its slot. Returns the number written."""
    import redis

    from continuity import demo

    client = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    try:
        return demo.write_keyspace(client, demo.lucia_keyspace(keys, seed=seed, violation_rate=0.01))
    finally:
        client.close()


def demo_sso(env, datadir, port, origins):
    """`DEMO_SSO=1`: start the demo OpenID provider (dashboard/devtools/idp, its own process),
    register the dashboard at `origins` as its client, create the demo people with one
    generated password, and point the dashboard's OIDC_* variables at it. Returns the provider
    (to stop) and the password."""
    from dashboard.devtools.idp import DEMO_GROUP_ROLES, DEMO_PEOPLE, LocalOpenIDProvider

    provider = LocalOpenIDProvider(datadir, port).start()
    client_secret, password = secrets.token_urlsafe(32), secrets.token_urlsafe(9)
    provider.register_client("continuity-dashboard", client_secret, [f"{o}/oidc/callback/" for o in origins])
    for username, (email, groups) in DEMO_PEOPLE.items():
        provider.add_person(username, password, email, groups)
    env.update(OIDC_ISSUER=provider.issuer, OIDC_CLIENT_ID="continuity-dashboard", OIDC_CLIENT_SECRET=client_secret,
               OIDC_GROUP_ROLES=DEMO_GROUP_ROLES, OIDC_PROVIDER_NAME="the demo provider")
    return provider, password
def demo_sources(env):
    """Local stand-ins for 1Password Connect and the Upstash Developer API
    (`sourceservers.start_demo`), each only when the environment configures no real one, and
    the variables that point the dashboard at them. Returns {"1password": server or None,
    "upstash": server or None}."""
    import secrets as random_tokens

    from dashboard.devtools import sourceservers

    token = None if env.get("OP_CONNECT_HOST") else random_tokens.token_urlsafe(24)
    account = None if env.get("UPSTASH_EMAIL") else ("demo@example.invalid", random_tokens.token_urlsafe(24))
    connect, upstash = sourceservers.start_demo(connect_token=token, upstash_credentials=account)
    if connect:
        env.update(OP_CONNECT_HOST=connect.url, OP_CONNECT_TOKEN=token)
        print(f"· 1Password Connect (local stand-in with the demo's vault) on {connect.url}")
    if upstash:
        env.update(UPSTASH_EMAIL=account[0], UPSTASH_API_KEY=account[1], UPSTASH_API_URL=upstash.url)
        print(f"· Upstash Developer API (local stand-in with the demo's database) on {upstash.url}")
    return {"1password": connect, "upstash": upstash}


def manage(env, *args):
    run_python(env, str(ROOT / "manage.py"), *args)


def run_python(env, *args):
    import subprocess

    result = subprocess.run([PYTHON, *args], env=env, cwd=str(ROOT))
    if result.returncode:
        raise SystemExit(f"{' '.join(args)} failed (exit {result.returncode}).")


def main():
    env = {**read_dotenv(ROOT / ".env"), **os.environ}
    env.setdefault("DJANGO_DEBUG", "1")
    env.setdefault("DJANGO_HTTPS", "0")
    started = []
    local_monitored = False
    cluster = None
    cluster_demo = env.get("DEMO_CLUSTER", "").strip().lower() not in ("", "0", "false", "no")
    rest_demo = env.get("DEMO_REST", "").strip().lower() not in ("", "0", "false", "no")
    bridge = None
    try:
        if not env.get("DATABASE_URL"):
            localservers.ensure("postgres")
            pg = localservers.LocalPostgres(LOCAL / "postgres", _port_file("postgres", 54329)).start()
            started.append(pg)
            # The production roles (README, "Database roles"): migrations as the owner,
            # everything else as the app role that cannot rewrite the audit log.
            pg.setup_roles("dashboard")
            env["DATABASE_URL"] = pg.url_for(dbroles.APP, "dashboard")
            env["DATABASE_OWNER_URL"] = pg.url_for(dbroles.OWNER, "dashboard")
            print(f"· Postgres (local, throwaway) on 127.0.0.1:{pg.port}, data in .local/postgres, "
                  f"roles {dbroles.OWNER} (migrations) and {dbroles.APP} (the dashboard)")
        roles = {"REDIS_URL": 0, "CELERY_BROKER_URL": 1, "CACHE_URL": 2}
        missing = [name for name in roles if not env.get(name)]
        if missing:
            localservers.ensure("redis-server")
            rd = localservers.LocalRedis(LOCAL / "redis", _port_file("redis", 63790)).start()
            started.append(rd)
            for name in missing:
                env[name] = rd.url(roles[name])
            local_monitored = "REDIS_URL" in missing
            if cluster_demo and local_monitored:
                shutil.rmtree(LOCAL / "cluster", ignore_errors=True)  # a new cluster: nodes.conf names old ports
                cluster = localservers.LocalRedisCluster(LOCAL / "cluster", size=3).start()
                started.append(cluster)
                env["REDIS_URL"] = cluster.url(0)
                missing.remove("REDIS_URL")
                print(f"· Redis Cluster (local, 3 primaries) on 127.0.0.1:{', '.join(map(str, cluster.ports))} "
                      f"for REDIS_URL (DEMO_CLUSTER)")
            print(f"· Redis (local) on 127.0.0.1:{rd.port} for {', '.join(missing)}")
        if cluster_demo and not cluster:
            print("· DEMO_CLUSTER ignored: REDIS_URL is set, so the monitored Redis is yours.")
        port = env.get("PORT", "8000")
        sso_demo = env.get("DEMO_SSO", "").strip().lower() not in ("", "0", "false", "no")
        sso_password = None
        if sso_demo and env.get("OIDC_ISSUER"):
            print("· DEMO_SSO ignored: OIDC_ISSUER is set, so the identity provider is yours.")
        elif sso_demo:
            idp, sso_password = demo_sso(env, LOCAL / "idp", _port_file("idp", 8900),
                                         [f"http://127.0.0.1:{port}", f"http://localhost:{port}"])
            started.append(idp)
            print(f"· Demo OpenID provider (local, django-oidc-provider) at {idp.issuer}")
        if not env.get("METRICS_TOKEN") and not env.get("METRICS_TOKEN_FILE") and not env.get("METRICS_ALLOWED_NETWORKS"):
            env["METRICS_ALLOWED_NETWORKS"] = "127.0.0.1/32,::1/128"  # a local run: curl /metrics from this machine
        if rest_demo and local_monitored and not cluster and not env.get("UPSTASH_REDIS_REST_URL"):
            from dashboard.devtools.restbridge import RestBridge

            token = secrets.token_urlsafe(24)
            bridge = RestBridge(env.pop("REDIS_URL"), {token: (None, None)},
                                port=localservers.free_port(_last_port("restbridge", 8079))).start()
            _remember_port("restbridge", bridge.server.server_address[1])
            env["UPSTASH_REDIS_REST_URL"], env["UPSTASH_REDIS_REST_TOKEN"] = bridge.url, token
            print(f"· REST endpoint (a local protocol bridge standing in for Upstash) on {bridge.url} for "
                  "UPSTASH_REDIS_REST_URL / _TOKEN; REDIS_URL is unset, so lucia is reached over REST only")
        elif rest_demo:
            print("· DEMO_REST ignored: the monitored Redis (REDIS_URL or the REST pair) is yours.")
        sources = demo_sources(env)
        started += [server for server in sources.values() if server]
        manage({**env, "DATABASE_URL": env.get("DATABASE_OWNER_URL") or env["DATABASE_URL"]},
               "migrate", "--noinput", "-v", "0")
        manage(env, "seed_runbook")
        manage(env, "ensure_admin")
        if any(sources.values()):
            flags = [f"--no-{name}" for name, server in sources.items() if not server]
            run_python(env, "-m", "dashboard.devtools.demo_sources", *flags)
            try:  # the demo's states at once, as the beat jobs would find them
                manage(env, "check_sources")
            except SystemExit:
                print("· check_sources could not verify every source; the beat jobs will try again.")
        if cluster:
            print(f"· Demo keyspace: {cluster_demo_keyspace(cluster.ports):,} keys across the cluster's primaries")
        elif local_monitored:
            manage(env, "load_demo_keyspace", "--keys", "3000")
        # A first (sampled, so cheap on any keyspace) review, so the jobs page is never empty.
        try:
            manage(env, "ttl_review", "--sample", env.get("REVIEW_SAMPLE_SIZE", "2000"))
        except SystemExit as exc:
            print(f"· The first review did not run ({exc}); the schedule will try again.")
        processes = {
            "web": f"{PYTHON} manage.py runserver 127.0.0.1:{port}",
            "worker": f"{PYTHON} -m celery -A dashboard worker --loglevel INFO --concurrency 2",
            "beat": f"{PYTHON} -m celery -A dashboard beat --loglevel INFO",
        }
        if local_monitored and not cluster and (ROOT / "continuity/management/commands/demo_writer.py").exists():
            processes["demo"] = f"{PYTHON} manage.py demo_writer"
        print(f"\n  Dashboard: http://127.0.0.1:{port}/   (health: http://127.0.0.1:{port}/healthz, "
              f"Prometheus: http://127.0.0.1:{port}/metrics)")
        print("  Sign in as the admin printed above (or DASHBOARD_ADMIN_PASSWORD). Ctrl-C stops everything.",
              flush=True)
        if sso_password:
            from dashboard.devtools.idp import DEMO_PEOPLE

            people = ", ".join(f"{name} ({groups[0]})" for name, (_email, groups) in DEMO_PEOPLE.items())
            print(f"  Single sign-on: \"Sign in with the demo provider\" on the sign-in page, then at the provider\n"
                  f"  one of {people}, password {sso_password} (nina is refused: no group with a role).")
        print(flush=True)
        manager = Manager()
        for name, command in processes.items():
            manager.add_process(name, command, cwd=str(ROOT), env=env)
        manager.loop()
        # Ctrl-C (130) or a TERM (143) is how a local run is meant to end.
        return 0 if manager.returncode in (None, 130, 143) else manager.returncode
    except localservers.MissingBinary as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if bridge is not None:
            bridge.stop()
        for server in reversed(started):
            server.stop()
        if started:
            print("· Stopped the local servers.")


if __name__ == "__main__":
    sys.exit(main())
