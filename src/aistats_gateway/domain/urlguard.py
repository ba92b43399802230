"""SSRF guard for webhook targets: which addresses a delivery may connect to.

One rule, `check_url`, run at create (a bad URL is a 400 naming `webhook.url`) and again at every
delivery, where every address the host resolves to is checked right before connecting and the
connection then goes only to an address that passed (`Target.request_url` carries the checked host,
and the deliverer's resolver answers only with the checked addresses). The host is normalised first
(IDNA UTS #46 mapping, which includes NFKC and case folding, exactly as aiohttp's URL library maps it)
so a Unicode spelling such as `１２７.０.０.１`, `127。0。0。1` or `ⓛocalhost` is judged as the ASCII
host it stands for; aiohttp never consults a resolver for IP-literal hosts, so the literal itself is
checked here too. Allowed: globally routable unicast addresses. Refused: private, loopback, link-local
(169.254/16 incl. cloud metadata, fe80::/10), unspecified (0.0.0.0, ::), CGNAT (100.64/10),
unique-local (fc00::/7), multicast, reserved, documentation/benchmark ranges, and IPv6 forms that
embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo)
whose embedded address is refused. Loopback is allowed only for the local-development hosts
(`localhost`, `127.0.0.1`, `[::1]`) when `[webhooks] allow_local` is set (off by default), and such a
target is `local`: the deliverer then shows nothing of its answers (see deliverer.py).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna
import yarl

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
    """Scheme and literal-host rules; returns (scheme, canonical ASCII host, port). Hostnames are checked at
    resolution.

    A URL that could never be delivered to (unparseable, control characters or spaces, a host name that is
    not a valid DNS name) is refused here too, so it fails at create with a 400 instead of at every delivery."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeTarget(f"the URL is {len(url):,} characters long; at most {MAX_URL_CHARS:,} are allowed")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeTarget("the URL contains spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        written = parts.hostname or ""
        port = parts.port
    except ValueError as exc:  # an unbalanced or non-IP bracketed host ("https://[::1/"), a port out of range
        raise UnsafeTarget(f"'{url}' is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not written:
        raise UnsafeTarget(f"'{url}' is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise UnsafeTarget("webhook URLs must not carry credentials")
    host = canonical_host(written)
    bare = host.rstrip(".")  # "localhost." is "localhost", "127.0.0.1." is 127.0.0.1
    local = bare in LOCAL_HOSTS
    if parts.scheme == "http" and not (local and allow_local):
        raise UnsafeTarget("plain http is only allowed for localhost, 127.0.0.1 and [::1], and only when "
                           "[webhooks] allow_local is set")
    port = port or (443 if parts.scheme == "https" else 80)
    literal = _literal(bare)
    if "[" in parts.netloc and not isinstance(literal, ipaddress.IPv6Address):
        raise UnsafeTarget(f"'{written}' in brackets is not an IPv6 address")
    if literal is not None:
        check_ip(literal, allow_loopback=local and allow_local)
        return parts.scheme, str(literal), port
    if bare.endswith((".localhost", ".local", ".internal")) or (bare == "localhost" and not allow_local):
        raise UnsafeTarget(f"'{host}' is a local-only host name")
    if len(host) > 254 or not _HOST_NAME.match(host):
        raise UnsafeTarget(f"'{written}' is not a valid host name")
    return parts.scheme, host, port


def canonical_host(host: str) -> str:
    """The ASCII host a client connects to: lowercase ASCII as is; anything else through IDNA's UTS #46
    mapping (NFKC, case folding, ideographic full stops as dots), which is what yarl does for aiohttp, so
    the host judged here is the host connected to. Raises UnsafeTarget when no valid host name results."""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError: an empty label, a label over 63 characters, a disallowed character
        raise UnsafeTarget(f"'{host}' is not a valid host name") from None


def target_key(url: str) -> str:
    """`host:port` of a webhook URL, for sharing delivery slots per target; the URL itself if it is invalid
    (its delivery fails at the guard anyway)."""
    try:
        _, host, port = check_url(url, allow_local=True)
    except UnsafeTarget:
        return url[:200]
    return f"{host}:{port}"


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


@dataclass(frozen=True)
class Target:
    """A checked delivery target: connect only to `addresses`, for `host` (canonical ASCII)."""

    scheme: str
    host: str
    port: int
    addresses: list[str]
    local: bool  # a loopback address, allowed by [webhooks] allow_local: its answers are not shown

    def request_url(self, url: str) -> yarl.URL:
        """`url` with the checked host and port in place of whatever the HTTP client would parse itself, so
        no second reading of the URL can connect anywhere else."""
        default = 443 if self.scheme == "https" else 80
        return (yarl.URL(url).with_scheme(self.scheme).with_host(self.host)
                .with_port(None if self.port == default else self.port))


async def resolve_checked(url: str, resolve: Resolver, *, allow_local: bool) -> Target:
    """The checked target; raises if the URL or ANY resolved address is refused.

    A refused resolved address is not named in the message (it is stored on the attempt, which the
    workspace reads: naming it would map internal DNS); the cause, for the operator's log, names it."""
    scheme, host, port = check_url(url, allow_local=allow_local)
    local_name = host.rstrip(".") in LOCAL_HOSTS and allow_local
    literal = _literal(host)
    if literal is not None:
        return Target(scheme, host, port, [str(literal)], _only_if_local(literal))
    addresses = await resolve(host, port)
    if not addresses:
        raise UnsafeTarget(f"'{host}' did not resolve")
    ips = [ipaddress.ip_address(a) for a in addresses]
    for ip in ips:
        try:
            check_ip(ip, allow_loopback=local_name)
        except UnsafeTarget as exc:
            raise UnsafeTarget(f"'{host}' resolves to an address webhooks may not reach "
                               f"(private, loopback, link-local or otherwise not public)") from exc
    return Target(scheme, host, port, [str(ip) for ip in ips], any(_only_if_local(ip) for ip in ips))


def _only_if_local(ip: IP) -> bool:
    """True for an address that passes only because local targets are allowed."""
    try:
        check_ip(ip)
    except UnsafeTarget:
        return True
    return False
