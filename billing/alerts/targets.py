"""Where a webhook endpoint may point: public addresses only, unless the deployment allows
private targets (``BILLING_WEBHOOK_ALLOW_PRIVATE_TARGETS=1``: self-hosted receivers, tests).

A URL whose host is, or resolves to, a loopback, private, link-local (169.254.169.254, the
cloud metadata address, among them), multicast, unspecified, reserved or otherwise
non-global address is refused with ``webhook_target_forbidden`` (``param: url``) when an
endpoint is created or its URL changed (``billing.alerts.endpoints``). A name that does not
resolve then is accepted: it is checked again at every delivery.

At delivery (``billing.alerts.delivery``) the host is resolved again and every address
checked (DNS may have changed since: rebinding), then the POST goes to the address that was
checked (``pin``): the URL's host replaced by that IP, the ``Host`` header and the TLS server
name (SNI, certificate check) kept as the URL's host. So a second, different DNS answer
cannot send it elsewhere. The implicit ``env`` endpoint (``BILLING_WEBHOOK_URL``) is the
operator's own setting and is not filtered. Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from billing.errors import BillingError, ErrorCode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# named in the message (all of them are non-global anyway)
METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")}


def _system_resolve(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


# (host, port) -> the host's addresses as text; socket.gaierror when the name does not resolve
resolve: Callable[[str, int], list[str]] = _system_resolve


def why_forbidden(address: IPAddress) -> str | None:
    """Why a webhook may not be sent to ``address`` (None: a public address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return "a cloud metadata address"
    for test, name in ((address.is_loopback, "loopback"), (address.is_link_local, "link-local"),
                       (address.is_multicast, "multicast"), (address.is_unspecified, "unspecified"),
                       (address.is_private, "private"), (address.is_reserved, "reserved")):
        if test:
            return f"a {name} address"
    if not address.is_global:
        return "not a public address"
    return None


def _forbidden(url: str, address: str, why: str) -> BillingError:
    return BillingError(f"url: {url[:200]!r} reaches {address}, {why}; webhooks go to public addresses only "
                        "(BILLING_WEBHOOK_ALLOW_PRIVATE_TARGETS=1 allows private ones)",
                        code=ErrorCode.WEBHOOK_TARGET_FORBIDDEN, param="url")


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme.lower() == "https" else 80)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def checked_addresses(url: str) -> list[IPAddress]:
    """The addresses the URL's host resolves to, each public; raises
    ``webhook_target_forbidden`` for the first that is not, and lets ``socket.gaierror``
    (an unresolvable name) through."""
    host, port = _host_port(url)
    literal = _literal(host)
    found = [literal] if literal is not None else [ipaddress.ip_address(a.split("%", 1)[0])
                                                   for a in resolve(host, port)]
    for address in found:
        why = why_forbidden(address)
        if why is not None:
            raise _forbidden(url, str(address), why)
    return found


def check_new(url: str, allow_private: bool) -> None:
    """At create or update: refuse a URL that reaches a non-public address now."""
    if allow_private:
        return
    try:
        checked_addresses(url)
    except (socket.gaierror, UnicodeError, OSError):
        return  # not resolvable now: checked again at each delivery


def pin(url: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(the URL with its host replaced by a checked address, extra headers, httpx request
    extensions) for one delivery; raises ``webhook_target_forbidden`` or ``OSError``."""
    host, _port = _host_port(url)
    address = checked_addresses(url)[0]
    if _literal(host) is not None:
        return url, {}, {}
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    shown = f"[{address}]" if address.version == 6 else str(address)
    pinned = (userinfo + "@" if userinfo else "") + shown + (f":{parts.port}" if parts.port else "")
    extensions = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
    return urlunsplit(parts._replace(netloc=pinned)), {"Host": hostport}, extensions
