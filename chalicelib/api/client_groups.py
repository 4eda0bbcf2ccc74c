"""The groups a client address's failed sign-ins are counted under (FailedSignIns).

An IPv4 address is one client. A global IPv6 address is counted by its /64 (one
host is given a whole /64 and may take a fresh address for every guess), and also
by its /48 and its /32, each allowed a fixed multiple of one client's rate
(WIDER_IPV6): a /48 is an ordinary allocation to one site, 65,536 /64s, and when
each /64 was counted apart its holder guessed 65,536 times as fast as one host.
The multiples are set so a /32 (an ISP's allocation) has what an IPv4 /24 has,
and a site's many hosts sharing a /48 are not refused for one another's typos.

Addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4,
Teredo, NAT64's 64:ff9b::/96) are counted as that IPv4 client: a 6to4 site has a
whole /48 per IPv4 address, and Teredo puts its relay server, shared by unrelated
clients, in the first 64 bits. Link-local addresses (fe80::/10, any zone) are one
client, the link: a host on it picks such addresses freely.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

# (prefix length, how many times one client's allowance it has), finest first.
WIDER_IPV6: tuple[tuple[int, int], ...] = ((48, 16), (32, 256))

_LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@lru_cache(maxsize=4096)  # every request with a key asks; IPv6 parsing is not free
def address_groups(client: str) -> tuple[tuple[str, int], ...]:
    """(group, multiple of the allowance) for each count this client's failures are
    drawn from, its own group first: the one a key that signs in is trusted under."""
    if ":" not in client:
        return ((client, 1),)
    try:
        address = ipaddress.IPv6Address(client.partition("%")[0])
    except ValueError:
        return ((client, 1),)
    ipv4 = _embedded_ipv4(address)
    if ipv4 is not None:
        return ((str(ipv4), 1),)
    if address in _LINK_LOCAL:
        return ((str(_LINK_LOCAL), 1),)
    if address.is_loopback or address.is_unspecified:
        return ((str(address), 1),)
    number = int(address)
    groups = [(str(ipaddress.IPv6Network((number >> 64 << 64, 64))), 1)]
    for prefix, multiple in WIDER_IPV6:
        drop = 128 - prefix
        groups.append((str(ipaddress.IPv6Network((number >> drop << drop, prefix))), multiple))
    return tuple(groups)


def address_group(client: str) -> str:
    """The group a client's own failures and trusted keys are kept under."""
    return address_groups(client)[0][0]


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 client an IPv6 address stands for, if it is one of the forms that
    carry one (the module's docstring)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # (server, client): the client's public address
    number = int(address)
    if address in _NAT64 or 1 < number < 1 << 32:  # NAT64, or IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(number & 0xFFFFFFFF)
    return None
