"""The README's curl lines run as written against a laptop `spool serve` (as `make run`
starts it: no keys configured, so it makes a development key and prints it).

tests/test_docs.py checks that every curl line names a route app.py declares; it does
not send them, so a body or query parameter that rotted (a renamed field, a flag the
route stopped taking) went unseen. Here each line is sent with curl itself, in the
README's order, `$H` standing for the header the README builds from the printed key,
and must answer 2xx. `j_...` is a job in the state the route needs: a waiting job for
a cancel, a dead one for a redrive, otherwise the job the README's first line enqueued;
`NEXT_CURSOR` is a real page's next_cursor.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.procs import Served, guarded_env, spool_serve, stop
from tests.test_docs import README, _commands, _fenced_blocks

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the README's lines need curl")


def curl_lines() -> list[list[str]]:
    """The README's curl commands, each split into words as the shell would (comments
    dropped; `"$H"` left as the word `$H`)."""
    found = []
    for block in _fenced_blocks(README.read_text(encoding="utf-8")):
        for command in _commands(block):
            if command.lstrip().startswith("curl "):
                found.append(shlex.split(command, comments=True))
    return found


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    folder = tmp_path_factory.mktemp("readme-curls")
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{folder}/spool.db", SPOOL_DEMO_HANDLERS="true")
    for name in ("SPOOL_API_KEYS", "SPOOL_METRICS_KEYS", "SPOOL_API_KEYS_FILE"):
        env.pop(name, None)  # as a fresh shell runs `make run`
    served = spool_serve(env=env)
    try:
        found = re.search(r"dev API key \(tenant \w+\), made for this run: (\S+)", served.banner)
        assert found, served.banner
        yield served, found.group(1)
    finally:
        stop(served.proc)


class Jobs:
    """Jobs in the state a line's route needs, made through the API."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.headers = url, {"X-API-Key": key}
        self.first: str | None = None  # the job the README's first enqueue made

    def _enqueue(self, job: dict[str, object]) -> str:
        answer = requests.post(f"{self.url}/enqueue", json=job, headers=self.headers, timeout=30)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def waiting(self) -> str:
        return self._enqueue({"type": "echo", "delay": 3600})

    def dead(self) -> str:
        job = self._enqueue({"type": "fail", "payload": {"always": True}, "max_attempts": 1})
        state = requests.get(
            f"{self.url}/status/{job}?wait=20", headers=self.headers, timeout=30
        ).json()["state"]
        assert state == "dead", state
        return job

    def cursor(self) -> str:
        """A real next_cursor of `GET /jobs?state=queued` (for the README's NEXT_CURSOR)."""
        self.waiting(), self.waiting()
        page = requests.get(
            f"{self.url}/jobs?state=queued&limit=1", headers=self.headers, timeout=30
        ).json()
        assert page["next_cursor"], page
        return str(page["next_cursor"])

    def for_line(self, words: list[str]) -> str:
        text = " ".join(words)
        if "redrive" in text:
            return self.dead()
        if "/cancel" in text:
            return self.waiting()
        if self.first is None:  # the README's enqueue failed (and is reported): go on
            self.first = self._enqueue({"type": "echo"})
        return self.first


def _send(words: list[str], base: str, key: str, jobs: Jobs, out: Path) -> tuple[int, str]:
    """Run one README line with curl: its words, the real address, key and job id."""
    job = jobs.for_line(words) if any("j_..." in w for w in words) else ""
    cursor = jobs.cursor() if any("NEXT_CURSOR" in w for w in words) else ""
    args = []
    for word in words:
        word = word.replace("$H", f"X-API-Key: {key}").replace("j_...", job)
        word = word.replace("NEXT_CURSOR", cursor)
        word = re.sub(r"^(http://)?localhost:8000", base, word)
        args.append(word)
    assert args[0] == "curl" and any(a.startswith(base) for a in args), words
    ran = subprocess.run(
        [*args, "-o", str(out), "-w", "%{http_code}", "--max-time", "60"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert ran.returncode == 0, f"{' '.join(words)}: curl failed: {ran.stderr}"
    return int(ran.stdout), out.read_text(encoding="utf-8", errors="replace")


def test_the_readme_shows_curl_lines_that_need_a_job() -> None:
    lines = [" ".join(w) for w in curl_lines()]
    assert len(lines) >= 20
    assert any("j_..." in line and "redrive" in line for line in lines)
    assert any("j_..." in line and "cancel" in line for line in lines)


def test_every_curl_line_in_the_readme_answers_2xx(
    laptop: tuple[Served, str], tmp_path: Path
) -> None:
    served, key = laptop
    jobs = Jobs(served.url, key)
    failures = []
    for n, words in enumerate(curl_lines()):
        status, body = _send(words, served.url, key, jobs, tmp_path / f"answer-{n}")
        if not 200 <= status < 300:
            failures.append(f"{' '.join(words)}\n  -> {status} {body[:300]}")
        elif jobs.first is None and any(w.endswith("/enqueue") for w in words):
            jobs.first = json.loads(body).get("id")  # a single job's answer names it
    assert not failures, "README.md's curl lines that fail as written:\n" + "\n".join(failures)
