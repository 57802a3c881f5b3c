"""Where alert webhooks may go: public hosts only, unless the deployment allows private
targets (ALERT_ALLOW_PRIVATE_TARGETS). Otherwise an admin could point a channel at the cloud
metadata service (169.254.169.254), the internal network or loopback, and "send test" would
tell them which ports answer."""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


def _internal(address):
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # Not global: private, loopback, link-local, shared (100.64/10), reserved, unspecified...
    return not ip.is_global or ip.is_multicast


def target_problem(url, *, resolve=True):
    """Why an alert may not be sent to `url`, or "". A host name is resolved and every
    address it has must be public; a name that does not resolve is left to the send, which
    then fails to connect."""
    if settings.ALERT_ALLOW_PRIVATE_TARGETS:
        return ""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return "the URL is not valid"
    if not host:
        return "the URL has no host"
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if not resolve:
            return ""
        try:
            addresses = [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]
        except (OSError, UnicodeError):
            return ""
    if any(_internal(address) for address in addresses):
        return (f"{host} is a private, loopback or link-local address; alert webhooks go to public "
                "hosts unless the deployment sets ALERT_ALLOW_PRIVATE_TARGETS=1")
    return ""
