"""docs/webhooks.md's two receivers verify what Spool signs, as the page says they do.

The page gives a receiver built on `spool_client.webhooks.verify` and the check
spelt out with the standard library "in any language". Neither ran anywhere: had
the signing scheme changed (the string signed, the header names, the prefix),
a receiver copied from the page would refuse every real delivery. Here each block
is run against headers made by the server's own signing code
(chalicelib/webhooks/signing.py), with the page's placeholder secrets replaced by
real ones.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

from chalicelib.webhooks.signing import decode_secret, headers, new_secret
from tests.procs import ROOT

PAGE = ROOT / "docs" / "webhooks.md"
BODY = b'{"type":"job.succeeded","data":{"id":"j_1","state":"succeeded"}}'


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.M | re.S)


def _block(marker: str) -> str:
    [block] = [b for b in python_blocks() if marker in b]
    return block


def _signed(secrets: list[str], stamp: int | None = None) -> dict[str, str]:
    when = int(time.time()) if stamp is None else stamp
    return headers("msg_1", when, BODY, [decode_secret(s) for s in secrets])


def test_the_standard_library_check_accepts_what_spool_signs() -> None:
    namespace: dict[str, Any] = {}
    exec(_block("def verify(raw_body: bytes"), namespace)
    verify = namespace["verify"]
    new, old = new_secret(), new_secret()
    sent = _signed([new, old])  # a rotation: signed with both
    assert verify(BODY, sent, new) and verify(BODY, sent, old)
    assert not verify(BODY, sent, new_secret())  # another secret
    assert not verify(BODY + b" ", sent, new)  # the body as received, byte for byte
    assert not verify(BODY, _signed([new], stamp=int(time.time()) - 600), new)  # a replay


def test_the_client_receiver_answers_as_its_comments_say() -> None:
    new, old = new_secret(), new_secret()
    code = _block("def spool_webhook(request)")
    code = code.replace("whsec_NEW...", new).replace("whsec_OLD...", old)
    seen: set[str] = set()
    handled: list[tuple[str, Any]] = []

    def already_seen(msg_id: str) -> bool:
        if msg_id in seen:
            return True
        seen.add(msg_id)
        return False

    namespace: dict[str, Any] = {
        "already_seen": already_seen,
        "handle": lambda kind, data: handled.append((kind, data)),
    }
    exec(code, namespace)
    receive = namespace["spool_webhook"]
    signed = SimpleNamespace(body=BODY, headers=_signed([old]))  # signed before a rotation
    assert receive(signed) == 204
    assert handled == [("job.succeeded", {"id": "j_1", "state": "succeeded"})]
    assert receive(signed) == 200 and len(handled) == 1  # a repeat is dropped
    forged = SimpleNamespace(body=BODY, headers=_signed([new_secret()]))
    assert receive(forged) == 401


def test_the_standard_library_check_says_false_to_anything_a_sender_writes() -> None:
    """The page's check is `-> bool`: whatever a sender puts in the headers, a receiver
    copied from it refuses (False), never raises (a 500 on every odd delivery). It
    raised TypeError for a non-ASCII signature (compare_digest of str), ValueError for
    a timestamp that is no number, OverflowError for one of 400 digits, KeyError for a
    missing header, and verified a forgery signed with the empty key of "whsec_"."""
    namespace: dict[str, Any] = {}
    exec(_block("def verify(raw_body: bytes"), namespace)
    verify = namespace["verify"]
    secret = new_secret()
    good = _signed([secret])
    hostile = [
        {**good, "webhook-signature": "v1,é"},
        {**good, "webhook-timestamp": "soon"},
        {**good, "webhook-timestamp": "9" * 400},
        {**good, "webhook-timestamp": "1" * 300},
        {k: v for k, v in good.items() if k != "webhook-signature"},
        {k: v for k, v in good.items() if k != "webhook-timestamp"},
    ]
    for sent in hostile:
        assert verify(BODY, sent, secret) is False, sent
    empty = headers("msg_1", int(time.time()), BODY, [b""])
    assert verify(BODY, empty, "whsec_") is False  # "whsec_" + an unset variable
    assert verify(BODY, good, secret) is True
