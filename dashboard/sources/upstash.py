"""The Upstash Developer API, read only: two calls per database and nothing else.

- `GET /v2/redis/database/{id}?credentials=hide`: the database's settings. `credentials=hide`
  is the documented parameter that removes the password and tokens from the answer, so none
  is ever requested. (Listing databases, `GET /v2/redis/databases`, answers every database's
  credentials and has no such parameter: the dashboard never calls it, so a record is matched
  to its Upstash database by id.)
- `GET /v2/redis/stats/{id}`: this month's commands (`total_monthly_requests`).

HTTP basic auth with the account email and API key (Upstash's "Authentication" page). Only the
fields below are read, each checked for its documented type; anything else in an answer,
credentials included should they come anyway, is dropped unread.
"""

import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import requests
from urllib3.exceptions import ReadTimeoutError

from dashboard.scanning import find_secrets
from dashboard.sources import (MALFORMED, TIMED_OUT, TIMEOUT_SECONDS, UNREACHABLE, NotFound, Unavailable,
                               failure_for_status)

MAX_ANSWER_BYTES = 1024 * 1024  # a stats answer holds a few time series; 1 MiB is far beyond
# Region codes as Upstash writes them (us-east-1, eu-central-1, us-east4, global).
REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MAX_NAME = 200
MAX_READ_REGIONS = 32
MAX_BYTES_SETTING = 2**63 - 1
MAX_BUDGET = 10**9


@dataclass(frozen=True)
class Database:
    """The validated settings of one Upstash database, keyed as `UpstashLink.COMPARED`."""

    name: str
    values: dict
    anomalies: list = field(default_factory=list)


@dataclass(frozen=True)
class Stats:
    monthly_commands: int | None
    anomalies: list = field(default_factory=list)


class DeveloperApi:
    """A session with the Developer API for one check run."""

    def __init__(self, base_url, email, api_key, *, timeout=TIMEOUT_SECONDS):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (email, api_key)
        self.session.headers["Accept"] = "application/json"

    def close(self):
        self.session.close()

    def _get(self, path, params=None):
        """The JSON answer of GET `path`. Raises NotFound (404) or Unavailable."""
        try:
            response = self.session.get(f"{self.base_url}{path}", params=params, stream=True, allow_redirects=False,
                                        timeout=(min(3.0, self.timeout), self.timeout))
            with response:
                if response.status_code == 404:
                    raise NotFound
                if response.status_code != 200:
                    raise Unavailable(failure_for_status(response.status_code))
                body = b""
                for chunk in response.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise Unavailable(MALFORMED)
        except requests.Timeout:
            raise Unavailable(TIMED_OUT) from None
        except requests.RequestException as error:
            # A read timeout while the body streams comes wrapped in a ConnectionError.
            timed_out = any(isinstance(arg, ReadTimeoutError) for arg in error.args)
            raise Unavailable(TIMED_OUT if timed_out else UNREACHABLE) from None
        try:
            return json.loads(body)
        except ValueError:
            raise Unavailable(MALFORMED) from None

    def database(self, database_id):
        """Database, or raises NotFound / Unavailable."""
        answer = self._get(f"/v2/redis/database/{quote(database_id, safe='')}", params={"credentials": "hide"})
        return parse_database(answer, database_id)

    def stats(self, database_id):
        """Stats, or raises NotFound / Unavailable."""
        return parse_stats(self._get(f"/v2/redis/stats/{quote(database_id, safe='')}"))


def _region(value):
    return value if isinstance(value, str) and REGION.fullmatch(value) and not find_secrets(value) else None


def _count(value, limit):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        return None
    return value


def parse_database(answer, database_id):
    """Database from a Get Database answer; Unavailable(MALFORMED) when it is not an object
    or describes another database. A setting with an unexpected type or value is left out
    and named in `anomalies`."""
    if not isinstance(answer, dict):
        raise Unavailable(MALFORMED)
    if "database_id" in answer and answer["database_id"] != database_id:
        raise Unavailable(MALFORMED)
    values, anomalies = {}, []

    def keep(name, value):
        if value is None:
            anomalies.append(name)
        else:
            values[name] = value

    primary, region = _region(answer.get("primary_region")), _region(answer.get("region"))
    keep("region", primary or (region if region != "global" else None))
    regions = answer.get("read_regions", [])
    keep("read_regions", sorted(map(_region, regions)) if isinstance(regions, list) and len(regions) <= MAX_READ_REGIONS
         and all(map(_region, regions)) else None)
    for name in ("tls", "eviction"):
        keep(name, answer.get(name) if isinstance(answer.get(name), bool) else None)
    keep("budget", _count(answer.get("budget"), MAX_BUDGET))
    keep("max_request_size", _count(answer.get("db_max_request_size"), MAX_BYTES_SETTING))
    keep("max_entry_size", _count(answer.get("db_max_entry_size"), MAX_BYTES_SETTING))
    name = answer.get("database_name")
    if isinstance(name, str) and name.isprintable() and not find_secrets(name):
        name = name.strip()[:MAX_NAME]
    else:
        anomalies.append("database_name")
        name = ""
    return Database(name=name, values=values, anomalies=anomalies)


def parse_stats(answer):
    """Stats from a Get Database Stats answer (only `total_monthly_requests` is read)."""
    if not isinstance(answer, dict):
        raise Unavailable(MALFORMED)
    value = answer.get("total_monthly_requests")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    commands = _count(value, MAX_BYTES_SETTING)
    return Stats(monthly_commands=commands, anomalies=[] if commands is not None else ["total_monthly_requests"])
