"""Where a producer's webhook may go: public addresses only, however the host is spelled.

Why: a webhook URL is whatever a producer writes. Unchecked, a spec's `callback` makes every
worker POST to the worker host itself (`127.0.0.1`, `localhost`, `2130706433`,
`[::ffff:127.0.0.1]`), to a cloud metadata service (`169.254.169.254`) or to internal services
(`10.x`), and the delivery errors tell open ports from closed ones.

The rule: the host must not be, nor resolve to, a loopback, private, link-local, CGNAT,
unique-local, multicast, reserved or unspecified address (nor an IPv6 form that embeds one:
IPv4-mapped, 6to4, Teredo, NAT64). It is checked twice:
- when a job is accepted (`worker.spec`): the host as written, parsed exactly as the resolver
  would parse it (`getaddrinfo` with `AI_NUMERICHOST`, so `0x7f.1` and `2130706433` are 127.0.0.1),
  and names that are local by definition (`localhost`, `*.localhost`). `worker.enqueue` also
  resolves the name;
- at every delivery (`worker.net.egress`): the name is resolved, every address checked, and the
  connection goes to a checked address, so a name that resolves elsewhere the second time cannot
  rebind it.

WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true lifts the rule (development and tests).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from worker.errors import DestinationRefused

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SockAddr = tuple[int, Any]  #: (address family, socket address), as getaddrinfo gives them

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def why_not_public(address: Address) -> str | None:
    """What kind of non-public address this is ('loopback', 'private', ...), None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = (address.ipv4_mapped or address.sixtofour
                    or (address.teredo[1] if address.teredo else None)
                    or (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
                        if address in _NAT64 else None))
        if embedded is not None:
            return why_not_public(embedded)
    for kind, hit in (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
                      ("link-local", address.is_link_local), ("multicast", address.is_multicast),
                      ("CGNAT", address in _CGNAT), ("private", address.is_private),
                      ("reserved", address.is_reserved), ("not global", not address.is_global)):
        if hit:
            return kind
    return None


def ascii_host(host: str) -> str:
    """The host as a resolver sees it: IDNA-encoded, lower case, without a trailing dot (so that
    `localhost` in full-width letters, and `LOCALHOST.`, are `localhost`). ValueError if it is
    not a valid name."""
    try:
        return host.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        raise ValueError("the host is not a valid domain name") from None


def literal_address(host: str) -> Address | None:
    """The address a numeric host means, in any spelling the resolver accepts; None for a name."""
    try:  # an IPv6 zone (`fe80::1%eth0`) names an interface, not an address: left out
        infos = socket.getaddrinfo(host.split("%", 1)[0], None, flags=socket.AI_NUMERICHOST,
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0])


def url_host_problem(url: str) -> str | None:
    """Why the URL's host may never receive a webhook, from the URL alone (no DNS); None if it
    may (its name is resolved and checked again at delivery)."""
    raw = urlsplit(url).hostname or ""
    try:
        host = ascii_host(raw)
    except ValueError as exc:
        return str(exc)
    if host == "localhost" or host.endswith(".localhost"):
        return "its host is local (localhost)"
    address = literal_address(host)
    if address is not None and (kind := why_not_public(address)):
        return f"its host {address} is not public ({kind})"
    return None


def _addresses(infos: list[Any]) -> list[tuple[SockAddr, Address]]:
    return [((family, sockaddr), ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
            for family, _, _, _, sockaddr in infos]


def resolved_problem(url: str) -> str | None:
    """Why the name in the URL may not receive webhooks, by what it resolves to now (for
    `enqueue`); None when it resolves to public addresses only, or does not resolve now (the
    delivery resolves and checks it again)."""
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(ascii_host(parts.hostname or ""), parts.port or 443,
                                   type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return None
    for _, address in _addresses(infos):
        if kind := why_not_public(address):
            return f"its host resolves to {address}, which is not public ({kind})"
    return None


def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[SockAddr]:
    """Resolve the host and return where to connect; DestinationRefused if it is local, or if
    any address it resolves to is not public (unless private addresses are allowed). A name
    that does not resolve now raises the resolver's own `socket.gaierror` (worth a retry)."""
    try:
        name = ascii_host(host)
    except ValueError as exc:
        raise DestinationRefused(f"{host[:100]}: {exc}") from None
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        raise DestinationRefused(f"{host} is a local name")
    found = _addresses(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))
    for _, address in [] if allow_private else found:
        if kind := why_not_public(address):
            raise DestinationRefused(f"{host} resolves to {address}, which is not public "
                                     f"({kind})")
    return [where for where, _ in found]
