"""Local stand-ins for the two sources of truth, for the tests and `make run`'s demo: real HTTP
servers on loopback that serve exactly the documented endpoints and fields, and record every
request they get.

- `LocalConnect`: the 1Password Connect API, spec version 1.7.1 (1Password/connect,
  docs/openapi/spec.yaml): `GET /v1/vaults` and `GET /v1/vaults/{vaultUuid}/items` (both with
  the SCIM `eq` filter), and, so that a test can prove nobody asks for them, the vault, item
  details (`/items/{itemUuid}`, which carry the field values) and files endpoints. Bearer token
  auth; errors as `ErrorResponse` {status, message}.
- `LocalUpstash`: the Upstash Developer API (upstash/docs, devops/developer-api/openapi.yml,
  OpenAPI 3.0.4, "Developer API - Upstash" 1.0.0): `GET /v2/redis/databases`,
  `GET /v2/redis/database/{id}` (credentials in the answer unless `credentials=hide`) and
  `GET /v2/redis/stats/{id}`. HTTP basic auth with email and API key.

`fail_next(...)` makes the next answers an error status, a malformed body or a slow answer.
`start_demo` serves `make run`'s demo (dashboard.devtools.devrun).
"""

import base64
import copy
import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


class LocalApi:
    """A loopback HTTP server answering GET requests through `route`, recording each one."""

    def __init__(self, port=0):
        self.requests = []  # {"method", "path", "query", "authorized", "user_agent"}
        self.faults = []  # (kind, value, path prefix or None), applied in order
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                parts = urlsplit(self.path)
                path, query = unquote(parts.path), parse_qs(parts.query)
                with api.lock:
                    api.requests.append({"method": self.command, "path": path, "query": query,
                                         "authorized": api.authorized(self.headers),
                                         "user_agent": self.headers.get("User-Agent", "")})
                    fault = api.take_fault(path)
                if fault and fault[0] == "delay":
                    time.sleep(fault[1])
                    fault = None
                if fault:
                    status, body = (fault[1], api.error_body(fault[1], "injected")) if fault[0] == "status" \
                        else (200, fault[1])
                elif not api.authorized(self.headers):
                    status, body = 401, api.error_body(401, "Invalid token signature")
                elif self.command != "GET":
                    status, body = 405, api.error_body(405, "method not allowed")
                else:
                    status, body = api.route(path, query)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    stop = close  # as the other local servers (devrun stops what it started)

    def fail_next(self, kind, value=None, *, times=1, path=None):
        """The next `times` answers (to paths starting with `path`, when given): kind "status"
        (an error status with an ErrorResponse), "body" (200 with these bytes) or "delay"
        (answer normally after `value` seconds)."""
        with self.lock:
            self.faults.extend([(kind, value, path)] * times)

    def take_fault(self, path):
        for index, (kind, value, prefix) in enumerate(self.faults):
            if prefix is None or path.startswith(prefix):
                del self.faults[index]
                return kind, value
        return None

    def paths(self):
        with self.lock:
            return [entry["path"] for entry in self.requests]

    def error_body(self, status, message):
        return {"status": status, "message": message}

    def authorized(self, headers):
        raise NotImplementedError

    def route(self, path, query):
        raise NotImplementedError


def _scim_eq(query, attribute):
    """The value of a SCIM `attribute eq "value"` filter (case-insensitive, as SCIM compares
    strings), or None without a filter; "" for a filter that does not parse."""
    raw = (query.get("filter") or [None])[0]
    if raw is None:
        return None
    match = re.fullmatch(rf'\s*{attribute}\s+eq\s+"([^"]*)"\s*', raw)
    return match.group(1) if match else ""


class LocalConnect(LocalApi):
    """1Password Connect (spec 1.7.1). `vaults`: [{"id", "name", "items": [FullItem dicts]}]."""

    def __init__(self, token, vaults, port=0):
        self.token = token
        self.vaults = copy.deepcopy(vaults)
        super().__init__(port)

    def authorized(self, headers):
        return headers.get("Authorization") == f"Bearer {self.token}"

    def _vault(self, vault_id):
        return next((v for v in self.vaults if v["id"] == vault_id), None)

    @staticmethod
    def vault_json(vault):
        return {"id": vault["id"], "name": vault["name"], "attributeVersion": 1, "contentVersion": len(vault["items"]),
                "items": len(vault["items"]), "type": "USER_CREATED", "createdAt": "2024-01-02T03:04:05Z",
                "updatedAt": "2024-01-02T03:04:05Z"}

    @staticmethod
    def summary(item):
        """An Item as the items list answers it: no fields, no files."""
        return {key: item[key] for key in ("id", "title", "vault", "category", "version", "createdAt", "updatedAt",
                                           "lastEditedBy", "tags", "favorite") if key in item}

    def route(self, path, query):
        parts = path.strip("/").split("/")
        if parts[:2] != ["v1", "vaults"]:
            return 404, self.error_body(404, "not found")
        if len(parts) == 2:
            name = _scim_eq(query, "name")
            vaults = [v for v in self.vaults if name is None or v["name"].lower() == name.lower()]
            return 200, [self.vault_json(v) for v in vaults]
        vault = self._vault(parts[2])
        if vault is None:
            return 404, self.error_body(404, f"vault {parts[2]} not found")
        if len(parts) == 3:
            return 200, self.vault_json(vault)
        if parts[3] != "items":
            return 404, self.error_body(404, "not found")
        if len(parts) == 4:
            title = _scim_eq(query, "title")
            items = [i for i in vault["items"] if title is None or i["title"].lower() == title.lower()]
            return 200, [self.summary(i) for i in items]
        item = next((i for i in vault["items"] if i["id"] == parts[4]), None)
        if item is None:
            return 404, self.error_body(404, f"item {parts[4]} not found")
        if len(parts) == 5:
            return 200, item  # the item's details: fields with their values
        return 200, item.get("files", [])


class LocalUpstash(LocalApi):
    """The Upstash Developer API. `databases`: {id: Database dict, credentials included};
    `stats`: {id: DatabaseStats dict}."""

    CREDENTIALS = ("password", "rest_token", "read_only_rest_token")

    def __init__(self, email, api_key, databases, stats, port=0):
        self.basic = "Basic " + base64.b64encode(f"{email}:{api_key}".encode()).decode()
        self.databases, self.stats = copy.deepcopy(databases), copy.deepcopy(stats)
        super().__init__(port)

    def authorized(self, headers):
        return headers.get("Authorization") == self.basic

    def error_body(self, status, message):
        return {"error": message}

    def route(self, path, query):
        parts = path.strip("/").split("/")
        if parts == ["v2", "redis", "databases"]:
            return 200, list(self.databases.values())
        if len(parts) == 4 and parts[:3] == ["v2", "redis", "database"] and parts[3] in self.databases:
            database = dict(self.databases[parts[3]])
            if (query.get("credentials") or [""])[0] == "hide":
                for key in self.CREDENTIALS:
                    database.pop(key, None)
            return 200, database
        if len(parts) == 4 and parts[:3] == ["v2", "redis", "stats"] and parts[3] in self.stats:
            return 200, self.stats[parts[3]]
        return 404, self.error_body(404, "database not found")


# --- make run's demo ---------------------------------------------------------------------
DEMO_VAULT_ID = "lucia0demo0vault0000000001"
DEMO_UPSTASH_ID = "5d8c1e2a-9f3b-4c7d-8e6f-0a1b2c3d4e5f"
# Secret name: (reference, days since the rotation the demo records, or None).
DEMO_SECRETS = {
    "lucia-rest-token": ("op://Lucia/Upstash Redis lucia/REST token", 10),  # changed 2 days ago: not recorded
    "lucia-rest-url": ("op://Lucia/Upstash REST URL lucia/url", 30),  # changed 40 days ago: checked
    "lucia-redis-password": ("op://Lucia/Redis password lucia/password", None),  # the item was renamed: broken
}
DEMO_RECORD = {"region": "eu-west-1"}  # Upstash says eu-central-1: a region drift
DEMO_LINK = {"upstash_id": DEMO_UPSTASH_ID, "tls": True, "eviction": False, "budget": 50,
             "max_request_size": 10 * 1024 * 1024, "max_entry_size": 100 * 1024 * 1024}


def _stamp(moment):
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item(item_id, title, version, changed):
    return {"id": item_id, "title": title, "vault": {"id": DEMO_VAULT_ID}, "category": "API_CREDENTIAL",
            "version": version, "createdAt": "2024-01-02T03:04:05Z", "updatedAt": _stamp(changed),
            "lastEditedBy": "demoeditor0000000000000001", "tags": ["lucia"], "favorite": False,
            "fields": [{"id": "credential", "type": "CONCEALED", "label": "credential",
                        "value": "demo-value-never-read-by-the-dashboard"}]}


def demo_vaults(now):
    return [{"id": DEMO_VAULT_ID, "name": "Lucia", "items": [
        _item("restt0ken0item000000000001", "Upstash Redis lucia", 4, now - timedelta(days=2)),
        _item("resturl0item00000000000001", "Upstash REST URL lucia", 1, now - timedelta(days=40)),
        _item("redispw0item00000000000001", "Redis password (lucia)", 2, now - timedelta(days=5)),
    ]}]


def demo_upstash():
    database = {"database_id": DEMO_UPSTASH_ID, "database_name": "lucia", "database_type": "Pay as You Go",
                "region": "global", "primary_region": "eu-central-1", "read_regions": [], "port": 6379,
                "creation_time": 1700000000, "state": "active", "endpoint": "demo-lucia-12345.upstash.io",
                "tls": True, "eviction": False, "budget": 50, "type": "payg",
                "db_max_request_size": 10 * 1024 * 1024, "db_max_entry_size": 100 * 1024 * 1024,
                "password": "demo-password-never-requested", "rest_token": "demo-token-never-requested",
                "read_only_rest_token": "demo-ro-token-never-requested"}
    stats = {"total_monthly_requests": 128_400, "total_monthly_read_requests": 101_000,
             "total_monthly_write_requests": 27_400, "daily_net_commands": 4_100, "keyspace": [], "days": []}
    return {DEMO_UPSTASH_ID: database}, {DEMO_UPSTASH_ID: stats}


def start_demo(*, connect_token=None, upstash_credentials=None, connect_port=0, upstash_port=0):
    """The demo's stand-ins (either may be skipped): (LocalConnect or None, LocalUpstash or None)."""
    now = datetime.now(timezone.utc)
    connect = LocalConnect(connect_token, demo_vaults(now), port=connect_port) if connect_token else None
    upstash = None
    if upstash_credentials:
        databases, stats = demo_upstash()
        upstash = LocalUpstash(*upstash_credentials, databases, stats, port=upstash_port)
    return connect, upstash

