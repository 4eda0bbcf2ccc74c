"""The server's own refusals under /ui, for every spelling of a /ui path the router takes.

tests/test_attack_s49c_ui_refusal_headers.py made the refusals `spool serve` and
`chalice local` make before the app (413, 408, 400, 431) carry the dashboard's CSP and
framing rules under /ui, as docs/dashboard.md says every answer under /ui does. They
read the target as sent, while the router collapses leading slashes and decodes
escapes: `//ui/api/dead/purge` and `/%75i/api/dead/purge` are the dashboard's purge,
and their app answers carry the dashboard's headers, but a 413 for either carried the
API's alone (found probing from outside with a raw socket, s59 helper G).
"""

from __future__ import annotations

import pytest

from chalicelib.api.ui_routes import ERROR_HEADERS
from tests.test_attack_s49c_ui_refusal_headers import chalice_port, refused, server

__all__ = ["chalice_port", "server"]  # the fixtures, shared with s49c's module

SPELLINGS = ["//ui/api/dead/purge", "/%75i/api/dead/purge", "///%75%69/api/dead/purge"]


def too_large(target: str) -> bytes:
    return f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n".encode()


@pytest.mark.parametrize("target", SPELLINGS)
def test_spool_serve_s_refusal_of_a_ui_path_however_spelt(
    server: tuple[str, int], target: str
) -> None:
    status, headers = refused(server, too_large(target))
    assert status == 413
    for name, value in ERROR_HEADERS.items():
        assert headers.get(name.lower()) == value, (target, name, headers)


@pytest.mark.parametrize("target", SPELLINGS)
def test_chalice_local_s_refusal_of_a_ui_path_however_spelt(chalice_port: int, target: str) -> None:
    status, headers = refused(("127.0.0.1", chalice_port), too_large(target))
    assert status == 413
    for name, value in ERROR_HEADERS.items():
        assert headers.get(name.lower()) == value, (target, name, headers)


@pytest.mark.parametrize("target", ["/enqueue", "//enqueue", "/%65nqueue", "/%64lq/redrive"])
def test_refusals_elsewhere_keep_the_api_s_headers(server: tuple[str, int], target: str) -> None:
    status, headers = refused(server, too_large(target))
    assert "content-security-policy" not in headers, (target, status, headers)
