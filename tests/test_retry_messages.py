"""What a handler author is told when a backoff policy is impossible.

Written to kill the mutants `make mutation MUTANTS='chalicelib.retry*'` left alive
(docs/testing.md): the refusals were tested, their explanations were not.
"""

from __future__ import annotations

import enum
import re
import reprlib
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.handlers import Registry
from chalicelib.retry import RetryPolicy
from chalicelib.service import EnqueueRequest, Service
from chalicelib.storage.sqlite import SQLiteStore


def refused(message: str) -> pytest.RaisesExc[ValueError]:
    """A ValueError with exactly this message, not one that merely contains it."""
    return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize("attempts", [0, -1])
def test_too_few_attempts_are_refused_saying_why(attempts: int) -> None:
    with refused("max_attempts must be at least 1"):
        RetryPolicy(max_attempts=attempts)


@pytest.mark.parametrize(
    ("base", "cap", "name"),
    [(-1.0, 10.0, "base"), (1.0, -0.5, "cap"), (float("nan"), 1.0, "base"), (1.0, 1e999, "cap")],
)
def test_negative_or_infinite_delays_are_refused_saying_why(
    base: float, cap: float, name: str
) -> None:
    with refused(f"backoff {name} must be a finite, non-negative number of seconds"):
        RetryPolicy(base=base, cap=cap)


# A handler's max_attempts is every job of its type's unless the client gives one,
# and the client's is held to 1..100. Unbounded, 2**63 failed every enqueue of the
# type on SQLite (2**31 on Postgres's integer column) and not on the memory store;
# a RetryPolicy given as `backoff=` skipped the decorator's whole-number check, so
# 2.5 reached the store as 2.5.
@pytest.mark.parametrize(
    "attempts", [101, 2**31, 2**63, 10**400], ids=["101", "2**31", "2**63", "10**400"]
)
def test_more_attempts_than_a_client_may_ask_for_are_refused(attempts: int) -> None:
    shown = reprlib.repr(attempts)  # 10**400's 401 digits are shortened
    with refused(f"max_attempts must be at most 100, not {shown}"):
        RetryPolicy(max_attempts=attempts)
    with refused(f"handler 'forever': max_attempts must be at most 100, not {shown}"):
        Registry().handler("forever", max_attempts=attempts)


@pytest.mark.parametrize("attempts", [2.5, 3.0, True, "3", None], ids=str)
def test_a_max_attempts_that_is_not_a_whole_number_is_refused(attempts: object) -> None:
    with refused(f"max_attempts must be a whole number, not {attempts!r}"):
        RetryPolicy(max_attempts=attempts)  # type: ignore[arg-type]


class Tries(enum.IntEnum):
    FEW = 3
    MOST = 100


def test_an_integer_like_max_attempts_is_kept_as_a_plain_int() -> None:
    assert RetryPolicy(max_attempts=Tries.MOST).max_attempts == 100
    assert type(RetryPolicy(max_attempts=Tries.FEW).max_attempts) is int


def test_a_handlers_max_attempts_of_100_is_every_jobs_on_sqlite(tmp_path: Path) -> None:
    reg = Registry()
    reg.handler("patient", backoff=RetryPolicy(max_attempts=100))(lambda payload: None)
    store = SQLiteStore(str(tmp_path / "spool.db"), FakeClock())
    try:
        [added] = Service(store, reg).enqueue([EnqueueRequest(type="patient", payload={})], "t")
        stored = store.get(added.job.id)
        assert stored is not None and stored.max_attempts == 100
    finally:
        store.close()


# An int too large for a float (10**400) raised OverflowError from math.isfinite
# instead of the ValueError that says what is wrong.
@pytest.mark.parametrize(
    ("base", "cap", "name"),
    [(10**400, 1.0, "base"), (1.0, 10**400, "cap"), (1.0, -(10**400), "cap")],
    ids=["base", "cap", "negative-cap"],
)
def test_a_backoff_too_large_for_a_float_is_refused_saying_why(
    base: float, cap: float, name: str
) -> None:
    with refused(f"backoff {name} must be a finite, non-negative number of seconds"):
        RetryPolicy(base=base, cap=cap)
    with refused(
        f"handler 'huge': backoff {name} must be a finite, non-negative number of seconds"
    ):
        Registry().handler("huge", backoff=(base, cap))


def test_a_timeout_too_large_for_a_float_is_refused_saying_why() -> None:
    with refused("handler 'huge': timeout must be a positive, finite number of seconds"):
        Registry().handler("huge", timeout=10**400)


@pytest.mark.parametrize(
    "declared",
    [
        {"max_attempts": 10**400},
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"backoff": (10**400, 1.0)},
        {"backoff": (-1.0, 1.0)},
    ],
    ids=["huge", "zero", "fraction", "huge-base", "negative-base"],
)
def test_a_refused_retry_declaration_names_its_handler_in_one_short_line(
    declared: dict[str, object],
) -> None:
    with pytest.raises(ValueError) as caught:
        Registry().handler("send_report", **declared)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("handler 'send_report': "), message
    assert len(message) < 200 and "\n" not in message, message
