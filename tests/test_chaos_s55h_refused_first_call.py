"""Chaos on the remote command line (s55, helper H): `spool enqueue --count N` and
`spool dlq redrive --all` whose very first call the server refuses (a wrong or missing
key, an unknown job type); a key of non-ASCII characters, refused before any call,
already said only that.

Nothing was stored or redriven, and the refusal proves it; before, each said the
opposite first: "enqueued 0 of 5 job(s) before it stopped (the last call may have
stored more ...)" above the server's "none were stored", and "the redrive failed
before the server answered its first call, which may have been applied in part"
above its "invalid API key". A failure that may have reached the server's store
(a 5xx, a lost connection) still says what may be left behind
(tests/test_redrive_interrupted.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.clock import FakeClock
from chalicelib.storage.base import JobStore
from local import cli
from tests.apikit import KEY_A, TENANT_A
from tests.redrive_support import dead, serving

pytestmark = pytest.mark.timeout(60)

MAY_HAVE = ("may have stored more", "may have been applied in part", "before it stopped")


def said_lines(err: str) -> list[str]:
    """The command's own lines (the in-process server logs to the same stderr)."""
    return [line for line in err.splitlines() if line.startswith("spool:")]


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, JobStore, FakeClock]]:
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    with serving(tmp_path, monkeypatch) as served:
        yield served


REFUSALS = {
    "wrong key": (["--key", "wrong-key-0123456789"], "invalid API key"),
    "no key": ([], "no API key given"),
    "non-ascii key": (["--key", "ключ-0123456789abc"], "visible ASCII"),
}


def _said_only(capsys: pytest.CaptureFixture[str], said: str) -> None:
    """The refusal, in one line, and no note that something may have been changed."""
    out, err = capsys.readouterr()
    assert said in err
    assert not any(words in err for words in MAY_HAVE), err
    assert len(said_lines(err)) == 1, err
    assert out == ""


@pytest.mark.parametrize("json_out", [False, True], ids=["table", "json"])
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_redrive_all_refused_at_its_first_call_says_only_why(
    served: tuple[str, JobStore, FakeClock],
    capsys: pytest.CaptureFixture[str],
    refusal: str,
    json_out: bool,
) -> None:
    url, store, clock = served
    jobs = dead(store, clock, TENANT_A, 3)
    key, said = REFUSALS[refusal]
    argv = ["dlq", "redrive", "--all", "--url", url, *key, *(["--json"] if json_out else [])]
    assert cli.main(argv) == 2
    _said_only(capsys, said)
    assert all(store.get(j).state.value == "dead" for j in jobs)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("job_type", "key", "said"),
    [
        ("echo", "wrong-key-0123456789", "invalid API key"),
        ("echo", "", "no API key given"),
        ("echo", "ключ-0123456789abc", "visible ASCII"),
        ("no_such_type", KEY_A, "none were stored"),
    ],
    ids=["wrong key", "no key", "non-ascii key", "unknown type"],
)
def test_an_enqueue_count_refused_at_its_first_call_says_only_why(
    served: tuple[str, JobStore, FakeClock],
    capsys: pytest.CaptureFixture[str],
    job_type: str,
    key: str,
    said: str,
) -> None:
    url, store, _ = served
    argv = ["enqueue", job_type, "--count", "5", "--url", url, *(["--key", key] if key else [])]
    assert cli.main(argv) == 2
    _said_only(capsys, said)
    assert sum(store.counts().values()) == 0


def test_a_first_call_answered_500_still_says_it_may_have_been_applied(
    served: tuple[str, JobStore, FakeClock],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The other side of the line: a 5xx proves nothing, so the note stays."""
    from chalicelib.service import Service
    from tests.redrive_support import fail_on_call

    url, store, clock = served
    dead(store, clock, TENANT_A, 2)
    fail_on_call(monkeypatch, Service, "redriving", 1, RuntimeError("planned failure"))
    assert cli.main(["dlq", "redrive", "--all", "--url", url, "--key", KEY_A]) == 1
    assert "may have been applied in part" in capsys.readouterr().err
