"""Job ids take their 80 random bits straight from os.urandom (stop 42), the source
secrets.token_hex reads through three Python frames; a single enqueue's id is not
sorted. The form, the order of a batch's ids and their randomness's source stay."""

from __future__ import annotations

import os
import random
import re
import secrets
import sys
from typing import Any

import pytest

from chalicelib import ids

FORM = re.compile(r"j_[0-9a-f]{32}")


def test_secrets_token_hex_is_os_urandom_hex(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the cut rests on: token_hex(n) is the hex of n bytes of os.urandom (random
    binds os.urandom as _urandom, which SystemRandom.randbytes reads)."""
    assert random._urandom is os.urandom  # type: ignore[attr-defined]
    seen: list[int] = []

    def counting(n: int) -> bytes:
        seen.append(n)
        return b"\x01" * n

    monkeypatch.setattr(random, "_urandom", counting)
    assert secrets.token_hex(10) == "01" * 10
    assert seen == [10]


def test_the_random_part_comes_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(n)))
    made = ids.new_job_id()
    assert made.endswith(bytes(range(10)).hex())
    assert FORM.fullmatch(made)


def test_no_frame_of_secrets_or_random_runs_for_one_id() -> None:
    called: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        name = frame.f_code.co_filename
        if event == "call" and (name.endswith("secrets.py") or name.endswith("random.py")):
            called.append(frame.f_code.co_name)

    sys.setprofile(watch)
    try:
        ids.new_job_ids(1)
    finally:
        sys.setprofile(None)
    assert called == []


@pytest.mark.parametrize("count", [0, 1, 2, 50])
def test_ids_keep_their_form_and_a_batch_its_order(count: int) -> None:
    made = ids.new_job_ids(count)
    assert len(made) == count == len(set(made))
    assert made == sorted(made)
    assert all(FORM.fullmatch(each) and ids.looks_like_job_id(each) for each in made)
