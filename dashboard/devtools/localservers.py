"""Throwaway local Postgres and Redis servers (and a small Redis Cluster) on loopback, for
`make run` and the tests.

Postgres refuses to run as root, so as root its commands run as the `postgres` user.
A missing server binary is installed with apt-get when running as root; otherwise the
exact install command is printed and we stop.

Run as a script, it checks (and as root installs) the binaries the tests need:
    python -m dashboard.devtools.localservers ensure redis-server postgres chromium
"""

import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

APT_PACKAGES = {"redis-server": "redis-server", "postgres": "postgresql", "chromium": "chromium"}


def stop_process(process):
    """Terminate `process` (a Popen, or None) and wait for it; kill it after 10 s."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class MissingBinary(RuntimeError):
    pass


def is_root():
    return os.geteuid() == 0


def free_port(preferred=None):
    """`preferred` when it is free on loopback, otherwise any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def postgres_bin_dir():
    """Directory with initdb and pg_ctl: Debian's /usr/lib/postgresql/N/bin first, then PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for directory in candidates:
        if os.access(os.path.join(directory, "initdb"), os.X_OK):
            return directory
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _found(name):
    if name == "postgres":
        return postgres_bin_dir() is not None
    return shutil.which(name) is not None


def ensure(*names):
    """Make sure each server binary exists: apt-get install it as root, else explain how."""
    missing = [name for name in names if not _found(name)]
    if not missing:
        return
    packages = [APT_PACKAGES[name] for name in missing]
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if not is_root():
        raise MissingBinary(
            f"Missing {', '.join(missing)}. Install with:\n    sudo apt-get update && sudo {' '.join(command)}"
        )
    print(f"Installing {', '.join(packages)} with apt-get…", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*command, "-qq"], check=True, env=env)
    still = [name for name in missing if not _found(name)]
    if still:
        raise MissingBinary(f"apt-get ran but {', '.join(still)} is still missing.")


def _wait(check, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def _port_open(port):
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LocalPostgres:
    """A Postgres cluster in `datadir`, trust auth for user `postgres`, loopback only."""

    user = "postgres"

    def __init__(self, datadir, port):
        self.datadir = Path(datadir)
        self.port = port
        self.bin = postgres_bin_dir()
        if not self.bin:
            raise MissingBinary("initdb/pg_ctl not found")

    def _run(self, *args, check=True):
        command = [os.path.join(self.bin, args[0]), *args[1:]]
        if is_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def _prepare_dir(self):
        self.datadir.mkdir(parents=True, exist_ok=True)
        if is_root():
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            shutil.chown(self.datadir, "postgres", "postgres")
        os.chmod(self.datadir, 0o700)

    @property
    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/"

    def start(self):
        self._prepare_dir()
        if not (self.datadir / "PG_VERSION").exists():
            result = self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--locale=C.UTF-8", check=False)
            if result.returncode:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        result = self._run("pg_ctl", "-D", str(self.datadir), "-o", options,
                           "-l", str(self.datadir / "server.log"), "-w", "-t", "60", "start", check=False)
        if result.returncode:
            log = (self.datadir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Postgres did not start: {result.stderr.strip()}\n{log}")
        return self

    def url_for(self, user, database=""):
        return f"postgres://{user}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql, database="postgres"):
        """Run `sql` as the superuser; its unaligned output."""
        result = self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                           "-v", "ON_ERROR_STOP=1", "-tAc", sql, check=False)
        if result.returncode:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def setup_roles(self, database, *, createdb=False):
        """The owner and app roles of `dashboard.dbroles` and `database` owned by the owner,
        with the statements the README gives for production. Idempotent. A database from
        before the two roles (owned by postgres) is handed to the owner role."""
        from dashboard import dbroles

        roles = set(self.psql("SELECT rolname FROM pg_roles").split())
        cluster = dbroles.cluster_statements(database=database, passwords=False, createdb=createdb)
        for role, statement in zip((dbroles.OWNER, dbroles.APP), cluster[:2]):
            if role not in roles:
                self.psql(statement)
        owner = self.psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{database}'")
        if owner == dbroles.OWNER:
            return
        if owner:
            self.psql(f"ALTER DATABASE {database} OWNER TO {dbroles.OWNER}")
            self.psql(_HAND_OVER.format(owner=dbroles.OWNER, app=dbroles.APP), database)
        else:
            self.psql(cluster[2])
        for statement in dbroles.database_statements(database=database):
            self.psql(statement, database)

    def stop(self):
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop", check=False)


# A local database migrated before the two roles: its tables, owned by postgres, go to the
# owner role, the app role gets the rights the default privileges give new tables, and the
# append-only tables lose what migration dashboard/0005 revokes.
_HAND_OVER = """
DO $$
DECLARE
    rel record;
BEGIN
    FOR rel IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
    LOOP
        EXECUTE format('ALTER TABLE public.%I OWNER TO {owner}', rel.relname);
    END LOOP;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app};
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app};
    IF to_regclass('public.dashboard_auditentry') IS NOT NULL THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON dashboard_auditentry FROM {app};
    END IF;
    IF to_regclass('public.dashboard_rotation') IS NOT NULL THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON dashboard_rotation FROM {app};
    END IF;
END
$$;
"""


class LocalRedis:
    """A redis-server on loopback. `persistent=True` keeps an append-only file in `datadir`,
    so a restart keeps the data (the store adapter's restart test needs that)."""

    def __init__(self, datadir, port, persistent=False, cluster=False):
        self.datadir = Path(datadir)
        self.port = port
        self.persistent = persistent
        self.cluster = cluster
        self.process = None

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self):
        self.datadir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if not binary:
            raise MissingBinary("redis-server not found")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.datadir),
                "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.datadir / "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        if self.cluster:  # nodes.conf lives in datadir, so a restarted node rejoins its cluster
            # A replica's first full sync waits repl-diskless-sync-delay (5 s by default) for more
            # replicas to join it: none will, so start it at once.
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "3000", "--repl-diskless-sync-delay", "0"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: _port_open(self.port) or self.process.poll() is not None, f"redis-server on {self.port}")
        if self.process.poll() is not None:
            log = (self.datadir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited: {log}")
        # Parallel test workers pick ports at the same time: make sure the server answering is ours.
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10) as client:
            answering = client.info("server").get("process_id")
        if answering != self.process.pid:
            self.stop()
            raise RuntimeError(f"port {self.port} is served by another redis-server (pid {answering})")
        return self

    def stop(self):
        stop_process(self.process)

    def restart(self):
        self.stop()
        return self.start()

    def kill(self):
        """SIGKILL, as a crashed or partitioned node (no shutdown handshake)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# The cluster bus listens on port + 10000, so a cluster node's port must stay at or below this.
CLUSTER_MAX_PORT = 65535 - 10000


def free_cluster_port(taken=()):
    """A free loopback port ≤ CLUSTER_MAX_PORT whose bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, CLUSTER_MAX_PORT)
        if port in taken or port + 10000 in taken:
            continue
        if free_port(port) == port and free_port(port + 10000) == port + 10000:
            return port
    raise RuntimeError("no free port pair for a cluster node on 127.0.0.1")


class LocalRedisCluster:
    """A Redis Cluster of `size` primaries, each with `replicas` replicas (none by default),
    on loopback: cluster-enabled redis-servers, each in its own directory, joined with
    `redis-cli --cluster create`.

    `ports` are the primaries as created (what callers that write or read keys expect),
    `replica_ports` the replicas, `all_ports` both. A failover (`failover`) swaps roles
    without changing these lists: ask `role_of` for what a node is now."""

    def __init__(self, datadir, size=3, replicas=0):
        self.datadir = Path(datadir)
        self.size = size
        self.replicas = replicas
        self.nodes = []

    @property
    def ports(self):
        return [node.port for node in self.nodes[:self.size]]

    @property
    def replica_ports(self):
        return [node.port for node in self.nodes[self.size:]]

    @property
    def all_ports(self):
        return [node.port for node in self.nodes]

    def url(self, node=0):
        return self.nodes[node].url(0)

    def start(self, timeout=60.0):
        try:
            self._start(timeout)
        except BaseException:
            self.stop()  # no node left running when the cluster did not come up
            raise
        return self

    def _start(self, timeout):
        taken = []
        for index in range(self.size * (1 + self.replicas)):
            port = free_cluster_port(taken)
            taken.append(port)
            self.nodes.append(LocalRedis(self.datadir / f"node{index}", port, cluster=True).start())
        cli = shutil.which("redis-cli")
        if not cli:
            raise MissingBinary("redis-cli not found")
        result = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.all_ports),
                                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
        self.wait_ok(timeout)
        if self.replicas:  # primaries first, whatever order redis-cli chose
            self.nodes.sort(key=lambda node: self.role_of(node.port) != "master")
            self.wait_synced(timeout)
        layout = []  # what every node agrees on once the replicas are known as such everywhere
        _wait(lambda: layout.append(self._agreed()) or layout[-1], "every node to see the same layout", timeout)
        self._created = layout[-1], {node.port: self._settings(node.port) for node in self.nodes}

    def _agreed(self):
        """The layout every node sees, when they all see the same with every replica as one, no
        flag and every link connected; else None."""
        views = [self._layout(node.port) for node in self.nodes]
        first = views[0]
        if any(view != first for view in views) or len(first) != len(self.nodes):
            return None
        if sum(role == "slave" for role, *_ in first.values()) != self.size * self.replicas:
            return None
        return first if all(not flags and link == "connected" for *_, flags, link in first.values()) else None

    def _cli(self, port, *args):
        cli = shutil.which("redis-cli")
        result = subprocess.run([cli, "-p", str(port), *args], capture_output=True, text=True, timeout=10)
        pairs = (line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
        return {name.strip(): value.strip() for name, value in pairs}

    def cluster_info(self, node):
        """CLUSTER INFO of node `node` (an index) as a dict of strings ({} when it does not answer)."""
        return self._cli(self.nodes[node].port, "cluster", "info")

    def replication(self, port):
        """INFO replication of the node on `port` as a dict of strings ({} when it does not answer)."""
        return self._cli(port, "info", "replication")

    def role_of(self, port):
        """"master" or "slave" (INFO replication's words), "" when the node does not answer."""
        return self.replication(port).get("role", "")

    def replica_of(self, port):
        """The port of a replica of the primary on `port` (as its INFO replication says now)."""
        return next(other for other in self.all_ports
                    if other != port and self.replication(other).get("master_port") == str(port))

    def _roles_seen(self, port):
        """{port: "master" or "slave"} of every node the node on `port` lists in CLUSTER NODES."""
        result = subprocess.run([shutil.which("redis-cli"), "-p", str(port), "cluster", "nodes"],
                                capture_output=True, text=True, timeout=10)
        roles = {}
        for parts in (line.split() for line in result.stdout.splitlines()):
            if len(parts) > 2:
                flags = parts[2].split(",")
                role = "master" if "master" in flags else "slave" if "slave" in flags else ""
                roles[int(parts[1].split("@", 1)[0].rpartition(":")[2])] = role
        return roles

    def wait_ok(self, timeout=60.0):
        """Until every running node says cluster_state:ok and knows all the nodes."""
        known = str(len(self.nodes))

        def ok():
            return all(self.cluster_info(i).get("cluster_state") == "ok"
                       and self.cluster_info(i).get("cluster_known_nodes") == known
                       for i, node in enumerate(self.nodes) if node.process.poll() is None)
        _wait(ok, "cluster_state:ok", timeout)

    def wait_synced(self, timeout=60.0):
        """Until every running replica's link to its primary is up (master_link_status:up)."""
        def synced():
            for node in self.nodes:
                if node.process.poll() is not None:
                    continue
                info = self.replication(node.port)
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
            return True
        _wait(synced, "replicas in sync", timeout)

    def failover(self, replica_port, *, takeover=True, timeout=60.0):
        """A real `CLUSTER FAILOVER` (TAKEOVER by default: no agreement needed, so it is
        deterministic; sent once the replica has caught up with a live primary, so no write is
        lost) sent to the replica on `replica_port`; returns once it reports
        role:master, every node lists it as the primary (and the old primary, when running, as
        its replica), the cluster is ok and every replica is in sync."""
        old = self.replication(replica_port).get("master_port")
        if not old:
            raise RuntimeError(f"{replica_port} is not a replica: {self.replication(replica_port)!r}")
        if takeover and any(node.port == int(old) and node.process.poll() is None for node in self.nodes):
            # TAKEOVER does not wait for the replica to catch up: wait here, or the last writes are lost.
            _wait(lambda: self.replication(int(old)).get("master_repl_offset")
                  == self.replication(replica_port).get("master_repl_offset"), f"{replica_port} to catch up", timeout)
        reply = subprocess.run([shutil.which("redis-cli"), "-p", str(replica_port), "cluster", "failover",
                                *(["takeover"] if takeover else [])],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if reply != "OK":
            raise RuntimeError(f"CLUSTER FAILOVER on {replica_port} answered {reply!r}")
        _wait(lambda: self.role_of(replica_port) == "master", f"{replica_port} as role:master", timeout)
        running = [node.port for node in self.nodes if node.process.poll() is None]
        demoted = int(old) in running  # a live old primary follows the new one; a dead one stays listed failing
        if demoted:
            _wait(lambda: self.role_of(int(old)) == "slave", f"{old} as role:slave", timeout)
        _wait(lambda: all((seen := self._roles_seen(port)).get(replica_port) == "master"
                          and (not demoted or seen.get(int(old)) == "slave") for port in running),
              f"every node to see {replica_port} as the primary (and {old} as a replica)", timeout)
        self.wait_ok(timeout)
        self.wait_synced(timeout)

    def _layout(self, port):
        """CLUSTER NODES as the node on `port` sees it: {node id: (role, its primary's id or "-",
        slot fields (a migrating or importing slot shows as "[slot->-id]" / "[slot-<-id]"), other
        flags such as fail, fail? or handshake, link state)}."""
        with _node_client(port) as client:
            text = client.execute_command("CLUSTER", "NODES")
        layout = {}
        for parts in (line.split() for line in text.splitlines()):
            if len(parts) >= 8:
                flags = set(parts[2].split(",")) - {"myself", "noflags"}
                role = "master" if "master" in flags else "slave" if "slave" in flags else "?"
                layout[parts[0]] = (role, parts[3], tuple(parts[8:]), frozenset(flags - {"master", "slave"}), parts[7])
        return layout

    @staticmethod
    def _settings(port):
        """The node's configuration (CONFIG GET *) and ACL rules (ACL LIST)."""
        with _node_client(port) as client:
            return client.config_get("*"), client.acl_list()

    def reset(self, timeout=30.0):
        """Back to the cluster `start` made, for the next test that needs one: the primaries as
        created serve their slots again (failed back, slots moved back, none left migrating),
        each replica follows its primary, and no key, script, ACL user, configuration change,
        statistic or client connection a test left is there. About 0.1 s, plus about 1 s per
        primary failed back, where a new cluster takes 2–5 s. RuntimeError when it cannot be done
        (a node is down: a restarted primary waits about as long as a new cluster takes to start);
        start a new cluster then."""
        down = [node.port for node in self.nodes if node.process.poll() is not None]
        if down:
            raise RuntimeError(f"cluster nodes {down} are down")
        layout, settings = self._created
        for node in self.nodes:  # first: a test may have changed the timeouts a failover relies on
            config, acl = settings[node.port]
            with _node_client(node.port) as client:
                now = client.config_get("*")
                for name, value in config.items():
                    if now.get(name) != value and name not in _ROLE_CONFIG:
                        client.config_set(name, value)
                for user in client.acl_users():
                    if user != "default":
                        client.acl_deluser(user)
                if client.acl_list() != acl:
                    raise RuntimeError(f"the default user of {node.port} was changed")
        for node in self.nodes[:self.size]:
            if self.role_of(node.port) != "master":
                self.failover(node.port, timeout=timeout)
        for node in self.nodes[:self.size]:
            with _node_client(node.port) as client:
                client.flushall(asynchronous=False)
        self._restore_slots(layout)
        for node in self.nodes:
            with _node_client(node.port) as client:
                client.script_flush("SYNC")
        _wait(lambda: self._as_created(layout), "the cluster as created", timeout)
        for node in self.nodes:
            with _node_client(node.port) as client:
                client.slowlog_reset()
                client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                client.config_resetstat()

    def _restore_slots(self, layout):
        """Each slot back to the primary it was created on (its keys are flushed by now), as
        `redis-cli --cluster reshard` moves one: IMPORTING on the owner-to-be, so its SETSLOT
        NODE bumps its epoch and the move wins over any older claim still being gossiped."""
        ids = {self._myid(node.port): node.port for node in self.nodes}
        owner = [None] * 16384
        for node_id, (_role, _primary, slots, *_rest) in layout.items():
            for first, last in _slot_ranges(slots):
                owner[first:last + 1] = [node_id] * (last - first + 1)
        primaries = [node.port for node in self.nodes[:self.size]]
        for port in primaries:  # half-done migrations: forget them
            view = self._layout(port)
            mine = next(fields for node_id, (_r, _p, fields, *_rest) in view.items() if ids.get(node_id) == port)
            with _node_client(port) as client:
                for field in mine:
                    if field.startswith("["):
                        client.execute_command("CLUSTER", "SETSLOT", int(field[1:].split("-", 1)[0]), "STABLE")
        seen = [None] * 16384
        for node_id, (_role, _primary, slots, *_rest) in self._layout(primaries[0]).items():
            for first, last in _slot_ranges(slots):
                seen[first:last + 1] = [node_id] * (last - first + 1)
        for slot in (slot for slot in range(16384) if seen[slot] != owner[slot]):
            back = ids[owner[slot]]
            with _node_client(back) as client:
                if seen[slot] is not None:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", seen[slot])
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner[slot])
            for port in primaries:
                if port != back:
                    with _node_client(port) as client:
                        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner[slot])

    @staticmethod
    def _myid(port):
        with _node_client(port) as client:
            return client.execute_command("CLUSTER", "MYID")

    def _as_created(self, layout):
        """Every node sees the layout as created (no flag, no open slot), says cluster_state:ok,
        holds no key, and every replica's link is up at its primary's offset."""
        for index, node in enumerate(self.nodes):
            if self._layout(node.port) != layout or self.cluster_info(index).get("cluster_state") != "ok":
                return False
            with _node_client(node.port) as client:
                if client.dbsize():
                    return False
        for node in self.nodes[self.size:]:
            info = self.replication(node.port)
            if info.get("master_link_status") != "up":
                return False
            if self.replication(int(info["master_port"])).get("master_repl_offset") != info.get("master_repl_offset"):
                return False
        return True

    def kill(self, node):
        self.nodes[node].kill()

    def stop(self):
        for node in self.nodes:
            node.stop()


# Configuration a failover changes (the role, restored by failing back), not a test.
_ROLE_CONFIG = {"replicaof", "slaveof"}


def _node_client(port):
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, decode_responses=True)


def _slot_ranges(fields):
    """(first, last) of each slot field of a CLUSTER NODES line ("5", "0-5460"), open slots skipped."""
    for field in fields:
        if not field.startswith("["):
            first, _, last = field.partition("-")
            yield int(first), int(last or first)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "ensure":
        sys.exit("usage: python -m dashboard.devtools.localservers ensure NAME [NAME…]")
    try:
        ensure(*sys.argv[2:])
    except MissingBinary as exc:
        sys.exit(str(exc))
