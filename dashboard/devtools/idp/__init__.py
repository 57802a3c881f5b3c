"""The demo OpenID provider: django-oidc-provider in a small Django project of its own
(`settings`, `urls`, `claims`, `control`), started as a separate process on loopback by
`DEMO_SSO=1 make run` and by the SSO tests, so the dashboard signs in through a real provider:
discovery, authorization code with PKCE, RS256 ID tokens from its JWKS, userinfo.

`LocalOpenIDProvider` starts and stops it and drives its control endpoint (clients, people
and their groups, ending a person's session at the provider)."""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import requests

from dashboard.devtools import localservers
from dashboard.devtools.localservers import free_port

ROOT = Path(__file__).resolve().parents[3]

# The people of `DEMO_SSO=1 make run`, their groups, and the mapping that gives them roles.
DEMO_GROUP_ROLES = "dashboard-admins=admin,dashboard-operators=operator,dashboard-viewers=viewer"
DEMO_PEOPLE = {
    "ada": ("ada@lucia.example", ["dashboard-admins"]),
    "otto": ("otto@lucia.example", ["dashboard-operators", "oncall"]),
    "vera": ("vera@lucia.example", ["dashboard-viewers"]),
    "nina": ("nina@lucia.example", ["marketing"]),  # no group with a role: refused
}


class LocalOpenIDProvider:
    """The demo provider's process: `start()` (it migrates its SQLite file in `datadir` and
    answers discovery before this returns), `stop()`, and its control endpoint."""

    def __init__(self, datadir, port=None):
        self.datadir = Path(datadir)
        self.port = port
        self.process = None
        self.control_token = secrets.token_urlsafe(24)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self):
        return f"{self.base_url}/openid"

    def start(self, timeout=60.0):
        for attempt in range(3):  # another process may take the free port first
            port = self.port if (self.port and attempt == 0) else free_port()
            self.port = port
            env = {**os.environ, "IDP_CONTROL_TOKEN": self.control_token, "PYTHONUNBUFFERED": "1"}
            env.pop("DJANGO_SETTINGS_MODULE", None)
            self.datadir.mkdir(parents=True, exist_ok=True)
            with open(self.datadir / "idp.log", "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "dashboard.devtools.idp.serve", "--port", str(port), "--data",
                     str(self.datadir)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"the demo OpenID provider did not start; see {self.datadir / 'idp.log'}")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                answer = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2)
                if answer.status_code == 200 and answer.json().get("issuer") == self.issuer:
                    return True
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        return False

    def stop(self):
        localservers.stop_process(self.process)

    def control(self, action, **payload):
        """Call the control endpoint (`control.ACTIONS`); returns its JSON answer."""
        answer = requests.post(f"{self.base_url}/control/", json={"action": action, **payload},
                               headers={"Authorization": f"Bearer {self.control_token}"}, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def register_client(self, client_id, client_secret, redirect_uris):
        return self.control("client", client_id=client_id, client_secret=client_secret,
                            redirect_uris=list(redirect_uris))

    def add_person(self, username, password, email, groups):
        return self.control("user", username=username, password=password, email=email, groups=list(groups))

    def set_groups(self, username, groups):
        return self.control("user", username=username, groups=list(groups))

    def end_sessions(self, username):
        """Sign `username` out at the provider (a silent refresh then needs a new sign-in)."""
        return self.control("end_sessions", username=username)
