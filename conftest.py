"""Test fixtures: real Postgres and real redis-server processes on loopback ports,
started for the run and stopped after it. Personas: anon, viewer, operator, admin."""

import json
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from django.test import override_settings

from dashboard import localservers

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
    yield server
    server.stop()
    shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(postgres_server):
    from django.conf import settings

    settings.DATABASES["default"].update(
        HOST="127.0.0.1", PORT=str(postgres_server.port), USER="postgres", PASSWORD="", NAME="dashboard"
    )


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server: db 0 is the monitored keyspace, db 1 the broker, db 2 the cache."""
    localservers.ensure("redis-server")
    datadir = _tempdir("dashboard-test-redis-")
    server = localservers.LocalRedis(datadir, localservers.free_port()).start()
    yield server
    server.stop()
    shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _service_settings(redis_server):
    """Point every Redis role at the test server and use plain static storage."""
    from django.conf import settings

    from dashboard.celery import app

    urls = {"REDIS_URL": redis_server.url(0), "CELERY_BROKER_URL": redis_server.url(1), "CACHE_URL": redis_server.url(2)}
    old_env = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = urls["REDIS_URL"]
    caches = {"default": {**settings.CACHES["default"], "LOCATION": urls["CACHE_URL"]}}
    storages = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    override = override_settings(**urls, CACHES=caches, STORAGES=storages)
    override.enable()
    app.conf.broker_url = urls["CELERY_BROKER_URL"]
    yield urls
    override.disable()
    if old_env is None:
        os.environ.pop("REDIS_URL", None)
    else:
        os.environ["REDIS_URL"] = old_env


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

    keyspace.forget_cached_status()
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
    """The seeded `lucia` database record with its five namespaces."""
    from dashboard import seed

    seed.seed_all()
    from dashboard.models import RedisDatabase

    return RedisDatabase.objects.get(name="lucia")


# --- alerts: a real HTTP receiver, and Celery run eagerly ---------------------------
class Receiver:
    """A real HTTP server on a loopback port that records what it is sent."""

    def __init__(self):
        self.requests = []
        self.statuses = []  # status to answer per request; 200 once exhausted
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "json": json.loads(body or b"null")})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
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
