"""The SSRF guard: which URLs an outbound HTTP job may reach, and at which address.

A job's URL comes from whoever may enqueue jobs, and the worker runs inside the
network (on AWS, next to the instance metadata service). So the guard denies by
default and decides on three things, in order:

1. The URL's shape. Only http and https; no credentials (`user@host` is the
   classic way to make a URL look like it goes somewhere else); no percent-
   encoded or otherwise odd hosts; numeric hosts only in canonical dotted-quad
   or bracketed IPv6 form, so `2130706433`, `0x7f000001`, `0177.0.0.1` and
   `127.1` (which C resolvers read as 127.0.0.1) are refused outright.
2. The host. It must be on the allowlist: a name, a `*.suffix` wildcard, or an
   IP/CIDR entry (for IP literals and for explicitly trusted networks).
3. Every address the host resolves to. Cloud metadata addresses (169.254.169.254,
   fd00:ec2::254, the ECS/EKS credential endpoints and their kin, also when
   embedded in NAT64 or 6to4 addresses) are never reached, whatever the
   settings say. Unspecified, multicast, broadcast, reserved and IPv4-mapped/
   compatible IPv6 addresses are never reached either. Loopback, private and
   CGNAT addresses are reached when `allow_private` is set; these and the other
   non-public ranges (link-local, documentation, ...) are also reached when an
   allowlisted CIDR lies inside the range: `10.0.0.0/8` or `10.1.2.3` opens
   that part of 10/8, but `0.0.0.0/0` or `::/0` (which merely contain the
   range) open only public addresses. All answers must pass, and the caller
   connects to one of those checked addresses (never resolving the name
   again), so a DNS answer that changes between check and connect (rebinding)
   cannot redirect the request.

Redirects are followed by the caller one hop at a time, each hop through this
same guard. A refusal is a PermanentError: retrying cannot make it allowed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from chalicelib.errors import PermanentError
from chalicelib.ports import PortSet

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

MAX_URL_LENGTH = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}


class Refused(PermanentError):
    """The guard refused a URL or an address; the message says which rule.

    The message is for the operator's log. `public` is what the job's tenant reads: a
    refusal found by resolving a name tells them the same whatever the name's fate (no
    such name, a loopback or a private address), since telling those apart let a
    tenant map the internal network's names and their kinds of address through
    callback URLs and http_request jobs."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


def _unreachable_name(host: str, detail: str) -> Refused:
    return Refused(detail, f"host {host!r} does not resolve to an address this service may reach")


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Never reached, whatever the allowlist says: connecting to these either means
# "this host" (0.0.0.0 reaches local services on Linux) or is not unicast.
NEVER = _nets(
    "0.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",  # reserved, includes the broadcast address
    "::/128",
    "::ffff:0:0/96",  # IPv4-mapped IPv6: ::ffff:127.0.0.1 reaches 127.0.0.1
    "ff00::/8",
)
# Cloud metadata and credential endpoints: never reached, whatever the allowlist
# or allow_private say (a job that reads them walks off with the worker's role).
METADATA = _nets(
    "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, Oracle ... instance metadata
    "169.254.170.2/32",  # AWS ECS task metadata and credentials
    "169.254.170.23/32",  # AWS EKS Pod Identity agent
    "169.254.0.23/32",  # Tencent Cloud metadata
    "100.100.100.200/32",  # Alibaba Cloud metadata (inside CGNAT, which allow_private opens)
    "168.63.129.16/32",  # Azure WireServer (public address space)
    "192.0.0.192/32",  # Oracle Cloud legacy metadata
    "fd00:ec2::254/128",  # AWS instance metadata over IPv6 (inside the private fc00::/7)
    "fd00:ec2::23/128",  # AWS EKS Pod Identity agent over IPv6
    "fd20:ce::254/128",  # GCP metadata over IPv6
)
# Non-public ranges `allow_private` opens (self-hosted services on a LAN or VPC).
PRIVATE = {
    "loopback": _nets("127.0.0.0/8", "::1/128"),
    "private": _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
    "carrier-grade NAT": _nets("100.64.0.0/10"),
}
# Non-public ranges only an allowlisted CIDR lying inside them opens.
SPECIAL = {
    "link-local": _nets("169.254.0.0/16", "fe80::/10"),
    "IETF protocol assignment": _nets("192.0.0.0/24", "2001::/23"),
    "documentation": _nets(
        "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"
    ),
    "benchmarking": _nets("198.18.0.0/15", "2001:2::/48"),
    "6to4 relay anycast": _nets("192.88.99.0/24"),
    "discard-only": _nets("100::/64"),
    "local-use NAT64": _nets("64:ff9b:1::/48"),
    "site-local (deprecated)": _nets("fec0::/10"),
    # Everything outside 2000::/3 that no more specific range above names.
    "non-global-unicast IPv6": _nets("::/3", "4000::/2", "8000::/1"),
}
# Every named range, most specific first: an address belongs to the first that holds it.
_RANGES: tuple[tuple[str, IPNetwork, bool], ...] = tuple(
    sorted(
        [(label, net, True) for label, nets in PRIVATE.items() for net in nets]
        + [(label, net, False) for label, nets in SPECIAL.items() for net in nets],
        key=lambda item: -item[1].prefixlen,
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
SIXTOFOUR = ipaddress.ip_network("2002::/16")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d; :: and ::1 aside

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_PORT = re.compile(r"^[0-9]{1,5}$")


# -- the policy --------------------------------------------------------------
HTTP_ALLOWLIST = "SPOOL_HTTP_ALLOWLIST"  # the http_request handler's list


@dataclass(frozen=True)
class Policy:
    """What the allowlist setting says: names, wildcard suffixes and networks."""

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # "*.example.com" is stored as ".example.com"
    networks: tuple[IPNetwork, ...] = ()
    allow_private: bool = False
    setting: str = HTTP_ALLOWLIST  # where the list comes from, for refusals to name
    ports: PortSet | None = None  # None: any port (the list names the hosts one by one)
    ports_setting: str = ""  # where the ports come from, for refusals to name

    @property
    def private_setting(self) -> str:
        """The flag beside the allowlist that opens the private ranges, for refusals to
        name (SPOOL_HTTP_ALLOW_PRIVATE, SPOOL_WEBHOOK_ALLOW_PRIVATE): a newcomer's
        callback to 127.0.0.1 was refused without a word of what opens it."""
        return self.setting.replace("ALLOWLIST", "ALLOW_PRIVATE")

    @classmethod
    def parse(
        cls, entries: Iterable[str], allow_private: bool = False, setting: str = HTTP_ALLOWLIST
    ) -> Policy:
        """Read allowlist entries; a malformed one is a configuration error (ValueError)."""
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"allowlist entry {raw!r} is not a valid CIDR") from None
                continue
            bracketed = entry.startswith("[") and entry.endswith("]")
            literal = _ip_literal(entry[1:-1] if bracketed else entry)
            if literal is not None:
                networks.append(ipaddress.ip_network(literal))
                continue
            wildcard = entry.startswith("*.")
            try:
                name = normalize_host(entry[2:] if wildcard else entry)
            except Refused as exc:
                raise ValueError(f"allowlist entry {raw!r}: {exc}") from None
            if _ip_literal(name) is not None or _looks_numeric(name):
                raise ValueError(f"allowlist entry {raw!r} is a non-canonical IP address")
            if wildcard:
                suffixes.append("." + name)
            else:
                hosts.add(name)
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks), allow_private, setting)

    def host_allowed(self, host: str) -> bool:
        if host in self.hosts:
            return True
        return any(host.endswith(suffix) for suffix in self.suffixes)

    @property
    def empty(self) -> bool:
        """Nothing at all is reachable (the default: SPOOL_HTTP_ALLOWLIST unset)."""
        return not (self.hosts or self.suffixes or self.networks)

    def explicitly_allows(self, ip: IPAddress) -> bool:
        """An IP/CIDR entry holds the address: an IP literal host matches the allowlist."""
        return any(ip.version == net.version and ip in net for net in self.networks)

    def opens(self, ip: IPAddress, block: IPNetwork) -> bool:
        """An entry holding the address lies inside the non-public block: `10.0.0.0/8`
        or `10.1.0.0/16` name (part of) 10/8, `0.0.0.0/0` merely contains it."""
        return any(
            ip.version == net.version and ip in net and net.subnet_of(block)  # type: ignore[arg-type]
            for net in self.networks
        )


# -- URL shape -----------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A URL the guard has parsed: where to connect and what to send."""

    url: str
    scheme: str
    host: str  # lower-case ASCII, no trailing dot; IPv6 without brackets
    port: int
    path: str  # what goes on the request line: path and query, ASCII
    ip: IPAddress | None  # set when the host is an IP literal

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def _invisible(c: str) -> bool:
    """Whitespace and controls beyond ASCII (U+2028, U+00A0, U+0085, a zero-width
    space): a URL people read is not the URL that is sent. Also an unpaired UTF-16
    surrogate (json.loads makes one of "\\ud800"), which is no character and which
    quote() cannot encode."""
    return ord(c) > 0x7F and (
        c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Zs")
    )


def parse_url(url: str) -> Target:
    """Check a URL's shape and normalize it; everything odd is refused, not repaired."""
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" or _invisible(c) for c in url):
        raise Refused("URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise Refused(f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise Refused(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    netloc = parts.netloc
    if not netloc:
        raise Refused("URL has no host")
    if "@" in netloc:
        raise Refused("URL must not contain credentials (user@host)")
    if "%" in netloc:
        raise Refused("percent-encoded characters are not allowed in the host")
    raw_host, port = _split_netloc(netloc, scheme)
    if raw_host.startswith("["):
        ip: IPAddress | None = _bracketed_ipv6(raw_host)
        host = str(ip)
    else:
        host = normalize_host(raw_host)
        ip = _ip_literal(host)
        if ip is None and _looks_numeric(host):
            raise Refused(f"host {raw_host!r} is a non-canonical IP address encoding")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # Non-ASCII in the path is percent-encoded; existing escapes are kept as they are.
    path = quote(path, safe="/?&=%:@!$'()*+,;-._~[]")
    shown_host = f"[{host}]" if ":" in host else host
    default = port == DEFAULT_PORTS[scheme]
    normalized = f"{scheme}://{shown_host}{'' if default else f':{port}'}{path}"
    return Target(normalized, scheme, host, port, path, ip)


def _split_netloc(netloc: str, scheme: str) -> tuple[str, int]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise Refused("unterminated IPv6 address in URL")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise Refused("unexpected characters after the IPv6 address")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = netloc.partition(":")
        if ":" in port_text:
            raise Refused("more than one ':' in the host (unbracketed IPv6?)")
    if not port_text:
        if netloc.endswith(":"):
            raise Refused("empty port in URL")
        return host, DEFAULT_PORTS[scheme]
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise Refused(f"invalid port {port_text!r}")
    return host, int(port_text)


def _bracketed_ipv6(raw: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(raw[1:-1])
    except ValueError:
        raise Refused(f"invalid IPv6 address {raw!r}") from None


def normalize_host(raw: str) -> str:
    """Lower-case ASCII (IDNA) with one trailing dot removed, or Refused."""
    host = raw
    if not host.isascii():
        # IDNA applies NFKC, so full-width digits become ASCII ones here and
        # are then classified like any other numeric host.
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise Refused(f"host {raw!r} is not a valid internationalized name") from None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > 253:
        raise Refused(f"invalid host {raw!r}")
    if not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise Refused(f"invalid host {raw!r}")
    return host


def _ip_literal(host: str) -> IPAddress | None:
    """Canonical IPv4 dotted-quad or a plain IPv6 address; None otherwise."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _looks_numeric(host: str) -> bool:
    """A host whose last label is a number is meant as an address, not a DNS name
    (no top-level domain is numeric); resolvers would accept many such forms."""
    return bool(_NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]))


# -- addresses -----------------------------------------------------------------
def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 or 6to4 address leads to."""
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in SIXTOFOUR:
        return ip.sixtofour
    return None


def _bits(value: int, start: int, length: int) -> int:
    """`length` bits of a 128-bit value, counting from the most significant bit."""
    return (value >> (128 - start - length)) & ((1 << length) - 1)


def _rfc6052_candidates(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an RFC 6052 translator with a /48../96 prefix could read
    out of this address (bits 64-71 are skipped, as the RFC lays them out)."""
    x = int(ip)
    forms = (
        (_bits(x, 48, 16) << 16) | _bits(x, 72, 16),
        (_bits(x, 56, 8) << 24) | _bits(x, 72, 24),
        _bits(x, 72, 32),
        _bits(x, 96, 32),
    )
    return [ipaddress.IPv4Address(v) for v in forms]


def leads_to(ip: IPAddress) -> list[IPAddress]:
    """The address itself and every IPv4 address it may reach by translation or
    tunnelling: mapped, compatible, NAT64 (well-known and local-use), 6to4, Teredo."""
    found: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            found.append(ip.ipv4_mapped)
        if ip in IPV4_COMPATIBLE:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        inner = embedded_ipv4(ip)
        if inner is not None:
            found.append(inner)
        if ip in LOCAL_NAT64:
            found.extend(_rfc6052_candidates(ip))
        if ip.teredo is not None:
            found.extend(ip.teredo)
    return found


def metadata_address(ip: IPAddress) -> IPAddress | None:
    """The cloud metadata address this address is or leads to, if any."""
    for candidate in leads_to(ip):
        if any(candidate.version == net.version and candidate in net for net in METADATA):
            return candidate
    return None


def why_refused(ip: IPAddress, policy: Policy) -> str | None:
    """None when the address may be reached; otherwise the rule it breaks."""
    metadata = metadata_address(ip)
    if metadata is not None:
        via = "" if metadata == ip else f" (it leads to {metadata})"
        return f"{ip} is a cloud metadata address{via}; never reachable"
    if any(ip.version == net.version and ip in net for net in NEVER):
        return f"{ip} is never reachable (unspecified, multicast, reserved or IPv4-mapped)"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in IPV4_COMPATIBLE and int(ip) > 1:
            return f"{ip} is never reachable (IPv4-compatible IPv6)"
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = why_refused(inner, policy)
            if reason is not None:
                return f"{ip} embeds {inner}: {reason}"
            if ip in NAT64:
                return None  # DNS64 answers for IPv4-only hosts: judged by what they embed
    for label, block, private in _RANGES:
        if ip.version == block.version and ip in block:
            if (private and policy.allow_private) or policy.opens(ip, block):
                return None
            return f"{ip} is a {label} address"
    if not ip.is_global:
        # Non-public but in no range named above: only an entry naming the address opens it.
        if policy.opens(ip, ipaddress.ip_network(ip)):
            return None
        return f"{ip} is not a public address"
    return None


def check_address(ip: IPAddress, policy: Policy) -> None:
    reason = why_refused(ip, policy)
    if reason is not None:
        raise Refused(f"address refused: {reason}{_opener(ip, policy)}")


def _opener(ip: IPAddress, policy: Policy) -> str:
    """What opens a refused address the allowlist let through: the private flag, for
    loopback, private and CGNAT ranges (and an address embedding one); nothing else
    opens the others. Not said of an address off the allowlist, which the flag alone
    does not open."""
    inner = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    candidates = [ip] if inner is None else [ip, inner]
    for candidate in candidates:
        for _, block, private in _RANGES:
            if private and candidate.version == block.version and candidate in block:
                return f"; {policy.private_setting} opens it"
    return ""


def system_resolver(host: str, port: int) -> list[str]:
    """The OS resolver; the guard checks what it answers before anything connects."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


class LookupFailed(Exception):
    """DNS did not answer (may be temporary): the job is retried."""


# The resolver's answers that a name has no address, for good: it does not exist
# (EAI_NONAME), it exists with no address record (EAI_NODATA), or none of the family
# asked for (EAI_ADDRFAMILY). All three are the one uniform refusal: EAI_NODATA went
# out as a retried LookupFailed whose errno text reached the tenant, so under a
# wildcard allowlist a callback told a name that exists from one that does not.
NO_ADDRESS = frozenset(
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
    if hasattr(socket, name)
)


def resolve(
    target: Target, policy: Policy, resolver: Resolver = system_resolver
) -> list[IPAddress]:
    """The checked addresses to connect to, in resolver order; Refused if any fails."""
    if target.ip is not None:
        check_address(target.ip, policy)
        return [target.ip]
    try:
        answers = resolver(target.host, target.port)
    except socket.gaierror as exc:
        if exc.errno in NO_ADDRESS:
            known = "does not exist" if exc.errno == socket.EAI_NONAME else "has no address"
            detail = f"host {target.host!r} {known} (DNS: {exc})"
            raise _unreachable_name(target.host, detail) from None
        raise LookupFailed(f"DNS lookup for {target.host!r} failed: {exc}") from exc
    addresses: list[IPAddress] = []
    for answer in answers:
        # A scoped answer (fe80::1%eth0) is link-local, refused below without the scope.
        try:
            ip = ipaddress.ip_address(answer.split("%", 1)[0])
        except ValueError:
            detail = f"resolver answered a non-address {answer!r} for {target.host!r}"
            raise _unreachable_name(target.host, detail) from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise _unreachable_name(target.host, f"host {target.host!r} resolved to no address")
    for ip in addresses:
        reason = why_refused(ip, policy)
        if reason is not None:
            reason += _opener(ip, policy)
            detail = f"host {target.host!r} resolves to a refused address: {reason}"
            raise _unreachable_name(target.host, detail)
    return addresses


def check_url(
    url: str, policy: Policy, resolver: Resolver = system_resolver
) -> tuple[Target, list[IPAddress]]:
    """The whole guard for one hop: shape, allowlist, then every resolved address."""
    target = check_static(url, policy)
    return target, resolve(target, policy, resolver)


def check_static(url: str, policy: Policy) -> Target:
    """Everything the guard can decide without DNS: shape, allowlist match, and the
    address of an IP literal. Enqueue runs this, so a URL that could never be
    allowed is refused (422) instead of dying at run time."""
    if policy.empty:
        raise Refused(f"the allowlist ({policy.setting}) is empty, so no URL is reachable")
    target = parse_url(url)
    if policy.ports is not None and target.port not in policy.ports:
        raise Refused(
            f"port {target.port} is not one this service may reach "
            f"({policy.ports_setting}: {policy.ports.text})"
        )
    if target.ip is not None:
        if not policy.explicitly_allows(target.ip):
            reason = why_refused(target.ip, policy)
            also = f" ({reason})" if reason else ""
            raise Refused(f"IP address {target.host} is not on the allowlist{also}")
        check_address(target.ip, policy)
    elif not policy.host_allowed(target.host):
        raise Refused(f"host {target.host!r} is not on the allowlist ({policy.setting})")
    return target
