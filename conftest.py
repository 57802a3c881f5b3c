"""Test fixtures: real Postgres and real redis-server processes on loopback ports,
started for the run and stopped after it. Personas: anon, viewer, operator, admin."""

import json
import os
import shutil
import tempfile
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from django.test import override_settings

from dashboard.devtools import localservers

pytest_plugins = ("celery.contrib.pytest",)


def _tempdir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="session")
def postgres_server():
    localservers.ensure("postgres")
    datadir = _tempdir("dashboard-test-pg-")
    server = localservers.LocalPostgres(os.path.join(datadir, "data"), localservers.free_port())
    server.start()
    # The production roles (README, "Database roles"); the owner may also create the test
    # database, which pytest-django clones from this one (schema rights, default privileges).
    server.setup_roles("dashboard", createdb=True)
    yield server
    server.stop()
    shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(postgres_server):
    from django.conf import settings

    from dashboard import dbroles

    settings.DATABASES["default"].update(
        HOST="127.0.0.1", PORT=str(postgres_server.port), USER=dbroles.OWNER, PASSWORD="", NAME="dashboard"
    )
    settings.DATABASES["default"].setdefault("TEST", {})["TEMPLATE"] = "dashboard"


def _connect_as(role):
    """Point the default alias at `role`; the next query opens a new connection."""
    from django.db import connections

    connection = connections["default"]
    connection.close()
    connection.settings_dict["USER"] = role


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django created and migrated the test database as the owner role, as `migrate`
    runs in production. From here on the app code runs as the restricted app role, so what
    we test is what we recommend. A transactional test's flush (TRUNCATE of every table,
    the audit log included) runs as the owner, the only role allowed to."""
    from django.test import TransactionTestCase

    from dashboard import dbroles

    original_teardown = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self):
        _connect_as(dbroles.OWNER)
        try:
            original_teardown(self)
        finally:
            _connect_as(dbroles.APP)

    TransactionTestCase._fixture_teardown = _fixture_teardown
    _connect_as(dbroles.APP)
    yield
    TransactionTestCase._fixture_teardown = original_teardown
    _connect_as(dbroles.OWNER)  # to drop the test database


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server: db 0 is the monitored keyspace, db 1 the broker, db 2 the cache."""
    localservers.ensure("redis-server")
    datadir = _tempdir("dashboard-test-redis-")
    server = localservers.LocalRedis(datadir, localservers.free_port()).start()
    yield server
    server.stop()
    shutil.rmtree(datadir, ignore_errors=True)


def _cluster(prefix, replicas=0):
    localservers.ensure("redis-server")
    datadir = _tempdir(prefix)
    cluster = localservers.LocalRedisCluster(datadir, size=3, replicas=replicas).start()
    return cluster, datadir


@pytest.fixture(scope="session")
def redis_cluster():
    """A real 3-primary Redis Cluster (cluster-enabled redis-servers on loopback ports
    ≤ 55535, joined by `redis-cli --cluster create`), started only when a test asks for it
    and stopped at the end of the run. Never kill its nodes: use `disposable_cluster`."""
    cluster, datadir = _cluster("dashboard-test-cluster-")
    yield cluster
    cluster.stop()
    shutil.rmtree(datadir, ignore_errors=True)


class KeptCluster:
    """A cluster kept for the run and reset to how it was created after each test that uses
    it (`LocalRedisCluster.reset`: 0.1 s, or about 1 s per primary failed back, where a new one
    takes 2–5 s). After a test that killed or stopped a node it is dropped instead (a restarted
    primary takes as long as a new cluster) and the next test gets a new one."""

    def __init__(self, prefix, replicas):
        self.prefix, self.replicas = prefix, replicas
        self.cluster = self.datadir = None

    def take(self):
        if self.cluster is None:
            self.cluster, self.datadir = _cluster(self.prefix, self.replicas)
        return self.cluster

    def give_back(self):
        if all(node.process.poll() is None for node in self.cluster.nodes):
            try:
                self.cluster.reset()
                return
            except Exception as exc:  # whatever went wrong, the next test gets a new cluster
                warnings.warn(f"Could not reset the test cluster ({exc!r}); starting a new one.", stacklevel=1)
        self.stop()

    def stop(self):
        if self.cluster is not None:
            self.cluster.stop()
            shutil.rmtree(self.datadir, ignore_errors=True)
            self.cluster = self.datadir = None


@pytest.fixture(scope="session")
def _kept_clusters():
    kept = {"disposable": KeptCluster("dashboard-test-cluster-x-", replicas=0),
            "failover": KeptCluster("dashboard-test-cluster-f-", replicas=1)}
    yield kept
    for cluster in kept.values():
        cluster.stop()


def _lend(kept):
    """The kept cluster, as new for the test: reset, and no client of the app made on it before."""
    from continuity import keyspace

    cluster = kept.take()
    keyspace.forget_clients()
    yield cluster
    keyspace.forget_clients()
    kept.give_back()


@pytest.fixture
def disposable_cluster(_kept_clusters):
    """A 3-primary cluster as new, for tests that kill a node, move slots or change its
    configuration or ACL users: reset (or replaced) after the test."""
    yield from _lend(_kept_clusters["disposable"])


@pytest.fixture
def failover_cluster(_kept_clusters):
    """A cluster as new with 3 primaries and one in-sync replica each, for tests that fail a
    primary over (`failover_cluster.failover(replica_port)`); failed back and reset after the
    test. `ports` are the primaries as created, `replica_ports` their replicas."""
    yield from _lend(_kept_clusters["failover"])


@pytest.fixture
def cluster_keys(redis_cluster):
    """A cluster client (redis-py's RedisCluster) on `redis_cluster`, every primary
    flushed before the test."""
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _service_settings(redis_server):
    """Point every Redis role at the test server; plain static storage, a fast password hasher."""
    from django.conf import settings

    from dashboard.celery import app

    urls = {"REDIS_URL": redis_server.url(0), "CELERY_BROKER_URL": redis_server.url(1), "CACHE_URL": redis_server.url(2)}
    caches = {"default": {**settings.CACHES["default"], "LOCATION": urls["CACHE_URL"]}}
    storages = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    # PBKDF2's million iterations cost ~0.3 s per user created or signed in, most of the suite's
    # CPU; MD5 (Django's advice for tests) first, the production hashers still verify theirs.
    hashers = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    with pytest.MonkeyPatch.context() as patch, override_settings(**urls, CACHES=caches, STORAGES=storages,
                                                                   PASSWORD_HASHERS=hashers):
        patch.setenv("REDIS_URL", urls["REDIS_URL"])
        app.conf.broker_url = urls["CELERY_BROKER_URL"]
        yield urls


# --- the monitored keyspace over Upstash's REST API: a protocol bridge in front of db 0 ------
REST_TOKEN = "test-rest-token-standard"
REST_READONLY_TOKEN = "test-rest-token-readonly"


@pytest.fixture(scope="session")
def rest_bridge(redis_server):
    """The local REST endpoint (`dashboard.devtools.restbridge`) in front of the test
    redis-server's db 0: the standard token signs in as Redis's default user, the read-only
    one as `default_ro` (`+@read -@dangerous`, as Upstash documents its read-only token)."""
    from dashboard.devtools import restbridge

    admin = redis.Redis.from_url(redis_server.url(0))
    readonly = restbridge.read_only_token_user(admin)
    admin.close()
    bridge = restbridge.RestBridge(redis_server.url(0), {REST_TOKEN: (None, None), REST_READONLY_TOKEN: readonly})
    bridge.start()
    yield bridge
    bridge.stop()


def use_rest(monkeypatch, bridge, token=REST_TOKEN):
    """The seeded records' URL variable unset, the runbook's REST pair set to `bridge`."""
    from continuity import keyspace

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("UPSTASH_REDIS_REST_URL", bridge.url)
    monkeypatch.setenv("UPSTASH_REDIS_REST_TOKEN", token)
    keyspace.forget_clients()


@pytest.fixture
def over_rest(monkeypatch, rest_bridge):
    """The seeded records over the REST API for this test (see `use_rest`): the bridge."""
    from continuity import keyspace

    use_rest(monkeypatch, rest_bridge)
    yield rest_bridge
    keyspace.forget_clients()


@pytest.fixture(params=["tcp", "rest"])
def transport(request, monkeypatch):
    """Runs a test over TCP (REDIS_URL) and again over Upstash's REST API (REDIS_URL unset, the
    REST pair set, the local bridge in front of the same redis-server). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("transport")`; the `monitored` client stays on TCP."""
    from continuity import keyspace

    # The test's own monkeypatch: what the test changes in the environment on top is undone
    # first, in the right order (so a test must not call monkeypatch.undo() mid-way).
    if request.param == "rest":
        use_rest(monkeypatch, request.getfixturevalue("rest_bridge"))
    yield request.param
    keyspace.forget_clients()


@pytest.fixture
def monitored(redis_server):
    """A client on the monitored keyspace (db 0), emptied before the test."""
    client = redis.Redis.from_url(redis_server.url(0))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _fresh_redis_state(redis_server):
    from continuity import keyspace
    from dashboard import health

    keyspace.forget_cached_status()
    health.forget_public_checks()
    client = redis.Redis.from_url(redis_server.url(2))
    client.flushdb()
    client.close()
    yield
    keyspace.forget_cached_status()


# --- personas ------------------------------------------------------------------------
def _user(django_user_model, username, role):
    from dashboard import roles

    user = django_user_model.objects.create_user(username, f"{username}@example.test", "correct horse battery staple")
    if role:
        roles.set_role(user, role)
    return user


@pytest.fixture
def viewer(db, django_user_model):
    return _user(django_user_model, "vera", "viewer")


@pytest.fixture
def operator(db, django_user_model):
    return _user(django_user_model, "otto", "operator")


@pytest.fixture
def admin(db, django_user_model):
    return _user(django_user_model, "ada", "admin")


@pytest.fixture
def norole(db, django_user_model):
    return _user(django_user_model, "nora", None)


def _client_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(viewer):
    return _client_for(viewer)


@pytest.fixture
def operator_client(operator):
    return _client_for(operator)


@pytest.fixture
def admin_client(admin):
    return _client_for(admin)


@pytest.fixture
def lucia(db):
    """The seeded `lucia` database record with its five namespaces (and the rest of the
    runbook's seed: secrets, checklist, schedules, their audit entries)."""
    from dashboard.models import RedisDatabase

    _SEED.apply()
    return RedisDatabase.objects.get(name="lucia")


JSON_OIDS = (114, 3802)  # json, jsonb


class SeedSnapshot:
    """`seed.seed_all()` once per test worker, then its rows copied back in a few statements.

    Seeding writes some 36 records and their audit entries one by one (about 360 queries, a
    quarter of a second); most tests start from it. The first seeding on a database whose
    seeded tables are all empty records what it inserted; a later test that starts from those
    tables empty gets the same rows back by one INSERT per table: the same ids (free: tests
    roll back or flush, flushes keep the sequences, and Postgres never hands a sequence value
    out twice) and the same values, every moment moved forward by the time since the first
    seeding (as if seeded now: a schedule's last run, a record's creation). Any other start
    (a seeded table not empty) seeds the slow way."""

    def __init__(self):
        self.tables = None  # [(table, columns, rows)] in insertion order
        self.taken = None  # when the snapshot was seeded

    @staticmethod
    def _counts(cursor, tables):
        cursor.execute(" UNION ALL ".join(f'SELECT {i}, COUNT(*) FROM "{t}"' for i, t in enumerate(tables)))
        found = dict(cursor.fetchall())
        return {table: found[i] for i, table in enumerate(tables)}

    def apply(self):
        from django.db import connection

        from continuity import seed

        with connection.cursor() as cursor:
            if self.tables is None:
                self._take(cursor, connection.introspection.table_names(cursor))
            elif any(self._counts(cursor, [table for table, _, _ in self.tables]).values()):
                seed.seed_all()
            else:
                self._restore(cursor)

    def _take(self, cursor, every):
        from django.utils import timezone
        from psycopg.types.json import Jsonb

        from continuity import seed

        before = self._counts(cursor, every)
        taken = timezone.now()
        seed.seed_all()
        after = self._counts(cursor, every)
        grown = [table for table in every if after[table] != before[table]]
        if any(before[table] for table in grown):
            return  # seeded on top of other rows: take the snapshot another time
        snapshot = []
        for table in grown:
            cursor.execute(f'SELECT * FROM "{table}"')
            json_at = {i for i, column in enumerate(cursor.description) if column.type_code in JSON_OIDS}
            # Django reads json(b) as text (JSONField decodes it itself): written back parsed.
            rows = [tuple(Jsonb(json.loads(value) if isinstance(value, str) else value)
                          if i in json_at and value is not None else value for i, value in enumerate(row))
                    for row in cursor.fetchall()]
            snapshot.append((table, [column.name for column in cursor.description], rows))
        self.tables, self.taken = _insertion_order(snapshot), taken

    def _restore(self, cursor):
        from datetime import datetime

        from django.utils import timezone

        shift = timezone.now() - self.taken
        for table, columns, rows in self.tables:
            names = ", ".join(f'"{column}"' for column in columns)
            marks = ", ".join(["%s"] * len(columns))
            moved = [tuple(value + shift if isinstance(value, datetime) else value for value in row) for row in rows]
            cursor.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', moved)


def _insertion_order(snapshot):
    """The snapshot's tables ordered so that a table comes after those its foreign keys name."""
    from django.apps import apps

    model_of = {model._meta.db_table: model for model in apps.get_models(include_auto_created=True)}
    tables = {table for table, _, _ in snapshot}
    ordered, placed, pending = [], set(), list(snapshot)
    while pending:
        for entry in pending:
            model = model_of.get(entry[0])
            fields = model._meta.concrete_fields if model else []
            needs = {f.related_model._meta.db_table for f in fields if f.is_relation and f.related_model} & tables
            if needs - {entry[0]} <= placed:
                ordered.append(entry)
                placed.add(entry[0])
                pending.remove(entry)
                break
        else:
            raise RuntimeError(f"no insertion order for {[table for table, _, _ in pending]}")
    return ordered


_SEED = SeedSnapshot()


# --- alerts: a real HTTP receiver, and Celery run eagerly ---------------------------
class Receiver:
    """A real HTTP server on a loopback port that records what it is sent."""

    def __init__(self, host="127.0.0.1", port=0, tls=None):
        self.requests = []
        self.statuses = []  # status to answer per request; 200 once exhausted
        self.reply_headers = {}  # sent with every answer (e.g. a Location)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "host": self.headers.get("Host"),
                                          "json": json.loads(body or b"null")})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                for name, value in receiver.reply_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        if tls:  # an ssl.SSLContext: serve https
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        # A short poll interval: shutdown() waits for it (0.5 s by default) at every test's end.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path="/hook"):
        return f"http://{self.server.server_address[0]}:{self.server.server_port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    """The receiver listens on 127.0.0.1: a private address, allowed for these tests as a
    deployment allows its internal receiver."""
    settings.ALERT_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def eager():
    from dashboard.celery import app

    old = app.conf.task_always_eager, app.conf.task_eager_propagates
    # Not propagating: an eager retry re-applies the task only when Retry is not re-raised.
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, False
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = old


# --- a real Celery worker in a thread (celery.contrib.pytest's `celery_worker`) -------
@pytest.fixture
def celery_app():
    """The dashboard's own app (broker: the test redis-server's db 1) for `celery_worker`.
    Tests using the worker need `django_db(transaction=True)` and an `empty_broker`."""
    from dashboard.celery import app

    return app


@pytest.fixture(scope="session")
def celery_worker_parameters():
    return {"perform_ping_check": False}


@pytest.fixture
def empty_broker(redis_server):
    client = redis.Redis.from_url(redis_server.url(1))
    client.flushdb()
    client.close()


# --- browser -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    localservers.ensure("chromium")
    return {
        **browser_type_launch_args,
        "executable_path": shutil.which("chromium") or "/usr/bin/chromium",
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"],
    }


@pytest.fixture
def outage(postgres_server):
    """Stop and start the test Postgres mid-test (`continuity.tests.outage.Outage`); it is
    running again when the test ends."""
    from continuity.tests.outage import Outage

    helper = Outage(postgres_server)
    yield helper
    helper.join()
    helper.start()


# --- single sign-on: the demo OpenID provider, its own process ---------------------------
@pytest.fixture(scope="session")
def openid_provider():
    """The demo OpenID provider (django-oidc-provider, dashboard/devtools/idp) as a separate
    process on a loopback port, once per test run (per xdist worker). Tests register their
    client and people through its control endpoint."""
    from dashboard.devtools.idp import LocalOpenIDProvider

    datadir = _tempdir("dashboard-test-idp-")
    provider = LocalOpenIDProvider(datadir).start()
    yield provider
    provider.stop()
    shutil.rmtree(datadir, ignore_errors=True)
