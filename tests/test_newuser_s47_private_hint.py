"""A loopback or private address refused says which setting opens it.

Trying webhooks on a laptop, a newcomer sends `callback_url: http://127.0.0.1:9000/`
and reads `callback_url refused: address refused: 127.0.0.1 is a loopback address`,
while `http://localhost:9000/` says `SPOOL_WEBHOOK_ALLOW_PRIVATE opens it`. The
address now says so too, and http_request's refusal names SPOOL_HTTP_ALLOW_PRIVATE
where that flag is what opens it (an allowlist CIDR that merely contains the range).
The ranges nothing opens (metadata, multicast ...) say nothing of the kind.
"""

from __future__ import annotations

import pytest

from chalicelib import ssrf
from chalicelib.config import Settings
from chalicelib.webhooks import config
from chalicelib.webhooks.guard import CallbackRefused, check_callback_url


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "http://10.1.2.3:9000/hook"])
def test_a_callback_to_a_private_address_names_the_flag(url: str) -> None:
    hooks = config.from_settings(Settings())
    with pytest.raises(CallbackRefused, match="SPOOL_WEBHOOK_ALLOW_PRIVATE opens it"):
        check_callback_url(url, hooks)
    opened = config.from_settings(Settings(extra={"SPOOL_WEBHOOK_ALLOW_PRIVATE": "true"}))
    check_callback_url(url, opened)  # what the hint says, works


def test_an_address_nothing_opens_names_no_flag() -> None:
    hooks = config.from_settings(Settings())
    with pytest.raises(CallbackRefused) as refused:
        check_callback_url("http://169.254.169.254:8080/latest", hooks)
    assert "ALLOW_PRIVATE" not in str(refused.value)


def test_http_request_names_its_own_flag() -> None:
    policy = ssrf.Policy.parse(["0.0.0.0/0"])
    with pytest.raises(ssrf.Refused, match="SPOOL_HTTP_ALLOW_PRIVATE opens it"):
        ssrf.check_static("http://127.0.0.1:8080/", policy)
