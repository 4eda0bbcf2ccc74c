"""local/cli_ranges.py: every number option's refusal, word for word.

The options' checkers share one shape (local/cli_ranges.py); each keeps the words
its users see, which the tests of each command pin only in part. This pins every
one, for a word and for a number out of range, and what each takes."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from chalicelib.config import MAX_PRIORITY, MIN_PRIORITY
from local import cli, job_commands, serve, sqs_poller, top

REFUSED: list[tuple[str, Callable[[str], object], str, str]] = [
    ("positive", cli.positive, "x", "'x' is not a whole number"),
    ("positive", cli.positive, "0", "must be at least 1, not 0"),
    ("positive", cli.positive, "-07", "must be at least 1, not -7"),
    (
        "priority",
        cli.whole_number(MIN_PRIORITY, MAX_PRIORITY),
        "1.5",
        f"must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}, not '1.5'",
    ),
    ("port", cli.port_number, "http", "'http' is not a port number"),
    ("port", cli.port_number, "65536", "a port is 0 to 65535, not 65536"),
    (
        "serve --port",
        serve._port,
        "abc",
        "must be 0-65535 (0 picks a free one; under make run: PORT=N make run), not 'abc'",
    ),
    ("serve --threads", serve._threads, "0", f"must be 1-{serve.MAX_THREADS}, not '0'"),
    (
        "serve --processes",
        serve._processes,
        "65",
        "must be between 1 and 64 (about one per core is the useful number), not '65'",
    ),
    (
        "poller --wait",
        sqs_poller._long_poll,
        "21",
        "must be a whole number from 0 to 20 (SQS's long poll), not '21'",
    ),
    (
        "poller --window",
        sqs_poller._window,
        "nan",
        "must be a number of seconds from 0 to 300 (the event source's), not 'nan'",
    ),
    (
        "poller --max-seconds",
        sqs_poller._seconds,
        "0",
        "must be a number of seconds above 0, not '0'",
    ),
    (
        "poller --idle-exit",
        sqs_poller._seconds,
        "inf",
        "must be a number of seconds above 0, not 'inf'",
    ),
    ("top --interval", top._interval, "0.05", "'0.05' is not a number of seconds from 0.1 to 3600"),
    ("top --iterations", top._iterations, "-1", "'-1' is not a whole number, 0 or more"),
    ("--limit", job_commands._page_size, "ten", "'ten' is not a whole number"),
    ("--limit", job_commands._page_size, "1001", "must be at least 1 and at most 1000, not 1001"),
]


@pytest.mark.parametrize(
    ("check", "text", "words"),
    [case[1:] for case in REFUSED],
    ids=[f"{case[0]}-{case[2]}" for case in REFUSED],
)
def test_a_refusal_keeps_its_words(check: Callable[[str], object], text: str, words: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        check(text)
    assert str(refused.value) == words


TAKEN: list[tuple[Callable[[str], object], str, object]] = [
    (cli.positive, " 7 ", 7),
    (cli.port_number, "0", 0),
    (serve._port, "65535", 65535),
    (serve._processes, "64", 64),
    (sqs_poller._long_poll, "0", 0),
    (sqs_poller._window, "300", 300.0),
    (sqs_poller._seconds, "0.5", 0.5),
    (top._interval, "0.1", 0.1),
    (top._iterations, "0", 0),
    (job_commands._page_size, "1_000", 1000),  # int()'s grammar, as before
]


@pytest.mark.parametrize(("check", "text", "value"), TAKEN)
def test_a_number_in_range_is_taken(
    check: Callable[[str], object], text: str, value: object
) -> None:
    assert check(text) == value
