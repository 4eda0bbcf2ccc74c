"""The addresses `spool serve`'s banner gives to copy are ones a client can use.

`spool serve --host 0.0.0.0` (every interface, as in a container) printed
`export SPOOL_URL=http://0.0.0.0:8000` and curl lines to it: 0.0.0.0 is where to
listen, not where to connect (clients on several systems refuse it). `--host ::1`
printed `http://::1:8000`, which no URL parser reads as a host and a port; only
`--processes N` put the brackets in.
"""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from local import serve


@pytest.mark.parametrize(
    ("host", "bound", "use"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://0.0.0.0:8000", "http://127.0.0.1:8000"),
        ("::", "http://[::]:8000", "http://[::1]:8000"),
        ("::1", "http://[::1]:8000", "http://[::1]:8000"),
        ("10.1.2.3", "http://10.1.2.3:8000", "http://10.1.2.3:8000"),
        ("", "http://0.0.0.0:8000", "http://127.0.0.1:8000"),
    ],
)
def test_addresses_bracket_ipv6_and_turn_every_interface_into_this_machine(
    host: str, bound: str, use: str
) -> None:
    assert serve.addresses(host, 8000) == (bound, use)
    assert httpx.URL(use).port == 8000  # a URL a client reads as host and port


def _rt() -> SimpleNamespace:
    return SimpleNamespace(
        settings=SimpleNamespace(store_url="sqlite:///.spool/spool.db"),
        registry=SimpleNamespace(types=lambda: ["echo", "sleep", "fail"]),
    )


def test_a_banner_on_every_interface_says_so_and_gives_this_machine_s_address() -> None:
    bound, use = serve.addresses("0.0.0.0", 8123)
    text = serve.banner(use, _rt(), "dev-abc", True, True, bound=bound)  # type: ignore[arg-type]
    first, *rest = text.splitlines()
    assert first.startswith("spool: serving app.py on http://0.0.0.0:8123")
    assert "every interface" in first and "from here: http://127.0.0.1:8123" in first
    assert not [line for line in rest if "0.0.0.0" in line]
    assert "  export SPOOL_URL=http://127.0.0.1:8123 SPOOL_API_KEY=dev-abc" in rest


def test_a_banner_on_one_address_names_it_once() -> None:
    bound, use = serve.addresses("127.0.0.1", 8123)
    text = serve.banner(use, _rt(), "dev-abc", True, True, bound=bound)  # type: ignore[arg-type]
    assert text.splitlines()[0] == "spool: serving app.py on http://127.0.0.1:8123"
