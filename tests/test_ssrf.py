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
from pydantic import ValidationError

from chalicelib import ssrf
from chalicelib.builtin import http_request as hr
from chalicelib.handlers import JobContext
from chalicelib.ids import new_job_id
from chalicelib.models import Job
from tests.test_http_request import Jail, jailed


@pytest.fixture(autouse=True)
def jail(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jail]:
    with jailed(monkeypatch) as state:
        yield state


PUBLIC = "93.184.216.34"
POLICY = ssrf.Policy.parse(["allowed.test", "*.allowed.test", PUBLIC])

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
def test_forbidden_urls_never_leave_through_the_handler(url: str, jail: Jail) -> None:
    """Refused at enqueue time (422) or at run time (dead); never connected."""
    jail.names["allowed.test"] = [PUBLIC]
    try:
        payload = hr.HttpRequestPayload.model_validate({"url": url})
    except ValidationError:
        return
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


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "100.64.0.1", "::1"])
def test_allow_private_opens_loopback_private_and_cgnat(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert ssrf.why_refused(ip, ssrf.Policy()) is not None
    assert ssrf.why_refused(ip, ssrf.Policy(allow_private=True)) is None


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
