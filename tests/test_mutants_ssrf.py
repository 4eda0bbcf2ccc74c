"""The SSRF guard's behaviour that test_ssrf.py's corpus does not pin down.

Written against the first mutation run of ssrf.py (557 mutants, 189 survived):
test_ssrf.py checks that forbidden URLs are refused, but a URL refused for the
wrong reason still passes there, so most survivors were a rule removed while a
later rule refused the corpus anyway. Here: allowed bracketed IPv6 URLs and
their Target fields, plain IP and bracketed allowlist entries, the characters
refused in the path (where no later rule looks), port and length edges, the
/56 and /64 RFC 6052 layouts of the local-use NAT64 prefix, the exact operator
message of every refusal and the tenant's message (`public`) of every DNS one.
docs/testing.md lists the survivors left and why each is acceptable.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import ssrf
from tests.test_http_request import Jail, jailed

_REAL_GETADDRINFO = socket.getaddrinfo  # before any test's jail replaces it


@pytest.fixture(autouse=True)
def jail(monkeypatch: pytest.MonkeyPatch) -> Iterator[Jail]:
    with jailed(monkeypatch) as state:
        yield state


PUBLIC = "93.184.216.34"
PUBLIC6 = "2606:2800:220:1:248:1893:25c8:1946"
POLICY = ssrf.Policy.parse(["allowed.test", "*.allowed.test", PUBLIC, PUBLIC6])
LONG_LABEL = "\u00fc" * 64 + ".test"  # IDNA refuses a label over 63 characters
GENERIC = "host 'x.allowed.test' does not resolve to an address this service may reach"


def refusal(call: Any, *args: Any) -> ssrf.Refused:
    with pytest.raises(ssrf.Refused) as refused:
        call(*args)
    return refused.value


# -- URL shape -------------------------------------------------------------------
def test_a_bracketed_ipv6_url_is_parsed_into_its_parts() -> None:
    target = ssrf.parse_url(f"HTTPS://[{PUBLIC6.upper()}]:8443/a?b=c")
    assert target == ssrf.Target(
        url=f"https://[{PUBLIC6}]:8443/a?b=c",
        scheme="https",
        host=PUBLIC6,
        port=8443,
        path="/a?b=c",
        ip=ipaddress.IPv6Address(PUBLIC6),
    )
    default = ssrf.parse_url(f"http://[{PUBLIC6}]")
    assert (default.url, default.port, default.path) == (f"http://[{PUBLIC6}]/", 80, "/")


def test_an_allowlisted_ipv6_literal_passes_the_whole_guard() -> None:
    target, addresses = ssrf.check_url(f"http://[{PUBLIC6}]:8080/", POLICY)
    assert target.host == PUBLIC6 and target.port == 8080
    assert addresses == [ipaddress.IPv6Address(PUBLIC6)]


def test_a_name_url_has_the_default_path_scheme_and_port() -> None:
    target = ssrf.parse_url("http://allowed.test")
    assert (target.url, target.scheme, target.port, target.path) == (
        "http://allowed.test/",
        "http",
        80,
        "/",
    )
    assert target.ip is None


@pytest.mark.parametrize("port", [1, 65535])
def test_the_first_and_last_ports_are_valid(port: int) -> None:
    assert ssrf.parse_url(f"http://allowed.test:{port}/").port == port
    assert ssrf.parse_url(f"http://[{PUBLIC6}]:{port}/").port == port


def test_a_url_of_exactly_the_maximum_length_is_accepted() -> None:
    head = "https://allowed.test/"
    url = head + "a" * (ssrf.MAX_URL_LENGTH - len(head))
    assert ssrf.parse_url(url).url == url
    error = refusal(ssrf.parse_url, url + "a")
    assert str(error) == "URL is longer than 8192 characters"


@pytest.mark.parametrize(
    "char",
    [" ", "\t", "\n", "\r", "\x00", "\x1f", "\x7f", "\\", "\x80", "\x9b", "\x85"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_whitespace_controls_and_backslashes_are_refused_in_the_path_too(char: str) -> None:
    """In the path no later rule would notice them: urlsplit silently drops tabs and
    newlines, and quote() would turn the rest into escapes, so the request sent would
    not be the URL the tenant wrote."""
    for url in (f"https://allowed.test/a{char}b", f"https://allowed.test/?q={char}"):
        error = refusal(ssrf.parse_url, url)
        assert str(error) == "URL contains whitespace, control characters or backslashes"


def test_printable_ascii_in_the_path_is_kept() -> None:
    assert ssrf.parse_url("https://allowed.test/a!b~c").path == "/a!b~c"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1/", "malformed URL: Invalid IPv6 URL"),
        ("ftp://allowed.test/", "only http and https URLs are allowed, not 'ftp'"),
        ("//allowed.test/", "only http and https URLs are allowed, not 'none'"),
        ("http:///path", "URL has no host"),
        ("http://user@allowed.test/", "URL must not contain credentials (user@host)"),
        ("http://allowed.test@127.0.0.1/", "URL must not contain credentials (user@host)"),
        ("http://allowed%2etest/", "percent-encoded characters are not allowed in the host"),
        ("http://[::1]x/", "unexpected characters after the IPv6 address"),
        ("http://[::1]]/", "unexpected characters after the IPv6 address"),
        ("http://allowed.test:80:80/", "more than one ':' in the host (unbracketed IPv6?)"),
        ("http://allowed.test:/", "empty port in URL"),
        (f"http://[{PUBLIC6}]:/", "empty port in URL"),
        ("http://allowed.test:0/", "invalid port '0'"),
        ("http://allowed.test:65536/", "invalid port '65536'"),
        ("http://[v1.x]/", "invalid IPv6 address '[v1.x]'"),
        ("http://a!b.test/", "invalid host 'a!b.test'"),
        ("http://./", "invalid host '.'"),
        ("http://0x7f.1/", "host '0x7f.1' is a non-canonical IP address encoding"),
        (f"http://{LONG_LABEL}/", f"host {LONG_LABEL!r} is not a valid internationalized name"),
    ],
)
def test_each_shape_refusal_names_its_rule(url: str, message: str) -> None:
    assert str(refusal(ssrf.parse_url, url)) == message


def test_a_host_name_may_have_253_characters_not_254() -> None:
    longest = ".".join(["a" * 63] * 3 + ["a" * 61])
    assert len(longest) == 253
    assert ssrf.normalize_host(longest + ".") == longest
    assert ssrf.parse_url(f"http://{longest}/").host == longest
    too_long = ".".join(["a" * 63] * 3 + ["a" * 62])  # every label still valid
    error = refusal(ssrf.parse_url, f"http://{too_long}/")
    assert str(error) == f"invalid host {too_long!r}"


# -- the allowlist ---------------------------------------------------------------
def test_blank_entries_are_skipped_not_the_end_of_the_list() -> None:
    policy = ssrf.Policy.parse(["", "  ", "a.test", "", "b.test"])
    assert policy.hosts == frozenset({"a.test", "b.test"})


def test_plain_and_bracketed_ip_entries_are_networks_and_the_list_goes_on() -> None:
    policy = ssrf.Policy.parse(["10.1.2.3", "[2001:db8::1]", "2001:db8::2", "a.test"])
    assert policy.networks == (
        ipaddress.ip_network("10.1.2.3/32"),
        ipaddress.ip_network("2001:db8::1/128"),
        ipaddress.ip_network("2001:db8::2/128"),
    )
    assert policy.hosts == frozenset({"a.test"})


def test_a_cidr_with_host_bits_is_its_network_and_the_list_goes_on() -> None:
    policy = ssrf.Policy.parse(["10.1.2.3/8", "a.test"])
    assert policy.networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert policy.hosts == frozenset({"a.test"})


def test_entries_are_read_case_insensitively() -> None:
    policy = ssrf.Policy.parse(["ALLOWED.Test", "*.Sub.TEST", "2001:DB8::/32"])
    assert policy.hosts == frozenset({"allowed.test"})
    assert policy.suffixes == (".sub.test",)
    assert policy.networks == (ipaddress.ip_network("2001:db8::/32"),)


def test_an_entry_matches_the_url_spelled_like_it() -> None:
    """Entry and URL host go through the same normalization: a dotless i (which
    upper-cases to a plain I) names its own IDNA host, not `i.test`."""
    policy = ssrf.Policy.parse(["\u0131.test"])
    assert ssrf.check_static("http://\u0131.test/", policy).host == "xn--cfa.test"
    assert str(refusal(ssrf.check_static, "http://i.test/", policy)) == (
        "host 'i.test' is not on the allowlist (SPOOL_HTTP_ALLOWLIST)"
    )


def test_an_ip_entry_allows_that_address_only() -> None:
    """Another address of the same family is off the allowlist, even a public one."""
    assert ssrf.check_static(f"http://{PUBLIC}/", POLICY).ip == ipaddress.ip_address(PUBLIC)
    error = refusal(ssrf.check_static, "http://8.8.8.8/", POLICY)
    assert str(error) == "IP address 8.8.8.8 is not on the allowlist"
    error = refusal(ssrf.check_static, "http://[2001:4860:4860::8888]/", POLICY)
    assert str(error) == "IP address 2001:4860:4860::8888 is not on the allowlist"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("10.0.0.0/33", "allowlist entry '10.0.0.0/33' is not a valid CIDR"),
        ("a..b", "allowlist entry 'a..b': invalid host 'a..b'"),
        ("a.b.1", "allowlist entry 'a.b.1' is a non-canonical IP address"),
        ("*.0x7f.1", "allowlist entry '*.0x7f.1' is a non-canonical IP address"),
    ],
)
def test_each_malformed_entry_names_its_fault(entry: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        ssrf.Policy.parse([entry])
    assert str(raised.value) == message


def test_parse_keeps_allow_private_and_the_setting_name() -> None:
    relaxed = ssrf.Policy.parse(["a.test"], allow_private=True, setting="SPOOL_WEBHOOK_ALLOWLIST")
    assert relaxed.allow_private is True
    assert ssrf.why_refused(ipaddress.ip_address("10.0.0.1"), relaxed) is None
    error = refusal(ssrf.check_static, "http://b.test/", relaxed)
    assert str(error) == "host 'b.test' is not on the allowlist (SPOOL_WEBHOOK_ALLOWLIST)"
    error = refusal(ssrf.check_static, "http://b.test/", ssrf.Policy(setting="X_LIST"))
    assert str(error) == "the allowlist (X_LIST) is empty, so no URL is reachable"


def test_an_ip_literal_off_the_allowlist_says_what_it_would_be() -> None:
    error = refusal(ssrf.check_static, "http://127.0.0.1/", POLICY)
    assert str(error) == (
        "IP address 127.0.0.1 is not on the allowlist (127.0.0.1 is a loopback address)"
    )
    everything = ssrf.Policy.parse(["0.0.0.0/0"])
    error = refusal(ssrf.check_static, "http://127.0.0.1/", everything)
    assert str(error) == (
        "address refused: 127.0.0.1 is a loopback address; SPOOL_HTTP_ALLOW_PRIVATE opens it"
    )


# -- addresses -------------------------------------------------------------------
def _ip(text: str) -> ssrf.IPAddress:
    return ipaddress.ip_address(text)


def test_metadata_refusals_say_which_address_they_lead_to() -> None:
    assert ssrf.why_refused(_ip("169.254.169.254"), ssrf.Policy()) == (
        "169.254.169.254 is a cloud metadata address; never reachable"
    )
    for form in ("::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1"):
        assert ssrf.metadata_address(_ip(form)) == _ip("169.254.169.254")
        assert ssrf.why_refused(_ip(form), ssrf.Policy()) == (
            f"{form} is a cloud metadata address (it leads to 169.254.169.254); never reachable"
        )


# 169.254.169.254 is a9.fe.a9.fe; RFC 6052 skips bits 64-71 of the address.
LOCAL_NAT64_LAYOUTS = {
    "/56": "64:ff9b:1:a9:fe:a9fe::",
    "/64": "64:ff9b:1:0:a9:fea9:fe00:0",
}


@pytest.mark.parametrize("form", LOCAL_NAT64_LAYOUTS.values(), ids=LOCAL_NAT64_LAYOUTS.keys())
def test_metadata_in_every_local_use_nat64_layout_is_refused(form: str) -> None:
    ip = _ip(form)
    opened = ssrf.Policy.parse(["64:ff9b:1::/48", "0.0.0.0/0", "::/0"], allow_private=True)
    assert ssrf.metadata_address(ip) == _ip("169.254.169.254")
    assert ssrf.why_refused(ip, opened) == (
        f"{form} is a cloud metadata address (it leads to 169.254.169.254); never reachable"
    )


def test_ipv4_compatible_addresses_stay_closed_even_inside_an_opened_range() -> None:
    opened = ssrf.Policy.parse(["::/3"])
    for text in ("::2", "::a9fe:a9fd", "::808:808"):
        assert ssrf.why_refused(_ip(text), opened) == (
            f"{text} is never reachable (IPv4-compatible IPv6)"
        )
    assert ssrf.why_refused(_ip("::1"), ssrf.Policy(allow_private=True)) is None


class _NotGlobal(ipaddress.IPv4Address):
    """A public-range address a newer ipaddress could call non-global (Python 3.12.4
    moved 2002::/16 and others out of is_global), in no range ssrf.py names."""

    @property
    def is_global(self) -> bool:
        return False


def test_a_non_global_address_in_no_named_range_opens_only_to_an_entry_naming_it() -> None:
    ip = _NotGlobal("8.8.8.8")
    assert ssrf.why_refused(ip, ssrf.Policy()) == "8.8.8.8 is not a public address"
    assert ssrf.why_refused(ip, ssrf.Policy.parse(["8.8.8.0/24"])) is not None
    assert ssrf.why_refused(ip, ssrf.Policy.parse(["8.8.8.8"])) is None


# -- resolving -------------------------------------------------------------------
def test_the_resolver_is_asked_for_the_host_and_port() -> None:
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [PUBLIC, PUBLIC, PUBLIC6]

    _, addresses = ssrf.check_url("https://svc.allowed.test:8443/", POLICY, resolver)
    assert asked == [("svc.allowed.test", 8443)]
    assert addresses == [_ip(PUBLIC), _ip(PUBLIC6)]


def _answers(*answers: str) -> ssrf.Resolver:
    return lambda host, port: list(answers)


@pytest.mark.parametrize(
    ("answers", "detail"),
    [
        (["not-an-ip"], "resolver answered a non-address 'not-an-ip' for 'x.allowed.test'"),
        ([], "host 'x.allowed.test' resolved to no address"),
        (
            [PUBLIC, "10.0.0.1"],
            "host 'x.allowed.test' resolves to a refused address: 10.0.0.1 is a private "
            "address; SPOOL_HTTP_ALLOW_PRIVATE opens it",
        ),
        (
            ["fe80::1%eth0"],
            "host 'x.allowed.test' resolves to a refused address: fe80::1 is a link-local address",
        ),
    ],
)
def test_dns_refusals_tell_the_operator_why_and_the_tenant_nothing(
    answers: list[str], detail: str
) -> None:
    error = refusal(ssrf.check_url, "http://x.allowed.test/", POLICY, _answers(*answers))
    assert str(error) == detail
    assert error.public == GENERIC


def test_a_name_that_does_not_exist_tells_the_tenant_nothing_more() -> None:
    def missing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "no such name")

    error = refusal(ssrf.check_url, "http://x.allowed.test/", POLICY, missing)
    assert (
        str(error)
        == f"host 'x.allowed.test' does not exist (DNS: [Errno {socket.EAI_NONAME}] no such name)"
    )
    assert error.public == GENERIC


def test_a_dns_hiccup_says_which_lookup_failed() -> None:
    def down(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")

    with pytest.raises(ssrf.LookupFailed) as raised:
        ssrf.check_url("http://x.allowed.test/", POLICY, down)
    assert str(raised.value) == (
        f"DNS lookup for 'x.allowed.test' failed: [Errno {socket.EAI_AGAIN}] temporary failure"
    )


def test_a_refusal_without_a_public_message_shows_the_tenant_its_message() -> None:
    assert ssrf.Refused("the rule").public == "the rule"
    assert ssrf.Refused("the rule", "the tenant's text").public == "the tenant's text"
    assert (
        refusal(ssrf.parse_url, "ftp://x/").public
        == "only http and https URLs are allowed, not 'ftp'"
    )


def test_the_system_resolver_asks_for_tcp_stream_addresses_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the real getaddrinfo, for a numeric host only (no DNS traffic)."""

    def numeric_only(
        host: str, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        assert host == "127.0.0.1"
        return _REAL_GETADDRINFO(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)
    assert ssrf.system_resolver("127.0.0.1", 80) == ["127.0.0.1"]


@pytest.mark.parametrize(
    "code", [getattr(socket, n) for n in ("EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, n)]
)
def test_a_name_with_no_address_is_refused_as_one_that_does_not_exist(code: int) -> None:
    """A name that exists with no address record (or none of the family asked for) is
    as final as one that does not exist, and the tenant is told the same: as a retried
    DNS failure, its errno text reached the tenant and told the two apart."""

    def empty(host: str, port: int) -> list[str]:
        raise socket.gaierror(code, "No address associated with hostname")

    error = refusal(ssrf.check_url, "http://x.allowed.test/", POLICY, empty)
    assert str(error) == (
        f"host 'x.allowed.test' has no address (DNS: [Errno {code}] "
        "No address associated with hostname)"
    )
    assert error.public == GENERIC
