"""1Password Connect, metadata only, through the official SDK (`onepasswordconnectsdk`).

Two list calls and nothing else: the vaults (`GET /v1/vaults`), and a vault's items by title
filter (`GET /v1/vaults/{id}/items?filter=title eq "…"`, or unfiltered when a reference names
an item by id or the filter found nothing). They answer `SummaryItem`s: id, title, version,
updatedAt. An item's details, fields and files (`/items/{id}`, `/files`) hold the secret
values; this module never asks for them, so no secret value is ever read.

1Password's secret references are case-insensitive: names match regardless of case.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime

import httpx
from onepasswordconnectsdk.client import new_client
from onepasswordconnectsdk.config import ClientConfig

from dashboard.models import SecretCheck
from dashboard.sources import MALFORMED, TIMED_OUT, TIMEOUT_SECONDS, UNREACHABLE, Unavailable, failure_for_status

# Vault and item ids: 26 lowercase letters and digits (Connect API spec, `^[\da-z]{26}$`).
ID = re.compile(r"[\da-z]{26}")
MAX_VERSION = 2**31 - 1  # what the check's column holds; 1Password counts edits


def _text(value):
    return isinstance(value, str)


def _version(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_VERSION


# What the Connect API spec documents for the fields read, as sent (Vault, Item).
VAULT_SHAPE = {"id": lambda value: isinstance(value, str) and bool(ID.fullmatch(value)), "name": _text}
ITEM_SHAPE = {"id": _text, "title": _text, "version": _version, "updatedAt": _text}


@dataclass(frozen=True)
class Item:
    version: int
    changed_at: datetime


@dataclass(frozen=True)
class Broken:
    reason: str  # one of SecretCheck.BROKEN_REASONS


class Connect:
    """One session with a Connect server, for one check run (vaults are listed once)."""

    def __init__(self, host, token, *, timeout=TIMEOUT_SECONDS):
        self.status = None
        self.body = b""
        httpx.URL(host)  # raises InvalidURL here, before the SDK's client exists half-made
        config = ClientConfig(timeout=httpx.Timeout(timeout), follow_redirects=False,
                              event_hooks={"response": [self._saw]})
        self.client = new_client(host, token, config=config)
        self._vaults = None
        self._items = {}

    def _saw(self, response):
        # The SDK hides the status and the raw answer; both decide what a failure was.
        response.read()
        self.status, self.body = response.status_code, response.content

    def close(self):
        self.client.session.close()

    def _call(self, shape, method, *args):
        """Call an SDK list method; its answer must be a JSON list of objects whose values pass
        `shape` ({key: check}). Raises Unavailable (or LookupError for a 404)."""
        self.status, self.body = None, b""
        try:
            answer = method(*args)
        except httpx.TimeoutException:
            raise Unavailable(TIMED_OUT) from None
        except (httpx.RequestError, httpx.InvalidURL):
            raise Unavailable(UNREACHABLE) from None
        except Exception:  # noqa: BLE001 - the SDK's errors, its JSON and date parsing: classified by status
            if self.status == 404:
                raise LookupError from None
            raise Unavailable(failure_for_status(self.status) if self.status and self.status >= 300
                              else MALFORMED) from None
        try:
            raw = json.loads(self.body)
        except ValueError:
            raise Unavailable(MALFORMED) from None
        # The SDK turns 7 into "7" and "7" into 7: the types are checked on the answer as sent.
        if (self.status != 200 or not isinstance(raw, list) or len(raw) != len(answer)
                or not all(isinstance(entry, dict) and all(check(entry.get(key)) for key, check in shape.items())
                           for entry in raw)):
            raise Unavailable(MALFORMED)
        return answer

    def vaults(self):
        """[(id, name)] of every vault the token may read."""
        if self._vaults is None:
            try:
                vaults = self._call(VAULT_SHAPE, self.client.get_vaults)
            except LookupError:
                raise Unavailable(MALFORMED) from None
            self._vaults = [(v.id, v.name) for v in vaults]
        return self._vaults

    def vault_id(self, name):
        """The id of the vault a reference names (by id or name), or Broken."""
        for vault_id, _ in self.vaults():
            if vault_id == name:
                return vault_id
        named = [vault_id for vault_id, title in self.vaults() if title.casefold() == name.casefold()]
        if len(named) != 1:
            return Broken(SecretCheck.VAULTS if named else SecretCheck.NO_VAULT)
        return named[0]

    def summaries(self, vault_id, title=None):
        """The vault's SummaryItems, by title filter when `title` is given."""
        key = (vault_id, title)
        if key not in self._items:
            query = f'title eq "{title}"' if title is not None else None
            self._items[key] = self._call(ITEM_SHAPE, self.client.get_items, vault_id, query)
        return self._items[key]

    def item(self, reference):
        """Item(version, changed_at) for a parsed reference (dashboard.references), or Broken."""
        vault_id = self.vault_id(reference.vault)
        if isinstance(vault_id, Broken):
            return vault_id
        name = reference.item.casefold()
        try:
            matches = [i for i in self.summaries(vault_id, reference.item) if i.title.casefold() == name]
            if not matches:  # named by id, or the server's filter minds case
                everything = self.summaries(vault_id)
                matches = ([i for i in everything if i.id == reference.item]
                           or [i for i in everything if i.title.casefold() == name])
        except LookupError:  # the vault went away between the two calls
            return Broken(SecretCheck.NO_VAULT)
        if len(matches) != 1:
            return Broken(SecretCheck.ITEMS if matches else SecretCheck.NO_ITEM)
        changed_at = matches[0].updated_at
        if not isinstance(changed_at, datetime) or changed_at.tzinfo is None:  # RFC 3339 has an offset
            raise Unavailable(MALFORMED)
        return Item(version=matches[0].version, changed_at=changed_at)
