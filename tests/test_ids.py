"""Job ids: unguessable, in the one form every edge checks, and made in clock order so a
store's index on `id` grows at its end."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.ids import looks_like_job_id, new_job_id
from chalicelib.models import NewJob
from chalicelib.storage.sqlite import SQLiteStore


def test_a_new_id_has_the_one_form_every_edge_accepts() -> None:
    for _ in range(1000):
        job_id = new_job_id()
        assert looks_like_job_id(job_id), job_id


@pytest.mark.parametrize(
    "text",
    [
        "j_" + "A" * 32,  # upper case is not a form Spool makes
        "j_" + "0" * 31,
        "j_" + "0" * 33,
        "k_" + "0" * 32,
        "j_" + "0" * 31 + "g",
        "j_" + "0" * 31 + "\ud800",
        "",
    ],
)
def test_other_texts_are_not_job_ids(text: str) -> None:
    assert not looks_like_job_id(text)


def test_ids_made_before_the_clock_part_are_still_job_ids() -> None:
    """Stores written by earlier versions hold ids of 32 random hex digits."""
    assert looks_like_job_id("j_" + secrets.token_hex(16))


def test_ids_sort_in_the_order_of_the_milliseconds_they_were_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_700_000_000_000_000_000]  # ns
    monkeypatch.setattr("chalicelib.ids.time.time_ns", lambda: now[0])
    made = []
    for _ in range(200):
        made.append(new_job_id())
        now[0] += 1_000_000  # one millisecond
    assert made == sorted(made)
    assert made[0][2:14] == format(1_700_000_000_000, "012x")


def test_ids_of_one_millisecond_differ_in_80_random_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("chalicelib.ids.time.time_ns", lambda: 1_700_000_000_000_000_000)
    made = [new_job_id() for _ in range(5000)]
    assert len(set(made)) == len(made)
    tails = [int(job_id[14:], 16) for job_id in made]
    assert all(0 <= t < 2**80 for t in tails)
    # Every one of the 80 bits varies across the ids (a constant or short tail would not).
    varying = 0
    for tail in tails:
        varying |= tail ^ tails[0]
    assert varying == 2**80 - 1


def _pages_written(path: Path, make_id: Callable[[], str]) -> int:
    """WAL frames one batch of 100 jobs writes into a store already holding 10,000."""
    clock = FakeClock()
    store = SQLiteStore(str(path), clock=clock)
    try:
        for _ in range(10):
            store.add(
                [
                    NewJob(id=make_id(), type="echo", payload={"n": 1}, run_at=clock.now())
                    for _ in range(1000)
                ]
            )
        reader = sqlite3.connect(path)
        try:
            reader.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            store.add(
                [
                    NewJob(id=make_id(), type="echo", payload={"n": 1}, run_at=clock.now())
                    for _ in range(100)
                ]
            )
            busy, frames, _ = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            reader.close()
    finally:
        store.close()
    assert busy == 0
    return int(frames)


def test_a_batch_of_new_ids_writes_fewer_pages_than_random_ids_did(tmp_path: Path) -> None:
    """Why the clock comes first: random ids put each job of a batch on a leaf page of
    its own in the primary key's index, and every such page went to the WAL."""
    ordered = _pages_written(tmp_path / "ordered.db", new_job_id)
    scattered = _pages_written(tmp_path / "random.db", lambda: "j_" + secrets.token_hex(16))
    assert ordered < 100 < scattered, (ordered, scattered)
