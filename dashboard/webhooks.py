"""Where alert webhooks may go, and the one way they are sent.

An admin chooses a webhook URL and the server sends to it. Unchecked, that URL steers the
server's request at the cloud metadata service (169.254.169.254), the internal network or
loopback, and the answer tells which ports are open (issues 11 and 15). So:

- The URL is read by urllib3's parser, the one requests sends with, and by urlsplit. A URL
  the two read differently, or one with a backslash, userinfo, spaces or non-ASCII, is refused.
- The host is resolved once. Every address must be public (`internal`), unless the deployment
  names the host or address in ALERT_ALLOWED_PRIVATE_HOSTS. The request then goes to that
  vetted address: the connection is pinned, the URL's host stays in the Host header, in SNI
  and in the certificate check, so DNS that changes between check and send changes nothing.
- No redirect is followed, no proxy or .netrc is taken from the environment, timeouts are short.
"""

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

TIMEOUT = (3.05, 5)  # connect, read: a slow receiver must not hold a worker.
USER_AGENT = "lucia-continuity-dashboard"

# IPv6 forms that carry an IPv4 address are judged by that address (mapped, NAT64 and 6to4
# below). These carry one where it cannot be read reliably, or are never a webhook receiver.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NEVER = [ipaddress.ip_network(net) for net in (
    "::/96",           # IPv4-compatible (::a.b.c.d), deprecated; also :: and ::1
    "64:ff9b:1::/48",  # local-use NAT64: the IPv4 address sits where its prefix length puts it
    "2001::/32",       # Teredo
    "fec0::/10",       # site-local, deprecated
)]
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


class NotSent(Exception):
    """A webhook was refused or failed. The message is for the server log: it names at most
    the host, never the URL's path, query or userinfo (a Slack URL is a credential)."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str         # lower case, IPv6 without brackets
    port: int
    netloc: str       # the Host header: host, and port when the URL has one
    address: object   # the ip_address when the host is one, else None


def parse_destination(url):
    """The webhook URL as the HTTP client will read it. Raises NotSent when anything could
    make it read differently elsewhere."""
    if not url.isascii() or "\\" in url or any(ch <= " " or ch == "\x7f" for ch in url):
        raise NotSent("the URL holds a backslash, a space, a control or a non-ASCII character")
    try:
        theirs, ours = parse_url(url), urlsplit(url)
        our_port = ours.port
    except (LocationParseError, ValueError):
        raise NotSent("the URL cannot be parsed") from None
    if theirs.scheme not in ("http", "https"):
        raise NotSent("only http and https URLs are sent")
    if theirs.auth is not None or "@" in ours.netloc:
        raise NotSent("the URL holds a user name or password (user@host)")
    host = (theirs.host or "").strip("[]")
    if not host:
        raise NotSent("the URL has no host")
    # urllib3 (which sends) and urlsplit (which the rest of Python reads with) must agree on
    # every part; where they differ, one of them would be checked and the other used.
    read = (theirs.scheme, host, theirs.port, theirs.path or "", theirs.query or "", theirs.fragment or "")
    if read != (ours.scheme, ours.hostname, our_port, ours.path, ours.query, ours.fragment):
        raise NotSent("urllib3 and urlsplit read the URL differently")
    default_port = 443 if theirs.scheme == "https" else 80
    return Destination(scheme=theirs.scheme, host=host, port=theirs.port or default_port, netloc=theirs.netloc,
                       address=_literal_address(host))


def _literal_address(host):
    """The host as an ip_address, None for a name. Shorthand IPv4 (2130706433, 0x7f.1, 127.1),
    which the system resolver would turn into an address, is refused."""
    if "%" in host:
        raise NotSent("an IPv6 zone (%) is not allowed")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise NotSent("the IPv6 address is not valid") from None
    if _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        try:
            return ipaddress.IPv4Address(host)
        except ValueError:
            raise NotSent("write an IPv4 address as four decimal numbers (a.b.c.d)") from None
    return None


def internal(ip):
    """Whether `ip` is anything but a public unicast address: private, loopback, link-local,
    shared (100.64/10), multicast, reserved, unspecified. An IPv6 address that carries an IPv4
    one (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16) is judged by that IPv4 address."""
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return internal(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return internal(ip.sixtofour)
        if ip in _NAT64:
            return internal(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(ip in net for net in _NEVER):
            return True
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


def _allowed_private():
    """ALERT_ALLOWED_PRIVATE_HOSTS, split into host names and addresses."""
    names, addresses = set(), set()
    for entry in settings.ALERT_ALLOWED_PRIVATE_HOSTS:
        entry = entry.strip().strip("[]").rstrip(".").lower()
        try:
            addresses.add(ipaddress.ip_address(entry))
        except ValueError:
            names.add(entry)
    return names, addresses


def _vet(target, addresses):
    names, allowed = _allowed_private()
    if target.host.rstrip(".") in names:
        return
    for address in addresses:
        if internal(address) and address not in allowed:
            where = f"{address} is" if target.address else f"{target.host} resolves to {address},"
            raise NotSent(f"{where} an internal address (ALERT_ALLOWED_PRIVATE_HOSTS does not name it)")


def url_problem(url):
    """Why an alert channel may not be saved with `url`, or "". Only the URL itself is read:
    a literal address is checked here, a name at every send (where it is resolved), so that
    saving tells nothing about the network (no DNS or reachability oracle)."""
    try:
        target = parse_destination(url)
        if target.address is not None:
            _vet(target, [target.address])
    except NotSent as refusal:
        return str(refusal)
    return ""


def _resolve(target, resolver):
    if target.address is not None:
        return [target.address]
    try:
        infos = resolver(target.host, target.port, type=socket.SOCK_STREAM)
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    except (OSError, UnicodeError, ValueError):
        addresses = []
    if not addresses:
        raise NotSent(f"{target.host} does not resolve")
    return addresses


class _PinnedAdapter(HTTPAdapter):
    """Connects to one vetted address, whatever the URL's host resolves to by now. The host
    stays in SNI and the certificate check (here) and in the Host header (set by the caller)."""

    def __init__(self, address, host):
        super().__init__(max_retries=0)
        self.address, self.host = str(address), host

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs = {**pool_kwargs, "server_hostname": self.host, "assert_hostname": self.host}
        return {**host_params, "host": self.address}, pool_kwargs


def post_json(url, payload, *, resolver=socket.getaddrinfo, verify=True, timeout=TIMEOUT):
    """POST `payload` as JSON to `url`: resolve its host once (with `resolver`, getaddrinfo's
    signature), vet every address, connect to the first. Only a 2xx answer counts; a redirect
    is not followed. Raises NotSent for every refusal and failure. `verify` is requests'
    (a CA bundle path for a test's own CA)."""
    target = parse_destination(url)
    addresses = _resolve(target, resolver)
    _vet(target, addresses)
    adapter = _PinnedAdapter(addresses[0], target.host)
    with requests.Session() as session:
        session.trust_env = False  # no proxy (which would resolve the name again), no .netrc
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            with session.post(url, json=payload, headers={"Host": target.netloc, "User-Agent": USER_AGENT},
                              timeout=timeout, allow_redirects=False, stream=True, verify=verify) as response:
                status = response.status_code
        except requests.Timeout:
            raise NotSent(f"{target.host}: timed out") from None
        except requests.ConnectionError:
            raise NotSent(f"{target.host}: could not connect") from None
        except requests.RequestException as error:
            raise NotSent(f"{target.host}: {type(error).__name__}") from None
    if not 200 <= status < 300:
        raise NotSent(f"{target.host}: HTTP {status}")
