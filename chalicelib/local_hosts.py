"""Which Host headers a server reachable from this machine only answers (DNS rebinding).

A server bound to 127.0.0.1 is out of other machines' reach, but not out of a web
page's: a page open in the developer's browser, whose own name (evil.example) its DNS
answers first with the attacker's address and then with 127.0.0.1, sends its
`fetch("/metrics")` to the local port as same-origin and reads the answer. Such a
request names the page's site in its Host header; a local client names an address or
localhost. So what answers without a key on a loopback-bound port (the worker's scrape
port, the /metrics of `spool serve` and `chalice local` under SPOOL_METRICS_PUBLIC)
answers only local names.
Routes that take a key need no such check: the page has no key to send.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def local_host_only(bound: str) -> bool:
    """Whether a server bound to `bound` is reachable from this machine only, so only
    local names may reach it: a loopback address, or localhost."""
    found = _address(bound)
    return found.is_loopback if found is not None else bound.lower().rstrip(".") == "localhost"


def serves_host(host: str | None, local_only: bool) -> bool:
    """Whether a request with this Host header is answered. A port reachable from this
    machine only answers an address (what a DNS-rebinding page can never name: its
    origin is its own site's name), localhost, a name under .localhost (RFC 6761: a
    browser resolves it to loopback itself) or no Host at all (HTTP/1.0)."""
    if not local_only or not host:
        return True
    name = host.strip()
    if name.startswith("["):  # [v6] or [v6]:port
        name = name[: name.find("]") + 1] if "]" in name else name
    elif name.count(":") == 1:  # name:port (a bare v6 address has several colons)
        name = name.partition(":")[0]
    if _address(name) is not None:
        return True
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


METRICS_ELSEWHERE = (
    "/metrics is public here (SPOOL_METRICS_PUBLIC) and this server listens on loopback: "
    "it answers a Host that is an address or localhost, and this request named another "
    "site (a web page reaching 127.0.0.1 by DNS rebinding)"
)
WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def metrics_path(path: str) -> bool:
    """PATH_INFO as the routes read it: leading slashes are one, one trailing is none."""
    trimmed = "/" + path.lstrip("/")
    return trimmed in ("/metrics", "/metrics/")


def local_metrics_only(app: WsgiApp) -> WsgiApp:
    """`app`, with /metrics refused (403) to a request naming a site that is not local."""
    body = json.dumps(
        {"error": {"code": "forbidden", "message": METRICS_ELSEWHERE, "details": None}}
    ).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Length", str(len(body))),
    ]

    def guarded(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if metrics_path(environ.get("PATH_INFO") or "") and not serves_host(
            environ.get("HTTP_HOST"), local_only=True
        ):
            start_response("403 Forbidden", headers)
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
        return app(environ, start_response)

    return guarded
