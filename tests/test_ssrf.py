"""The SSRF guard against a corpus of forbidden targets.

Every test here runs inside the network jail from test_http_request (autouse):
nothing can connect outside 127.0.0.0/8 and DNS answers only from the test's
table, so the corpus is also pushed through the real handler without risk.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from chalicelib import ssrf
from chalicelib.builtin import http_request as hr
from chalicelib.clock import FakeClock
from chalicelib.errors import ValidationFailed
from chalicelib.handlers import JobContext, registry
from chalicelib.ids import new_job_id
from chalicelib.models import Job
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.memory import MemoryStore
from tests.test_http_request import Jail, jailed


@pytest.fixture(autouse=True)
def jail(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jail]:
    with jailed(monkeypatch) as state:
        yield state


PUBLIC = "93.184.216.34"
ALLOWLIST = f"allowed.test, *.allowed.test, {PUBLIC}"
POLICY = ssrf.Policy.parse(ALLOWLIST.split(","))

# Each URL must be refused by the realistic policy above (nothing private opened).
FORBIDDEN_URLS = [
    # loopback, in every spelling a resolver might accept
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/",
    "http://127.0.0.1./",
    "http://127.000.000.001/",
    "http://127.1/",
    "http://127.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0X7F000001/",
    "http://0x7f.0x0.0x0.0x1/",
    "http://0177.0.0.1/",
    "http://0177.0000.0000.0001/",
    "http://017700000001/",
    "http://0x7f.1/",
    "http://localhost/",
    "http://localhost./",
    "http://LOCALHOST:80/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",  # full-width digits
    "http://127\u30020\u30020\u30021/",  # ideographic full stops
    "http://%31%32%37.0.0.1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://[::]/",
    # the cloud metadata service
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254.:80/latest/meta-data/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://instance-data/",
    # private, CGNAT, link-local, multicast, broadcast
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.0.1/",
    "http://3232235521/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fc00::1]/",
    "http://[ff02::1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    # userinfo and parser confusion
    "http://allowed.test@127.0.0.1/",
    "http://allowed.test:80@169.254.169.254/",
    "http://user:pass@allowed.test/",
    "http://allowed.test%40127.0.0.1/",
    "http://allowed.test\\@127.0.0.1/",
    "http://127.0.0.1\\@allowed.test/",
    "http://allowed.test\t@127.0.0.1/",
    "http://allowed.test\n.127.0.0.1/",
    "http://allowed.test /",
    "http://allowed.test.evil.test/",
    "http://evilallowed.test/",
    "http://allowed.test:0/",
    "http://allowed.test:65536/",
    "http://allowed.test:80:80/",
    "http://[::1/",
    "http:///path",
    # schemes that are not http(s), and scheme-less forms
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/_",
    "ftp://allowed.test/",
    "dict://127.0.0.1:11211/stat",
    "javascript:alert(1)",
    "//allowed.test/",
    "allowed.test/path",
]

# Each address must be refused when an allowlisted name resolves to it.
FORBIDDEN_ADDRESSES = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.169.254",
    "169.254.0.1",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "192.88.99.1",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::",
    "2001:db8::1",
    "2001::1",
    "fec0::1",
    "100::1",
]
# Never opened by allow_private: the metadata service and non-unicast addresses.
STILL_FORBIDDEN_WITH_ALLOW_PRIVATE = [
    "169.254.169.254",
    "fe80::1",
    "fd00:ec2::254",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::ffff:127.0.0.1",
    "::",
    "64:ff9b::a9fe:a9fe",
]


def test_the_corpus_is_large() -> None:
    assert len(FORBIDDEN_URLS) >= 50
    assert len(FORBIDDEN_ADDRESSES) >= 40


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_forbidden_urls_are_refused_by_the_guard(url: str, jail: Jail) -> None:
    jail.names["allowed.test"] = [PUBLIC]
    with pytest.raises(ssrf.Refused):
        ssrf.check_url(url, POLICY)


def _ctx() -> JobContext:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    job = Job(id=new_job_id(), type="http_request", run_at=now, created_at=now, updated_at=now)
    return JobContext(job, time.monotonic() + 30)


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_forbidden_urls_are_refused_at_enqueue(
    url: str, jail: Jail, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shape, allowlist match and IP literals are all decidable without DNS: 422."""
    monkeypatch.setenv("SPOOL_HTTP_ALLOWLIST", ALLOWLIST)
    jail.names["allowed.test"] = [PUBLIC]
    store = MemoryStore(FakeClock())
    request = EnqueueRequest(type="http_request", payload={"url": url})
    with pytest.raises(ValidationFailed) as refused:
        Service(store, registry).enqueue([request], tenant="t1")
    assert refused.value.status == 422
    assert not any(store.counts().values())  # nothing half-written
    assert jail.lookups == []  # refused without asking DNS


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_forbidden_urls_are_refused_at_run_time_even_when_stored(url: str, jail: Jail) -> None:
    """A job stored before a fix, or under other settings, skips enqueue checks:
    the handler refuses it again, without connecting."""
    jail.names["allowed.test"] = [PUBLIC]
    payload = hr.HttpRequestPayload.model_construct(url=url)  # no enqueue validation
    with pytest.raises(ssrf.Refused):
        hr.perform(payload, POLICY, _ctx())
    assert jail.escapes == []


@pytest.mark.parametrize("address", FORBIDDEN_ADDRESSES)
def test_allowlisted_names_resolving_to_forbidden_addresses_are_refused(
    address: str, jail: Jail
) -> None:
    jail.names["rebind.allowed.test"] = [address]
    with pytest.raises(ssrf.Refused, match="resolves to a refused address"):
        ssrf.check_url("http://rebind.allowed.test/", POLICY)
    payload = hr.HttpRequestPayload(url="https://rebind.allowed.test/")
    with pytest.raises(ssrf.Refused):
        hr.perform(payload, POLICY, _ctx())


@pytest.mark.parametrize("address", STILL_FORBIDDEN_WITH_ALLOW_PRIVATE)
def test_allow_private_does_not_open_metadata_or_non_unicast(address: str) -> None:
    relaxed = ssrf.Policy.parse(["allowed.test"], allow_private=True)
    assert ssrf.why_refused(ipaddress.ip_address(address), relaxed) is not None


# Every non-public range the guard knows, written out here (not read from ssrf.py),
# so dropping or narrowing any one of them in ssrf.py fails a test below.
PRIVATE_RANGES = {  # range: a word the refusal names, so the operator knows which
    "127.0.0.0/8": "loopback",
    "::1/128": "loopback",
    "10.0.0.0/8": "private",
    "172.16.0.0/12": "private",
    "192.168.0.0/16": "private",
    "fc00::/7": "private",
    "100.64.0.0/10": "carrier-grade NAT",
}
SPECIAL_RANGES = {
    "169.254.0.0/16": "link-local",
    "fe80::/10": "link-local",
    "192.0.0.0/24": "IETF",
    "2001::/23": "IETF",
    "192.0.2.0/24": "documentation",
    "198.51.100.0/24": "documentation",
    "203.0.113.0/24": "documentation",
    "2001:db8::/32": "documentation",
    "3fff::/20": "documentation",
    "198.18.0.0/15": "benchmarking",
    "2001:2::/48": "benchmarking",
    "192.88.99.0/24": "6to4",
    "100::/64": "discard-only",
    "64:ff9b:1::/48": "local-use NAT64",
    "fec0::/10": "site-local",
    "::/3": "non-global-unicast",
    "4000::/2": "non-global-unicast",
    "8000::/1": "non-global-unicast",
}
NEVER_RANGES = ["0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::/128", "::ffff:0:0/96", "ff00::/8"]
METADATA_ADDRESSES = [
    "169.254.169.254",
    "169.254.170.2",
    "169.254.170.23",
    "169.254.0.23",
    "100.100.100.200",
    "168.63.129.16",
    "192.0.0.192",
    "fd00:ec2::254",
    "fd00:ec2::23",
    "fd20:ce::254",
]
EVERYTHING = ssrf.Policy.parse(["0.0.0.0/0", "::/0"])


def _edges(cidr: str) -> list[tuple[str, ssrf.IPAddress]]:
    """The first and last addresses of a range (a narrowed range loses one of them),
    unless a more specific range listed here holds them (8000::/1 ends in ff00::/8)."""
    net = ipaddress.ip_network(cidr)
    everything = [
        ipaddress.ip_network(c) for c in [*PRIVATE_RANGES, *SPECIAL_RANGES, *NEVER_RANGES]
    ]
    return [
        (cidr, ip)
        for ip in (net[0], net[-1])
        if not any(
            other.prefixlen > net.prefixlen and other.version == ip.version and ip in other
            for other in everything
        )
    ]


def _host_entry(ip: ssrf.IPAddress) -> str:
    return str(ipaddress.ip_network(ip))


PRIVATE_EDGES = [edge for cidr in PRIVATE_RANGES for edge in _edges(cidr)]
SPECIAL_EDGES = [edge for cidr in SPECIAL_RANGES for edge in _edges(cidr)]


def test_the_tables_here_name_every_range_ssrf_knows() -> None:
    """A range added to ssrf.py without a test here fails this."""
    known = {str(n) for nets in ssrf.PRIVATE.values() for n in nets}
    assert known == set(PRIVATE_RANGES)
    known = {str(n) for nets in ssrf.SPECIAL.values() for n in nets}
    assert known == set(SPECIAL_RANGES)
    assert {str(n) for n in ssrf.NEVER} == set(NEVER_RANGES)
    assert {str(n.network_address) for n in ssrf.METADATA} == set(METADATA_ADDRESSES)
    assert all(_edges(cidr) for cidr in [*PRIVATE_RANGES, *SPECIAL_RANGES, *NEVER_RANGES])


@pytest.mark.parametrize(("cidr", "ip"), PRIVATE_EDGES, ids=lambda v: str(v))
def test_allow_private_opens_every_private_range(cidr: str, ip: ssrf.IPAddress) -> None:
    assert PRIVATE_RANGES[cidr] in (ssrf.why_refused(ip, ssrf.Policy()) or "")
    assert ssrf.why_refused(ip, EVERYTHING) is not None  # 0.0.0.0/0 is not "naming" it
    assert ssrf.why_refused(ip, ssrf.Policy(allow_private=True)) is None
    assert ssrf.why_refused(ip, ssrf.Policy.parse([cidr])) is None  # the exact range
    assert ssrf.why_refused(ip, ssrf.Policy.parse([_host_entry(ip)])) is None  # a part of it


@pytest.mark.parametrize(("cidr", "ip"), SPECIAL_EDGES, ids=lambda v: str(v))
def test_special_ranges_open_only_to_an_entry_naming_them(cidr: str, ip: ssrf.IPAddress) -> None:
    assert SPECIAL_RANGES[cidr] in (ssrf.why_refused(ip, ssrf.Policy()) or "")
    assert ssrf.why_refused(ip, EVERYTHING) is not None
    assert ssrf.why_refused(ip, ssrf.Policy(allow_private=True)) is not None
    assert ssrf.why_refused(ip, ssrf.Policy.parse([cidr])) is None
    assert ssrf.why_refused(ip, ssrf.Policy.parse([_host_entry(ip)])) is None


@pytest.mark.parametrize(("cidr", "ip"), [e for c in NEVER_RANGES for e in _edges(c)], ids=str)
def test_never_ranges_stay_closed_whatever_the_settings(cidr: str, ip: ssrf.IPAddress) -> None:
    for entries in ([cidr], [_host_entry(ip)], ["0.0.0.0/0", "::/0"]):
        policy = ssrf.Policy.parse(entries, allow_private=True)
        assert ssrf.why_refused(ip, policy) is not None, entries


def _metadata_forms(address: str) -> list[str]:
    """The address and the IPv6 spellings that lead to it."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return [address]
    v4 = int(ip)
    high, low = v4 >> 16, v4 & 0xFFFF
    return [
        address,
        f"::ffff:{address}",  # IPv4-mapped
        f"::{address}",  # IPv4-compatible
        f"64:ff9b::{address}",  # NAT64, well-known prefix
        f"64:ff9b:1::{address}",  # NAT64, local-use prefix, /96 layout
        f"64:ff9b:1:{high:x}:{low >> 8:x}:{(low & 0xFF) << 8:x}::",  # local-use, /48 layout
        f"2002:{high:x}:{low:x}::1",  # 6to4
        f"2001:0:4136:e378:8000:63bf:{high ^ 0xFFFF:x}:{low ^ 0xFFFF:x}",  # Teredo client
    ]


@pytest.mark.parametrize(
    "form", [f for a in METADATA_ADDRESSES for f in _metadata_forms(a)], ids=str
)
def test_metadata_addresses_stay_closed_in_every_spelling(form: str, jail: Jail) -> None:
    ip = ipaddress.ip_address(form)
    entries = [_host_entry(ip), "0.0.0.0/0", "::/0", "169.254.0.0/16", "fd00::/8", "2001::/23"]
    entries += ["64:ff9b:1::/48", "100.64.0.0/10", "192.0.0.0/24"]
    opened = ssrf.Policy.parse(entries, allow_private=True)
    reason = ssrf.why_refused(ip, opened)
    assert reason is not None and "metadata" in reason
    jail.names["meta.allowed.test"] = [form]
    with pytest.raises(ssrf.Refused, match="metadata"):
        ssrf.check_url("http://meta.allowed.test/", ssrf.Policy.parse(["*.allowed.test", *entries]))


@pytest.mark.parametrize(
    "entries",
    [["0.0.0.0/0", "::/0"], ["10.0.0.0/7"], ["0.0.0.0/1"], ["172.0.0.0/8"], ["::/1"]],
    ids=str,
)
def test_an_entry_wider_than_a_private_range_opens_only_public_addresses(
    entries: list[str], jail: Jail
) -> None:
    """The issue's case: `0.0.0.0/0` on the allowlist used to open loopback and LANs."""
    policy = ssrf.Policy.parse(["svc.test", *entries])
    for address in ("127.0.0.1", "10.0.0.1", "11.0.0.1", "172.16.0.1", "100.64.0.1", "::1"):
        ip = ipaddress.ip_address(address)
        if not policy.explicitly_allows(ip):
            continue  # outside this entry: refused as off the allowlist anyway
        if ip.is_global:
            assert ssrf.why_refused(ip, policy) is None
            continue
        with pytest.raises(ssrf.Refused):
            ssrf.check_url(f"http://{_url_host(ip)}/", policy)
        jail.names["svc.test"] = [address]
        with pytest.raises(ssrf.Refused, match="resolves to a refused address"):
            ssrf.check_url("http://svc.test/", policy)


def _url_host(ip: ssrf.IPAddress) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


def test_an_entry_inside_a_private_range_opens_that_part_only() -> None:
    policy = ssrf.Policy.parse(["10.1.0.0/16"])
    assert ssrf.why_refused(ipaddress.ip_address("10.1.2.3"), policy) is None
    assert ssrf.why_refused(ipaddress.ip_address("10.2.0.1"), policy) is not None


# -- what is allowed ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("http://allowed.test/", "http://allowed.test/"),
        ("HTTP://ALLOWED.test./a?b=c", "http://allowed.test/a?b=c"),
        ("https://api.allowed.test:8443/x#frag", "https://api.allowed.test:8443/x"),
        ("https://allowed.test:443/caf\u00e9", "https://allowed.test/caf%C3%A9"),
        (f"http://{PUBLIC}/", f"http://{PUBLIC}/"),
        ("http://b\u00fccher.allowed.test/", "http://xn--bcher-kva.allowed.test/"),
    ],
)
def test_allowed_urls_are_normalized_and_resolved(url: str, normalized: str, jail: Jail) -> None:
    for name in ("allowed.test", "api.allowed.test", "xn--bcher-kva.allowed.test"):
        jail.names[name] = [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"]
    target, addresses = ssrf.check_url(url, POLICY)
    assert target.url == normalized
    assert ipaddress.ip_address(PUBLIC) in addresses


def test_public_nat64_and_6to4_addresses_are_judged_by_the_address_they_embed() -> None:
    public_nat64 = ipaddress.ip_address("64:ff9b::5db8:d822")  # 93.184.216.34
    assert ssrf.why_refused(public_nat64, ssrf.Policy()) is None
    assert ssrf.embedded_ipv4(ipaddress.IPv6Address("2002:5db8:d822::")) == ipaddress.ip_address(
        PUBLIC
    )


def test_explicit_cidrs_open_what_they_contain_but_never_the_unspecified_address() -> None:
    loopback = ssrf.Policy.parse(["127.0.0.0/8"])
    _, addresses = ssrf.check_url("http://127.0.0.1:9/", loopback)
    assert addresses == [ipaddress.ip_address("127.0.0.1")]
    everything = ssrf.Policy.parse(["0.0.0.0/0", "::/0"])
    for url in (
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://224.0.0.1/",
        "http://[::]/",
    ):
        with pytest.raises(ssrf.Refused):
            ssrf.check_url(url, everything)


def test_a_name_that_does_not_exist_is_permanent_but_a_dns_hiccup_is_retried() -> None:
    import socket

    def down(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")

    with pytest.raises(ssrf.Refused, match="does not exist"):
        ssrf.check_url("http://nowhere.allowed.test/", POLICY)
    with pytest.raises(ssrf.LookupFailed):
        ssrf.check_url("http://nowhere.allowed.test/", POLICY, down)


@pytest.mark.parametrize(
    "entry", ["10.0.0.0/33", "not a host", "2130706433", "0x7f.1", "*.", "a..b", "[::1"]
)
def test_malformed_allowlist_entries_are_configuration_errors(entry: str) -> None:
    with pytest.raises(ValueError):
        ssrf.Policy.parse([entry])


def test_an_empty_allowlist_allows_nothing(jail: Jail) -> None:
    jail.names["allowed.test"] = [PUBLIC]
    with pytest.raises(ssrf.Refused, match="allowlist"):
        ssrf.check_url("http://allowed.test/", ssrf.Policy())
    with pytest.raises(ssrf.Refused, match="allowlist"):
        ssrf.check_url(f"http://{PUBLIC}/", ssrf.Policy())


@pytest.mark.parametrize(
    "char", ["\u2028", "\u2029", "\u00a0", "\u0085", "\u200b", "\u202e", "\u3000", "\ufeff"]
)
def test_whitespace_and_invisible_characters_beyond_ascii_are_refused(char: str) -> None:
    """A URL people read must be the URL sent: no line separators, no-break or
    zero-width spaces, no direction overrides, wherever they stand."""
    for url in (
        f"https://allowed.test/ok{char}x",
        f"https://allowed.test{char}/",
        f"https{char}://a.test/",
    ):
        with pytest.raises(ssrf.Refused, match="whitespace, control characters"):
            ssrf.parse_url(url)
    assert ssrf.parse_url("https://allowed.test/caf\u00e9").host == "allowed.test"  # letters pass


def test_a_lone_surrogate_is_refused_not_a_unicode_error() -> None:
    """A str from json.loads may hold an unpaired surrogate ("\\ud800"): no character,
    and quote() cannot encode it, so parse_url raised UnicodeEncodeError, not Refused
    (the API's JSON reader refuses them first; SPOOL_WEBHOOKS and library callers do not)."""
    for url in ("https://allowed.test/\ud800", "https://allowed.test/?q=\udfff"):
        with pytest.raises(ssrf.Refused, match="whitespace, control characters"):
            ssrf.parse_url(url)
