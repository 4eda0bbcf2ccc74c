"""`--all` over a listing that never ends prints as it goes and stops at a bound
(stop 59, helper d).

Was (a server on a loopback port whose every page names a new next_cursor, "c1",
"c2", ...: no circle for stop 58's check to find): `spool jobs --all` (and `spool dlq
list --all`) kept every job in memory and printed nothing until the listing ended,
which it never did; the person saw nothing, and its memory grew until killed.

Now each page's rows are printed as it arrives (the table's header once; `--json`
writes the same document as before, a page at a time), and `--all` stops after the
page that brings it to `--max-jobs` (1,000,000 unless given): the line on stderr says
so, with the cursor to go on from, and the command exits 1, since "all" was not read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.canned_answers import CannedServer
from tests.procs import guarded_env
from tests.test_client_probe import JOB

pytestmark = pytest.mark.timeout(60)

SPOOL = Path(sys.executable).with_name("spool")
KEY = "endless-key-0123456789"


class Endless(CannedServer):
    """Pages of two jobs for ever, page N leading to "cN+1"; page `hold_at` waits for
    `go` (bounded) before it answers."""

    def __init__(self, hold_at: int | None = None) -> None:
        self.go = threading.Event()

        def page(path: str) -> dict[str, object]:
            given = parse_qs(urlsplit(path).query).get("cursor", ["c0"])[0]
            number = int(given[1:])
            if number == hold_at:
                self.go.wait(30)
            jobs = [{**JOB, "id": f"j_{number:016d}{i:016d}"} for i in range(2)]
            return {"jobs": jobs, "next_cursor": f"c{number + 1}"}

        super().__init__(200, page)


@pytest.fixture
def endless() -> Iterator[Endless]:
    server = Endless()
    yield server
    server.close()


def _spool(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPOOL), *argv],
        env=guarded_env(SPOOL_URL=url, SPOOL_API_KEY=KEY),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("command", [["jobs"], ["dlq", "list"]])
def test_all_stops_at_the_bound_with_the_cursor_to_go_on(
    endless: Endless, command: list[str]
) -> None:
    done = _spool(endless.url, *command, "--all", "--max-jobs", "5")
    assert done.returncode == 1, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].startswith("id") and len(rows) == 1 + 6  # the header once, 3 pages
    [line] = done.stderr.splitlines()
    assert line.startswith("6 ") and "--max-jobs 5" in line, line
    assert line.endswith("--cursor c3"), line
    assert len(endless.paths) == 3


def test_all_as_json_is_one_document_with_the_cursor(endless: Endless) -> None:
    done = _spool(endless.url, "jobs", "--all", "--max-jobs", "3", "--json")
    assert done.returncode == 1, done.stderr
    listed = json.loads(done.stdout)
    assert len(listed["jobs"]) == 4 and listed["next_cursor"] == "c2"
    assert done.stdout == json.dumps(listed, indent=2) + "\n"  # the shape it always had


def test_rows_are_printed_as_pages_arrive() -> None:
    """The third page is held until the first two pages' rows have been read."""
    server = Endless(hold_at=2)
    proc = subprocess.Popen(
        [str(SPOOL), "jobs", "--all", "--max-jobs", "10"],
        env=guarded_env(SPOOL_URL=server.url, SPOOL_API_KEY=KEY),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out = proc.stdout
        assert out is not None
        early: list[str] = []
        reader = threading.Thread(target=lambda: early.extend(out.readline() for _ in range(5)))
        reader.start()
        reader.join(30)
        assert len(early) == 5 and all(r.startswith("j_") for r in early[1:]), early
        assert not server.go.is_set()  # read while page 3 was still held
        server.go.set()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, err
    finally:
        server.go.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.close()
