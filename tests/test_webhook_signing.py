"""Standard Webhooks signatures: the server's signer and the client's verify agree,
with the specification's own example, with two secrets during a rotation, and
refuse what is forged, altered, replayed or malformed."""

from __future__ import annotations

import base64
import json

import pytest

from chalicelib.webhooks import signing
from spool_client.webhooks import WebhookVerificationError, sign, verify

# The example the Standard Webhooks specification and its libraries test against.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIME = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NEW = signing.new_secret()
OLD = signing.new_secret()


def test_the_specification_example_signs_the_same() -> None:
    key = signing.decode_secret(SPEC_SECRET)
    assert signing.signature(key, SPEC_ID, SPEC_TIME, SPEC_BODY) == SPEC_SIGNATURE
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIME, SPEC_BODY) == SPEC_SIGNATURE


def delivery(keys: list[str], body: bytes = b'{"type":"job.succeeded"}', at: int = 1_800_000_000):
    decoded = [signing.decode_secret(k) for k in keys]
    return body, signing.headers("msg_" + "ab" * 16, at, body, decoded), at


def test_verify_takes_the_headers_http_server_hands_over() -> None:
    """http.server's headers (an email.message.Message) have items() but are no
    Mapping: iterated as pairs they raised ValueError, not WebhookVerificationError."""
    from email.message import Message

    body, headers, at = delivery([NEW])
    message = Message()
    for name, value in headers.items():
        message[name.title()] = value
    assert verify(body, message, NEW, now=at) == {"type": "job.succeeded"}
    with pytest.raises(WebhookVerificationError):
        verify(b'{"type": "x"}', message, NEW, now=at)
    with pytest.raises(WebhookVerificationError):
        verify(body, ["not pairs"], NEW, now=at)  # type: ignore[list-item]


def test_verify_accepts_what_the_server_signs() -> None:
    body, headers, at = delivery([NEW])
    assert verify(body, headers, NEW, now=at) == {"type": "job.succeeded"}
    assert verify(body.decode(), headers, [NEW], now=at + 299) == {"type": "job.succeeded"}


def test_during_a_rotation_either_secret_verifies() -> None:
    body, headers, at = delivery([NEW, OLD])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(body, headers, NEW, now=at)  # a receiver that already switched
    assert verify(body, headers, OLD, now=at)  # a receiver that has not yet
    assert verify(body, headers, [OLD, NEW], now=at)
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify(body, headers, signing.new_secret(), now=at)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b, h: (b + b" ", h),
        lambda b, h: (b.replace(b"succeeded", b"dead"), h),
        lambda b, h: (b, {**h, "webhook-id": "msg_other"}),
        lambda b, h: (b, {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}),
        lambda b, h: (b, {**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}),
        lambda b, h: (b, {**h, "webhook-signature": "v1,"}),
        lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-signature"}),
        lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-id"}),
        lambda b, h: (b, {**h, "webhook-timestamp": "soon"}),
    ],
)
def test_anything_altered_or_missing_is_refused(tamper) -> None:
    body, headers, at = delivery([NEW])
    body, headers = tamper(body, headers)
    with pytest.raises(WebhookVerificationError):
        verify(body, headers, NEW, now=at)


def test_a_stale_or_future_timestamp_is_refused_as_a_replay() -> None:
    body, headers, at = delivery([NEW])
    for now in (at + 301, at - 301):
        with pytest.raises(WebhookVerificationError, match="replay"):
            verify(body, headers, NEW, now=now)
    assert verify(body, headers, NEW, tolerance=3600, now=at + 3000)


def test_header_names_are_matched_whatever_their_case() -> None:
    body, headers, at = delivery([NEW])
    shouting = {k.upper(): v for k, v in headers.items()}
    assert verify(body, shouting, NEW, now=at)


def test_secrets_are_checked() -> None:
    assert len(signing.decode_secret(NEW)) == 32
    for bad, why in [
        ("plain", "starts with"),
        ("whsec_!!!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64"),
    ]:
        with pytest.raises(ValueError, match=why):
            signing.decode_secret(bad)
    with pytest.raises(ValueError, match="at least one"):
        signing.headers("msg_1", 1, b"{}", [])
    with pytest.raises(WebhookVerificationError):
        verify(b"{}", {"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,x"},
               "nope", now=1)  # fmt: skip


def test_the_client_verify_imports_nothing_of_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, spool_client.webhooks; "
        "print(','.join(m for m in sys.modules if m.split('.')[0] in "
        "('chalicelib', 'chalice', 'boto3', 'botocore', 'pydantic', 'psycopg', 'local')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_a_body_that_is_not_json_is_refused_even_when_signed() -> None:
    body, headers, at = delivery([NEW], body=b"not json")
    with pytest.raises(WebhookVerificationError, match="JSON"):
        verify(body, headers, NEW, now=at)
    assert json.loads(delivery([NEW])[0])
