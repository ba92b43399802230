"""SSRF guard for webhook targets: which addresses a delivery may connect to.

Checked twice: the URL at create (scheme, and a literal IP host), and at every delivery every
address the host resolves to, right before connecting; the connection then goes only to an address
that passed. aiohttp never consults a resolver for IP-literal hosts, so the literal itself is checked
here too. Allowed: globally routable unicast addresses. Refused: private, loopback, link-local
(169.254/16 incl. cloud metadata, fe80::/10), unspecified (0.0.0.0, ::), CGNAT (100.64/10),
unique-local (fc00::/7), multicast, reserved, documentation/benchmark ranges, and IPv6 forms that
embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo)
whose embedded address is refused. Loopback is allowed only for the local-development hosts
(`localhost`, `127.0.0.1`, `[::1]`) when the setting allows it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class UnsafeTarget(ValueError):
    """The webhook target is not allowed; the message says why."""


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def check_ip(ip: IP, *, allow_loopback: bool = False) -> None:
    """Raise UnsafeTarget unless a delivery may connect to `ip`."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            try:
                check_ip(embedded, allow_loopback=allow_loopback)
            except UnsafeTarget as exc:
                raise UnsafeTarget(f"{ip} embeds {embedded}: {exc}") from None
            return
    if ip in _METADATA:
        raise UnsafeTarget(f"{ip} is a cloud metadata address")
    if ip.is_loopback:
        if allow_loopback:
            return
        raise UnsafeTarget(f"{ip} is a loopback address")
    if ip.is_unspecified:
        raise UnsafeTarget(f"{ip} is the unspecified (wildcard) address")
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        raise UnsafeTarget(f"{ip} is in the shared carrier-grade NAT range 100.64.0.0/10")
    if ip.is_link_local:
        raise UnsafeTarget(f"{ip} is a link-local address")
    if ip.is_multicast:
        raise UnsafeTarget(f"{ip} is a multicast address")
    if ip.is_private or ip.is_reserved or not ip.is_global:
        raise UnsafeTarget(f"{ip} is not a public address")


MAX_URL_CHARS = 2048
_HOST_NAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$")


def check_url(url: str, *, allow_local: bool) -> tuple[str, str, int]:
    """Scheme and literal-host rules; returns (scheme, host, port). Hostnames are checked at resolution.

    A URL that could never be delivered to (unparseable, control characters or spaces, a host name that is
    not a valid DNS name) is refused here too, so it fails at create with a 400 instead of at every delivery."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeTarget(f"the URL is {len(url):,} characters long; at most {MAX_URL_CHARS:,} are allowed")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeTarget("the URL contains spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError as exc:  # e.g. an unbalanced or non-IP bracketed host: "https://[::1/"
        raise UnsafeTarget(f"'{url}' is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise UnsafeTarget(f"'{url}' is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise UnsafeTarget("webhook URLs must not carry credentials")
    local = host in LOCAL_HOSTS
    if parts.scheme == "http" and not (local and allow_local):
        raise UnsafeTarget("plain http is only allowed for localhost, 127.0.0.1 and [::1] in local development")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeTarget(f"invalid port in '{url}'") from exc
    literal = _literal(host)
    if "[" in parts.netloc and not isinstance(literal, ipaddress.IPv6Address):
        raise UnsafeTarget(f"'{host}' in brackets is not an IPv6 address")
    if literal is not None:
        check_ip(literal, allow_loopback=local and allow_local)
        return parts.scheme, host, port
    bare = host.rstrip(".")  # "localhost." is "localhost"
    if bare.endswith((".localhost", ".local", ".internal")) or (bare == "localhost" and not allow_local):
        raise UnsafeTarget(f"'{host}' is a local-only host name")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:  # an empty label ("a..b"), a label over 63 characters, ...
        raise UnsafeTarget(f"'{host}' is not a valid host name") from None
    if len(ascii_host) > 254 or not _HOST_NAME.match(ascii_host):
        raise UnsafeTarget(f"'{host}' is not a valid host name")
    return parts.scheme, host, port


def _literal(host: str) -> IP | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    # Shorthand forms that resolvers accept as IPv4 literals: 2130706433, 0x7f000001, 127.1, 0177.0.0.1
    try:
        packed = socket.inet_aton(host)
    except (OSError, ValueError, UnicodeError):  # not an address; ValueError: an embedded NUL
        return None
    return ipaddress.IPv4Address(packed)


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_checked(url: str, resolve: Resolver, *, allow_local: bool) -> tuple[str, str, int, list[str]]:
    """(scheme, host, port, addresses that passed); raises if the URL or ANY resolved address is refused."""
    scheme, host, port = check_url(url, allow_local=allow_local)
    literal = _literal(host)
    if literal is not None:
        return scheme, host, port, [str(literal)]
    addresses = await resolve(host, port)
    if not addresses:
        raise UnsafeTarget(f"'{host}' did not resolve")
    local = host in LOCAL_HOSTS and allow_local
    for address in addresses:
        check_ip(ipaddress.ip_address(address), allow_loopback=local)
    return scheme, host, port, addresses
