"""docs/aws.md's offline commands, as a new user runs them: moto_server, `spool serve
--no-worker`, `python -m local.sqs_poller`, then `spool enqueue echo` and `spool status`
against the API, in an environment that sets nothing but what the doc exports (no
SPOOL_DEMO_HANDLERS, no SPOOL_API_KEYS). Before, the API took the echo job in laptop
mode and the poller, without the demo handlers, buried it as an unknown type.

Also the poller's stand-in for EventBridge (local/sqs_poller.py Schedule), which
invokes app.py's scheduled function at its rate, in process against moto.
"""

from __future__ import annotations

import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chalice.app import Rate
from moto import mock_aws

import app as spool_app
from chalicelib.clock import FakeClock
from chalicelib.models import JobState
from chalicelib.service import EnqueueRequest
from chalicelib.storage.dynamodb import DynamoStore
from local.sqs_poller import Schedule, demo_default, schedule_period
from tests.apikit import TENANT_A, installed, settings_for
from tests.procs import guarded_env, stop

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "aws.md"
STARTUP = 60.0
# Set by the developer's shell or by tests/conftest.py; the doc sets none of them.
UNSET = ("SPOOL_DEMO_HANDLERS", "SPOOL_API_KEYS", "SPOOL_URL", "SPOOL_API_KEY", "SPOOL_STORE_URL")


def offline_commands() -> list[str]:
    """The shell lines of docs/aws.md's "Offline, the same shape" block, comments cut."""
    text = DOC.read_text()
    section = text[text.index("### Offline, the same shape") :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the offline section has no sh block"
    return [line for line in block.group(1).splitlines() if shlex.split(line, comments=True)]


class Output:
    """A child's merged output, read on a thread so it never blocks on a full pipe."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._fresh: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)
            self._fresh.put(line)

    def expect(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            try:
                line = self._fresh.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            found = re.search(pattern, line)
            if found:
                return found
        pytest.fail(f"never printed {pattern!r}; output: {''.join(self.lines)!r}")


@dataclass
class Shell:
    """Runs the doc's lines as a person would type them, one after the other."""

    env: dict[str, str]
    moto_port: int = 0  # read from moto_server's banner once it runs
    background: list[subprocess.Popen[str]] = field(default_factory=list)
    outputs: dict[str, Output] = field(default_factory=dict)
    served: str = ""
    key: str = ""
    job_id: str = ""

    def words(self, line: str) -> list[str]:
        words = shlex.split(line, comments=True)
        if words and words[-1] == "&":
            words = words[:-1]
        out = []
        for word in words:
            word = word.replace("http://127.0.0.1:5000", f"http://127.0.0.1:{self.moto_port}")
            if self.served:
                word = word.replace("http://127.0.0.1:8000", self.served)
            word = word.replace("SPOOL_API_KEY=dev-...", f"SPOOL_API_KEY={self.key}")
            word = self.job_id if word == "j_..." else word
            if word.startswith(".venv/bin/"):
                word = str(BIN / word.removeprefix(".venv/bin/"))
            out.append(word)
        if out[:2] == [str(BIN / "moto_server"), "-H"]:
            # Port 0: moto binds a free port itself and prints it. A port chosen here
            # could be taken (by a test on another worker) before moto bound it, and
            # then the wait below would have found that other server answering.
            out[out.index("-p") + 1] = "0"
        if out[:2] == [str(BIN / "pip"), "install"]:
            out.insert(2, "--no-index")  # already satisfied here; the test asks no registry
        if out[1:3] == ["serve", "--no-worker"]:
            out += ["--port", "0"]  # 8000 may be taken here; the URL is read from the banner
        return out

    def run(self, line: str) -> subprocess.CompletedProcess[str] | None:
        words = self.words(line)
        if words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                self.env[name] = value
            return None
        if line.split("#", 1)[0].rstrip().endswith("&"):
            self.start(words)
            return None
        return subprocess.run(
            words, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )

    def start(self, words: list[str]) -> None:
        process = subprocess.Popen(
            words, cwd=ROOT, env=dict(self.env), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.background.append(process)
        output = Output(process)
        name = Path(words[0]).name if words[0] != str(BIN / "python") else words[2]
        name = words[1] if name == "spool" else name
        self.outputs[name] = output
        if name == "moto_server":  # a person waits for it to answer before going on
            found = output.expect(r"Running on http://127\.0\.0\.1:(\d+)")
            self.moto_port = int(found.group(1))
        elif name == "serve":
            self.served = output.expect(r"serving app\.py on (http://\S+)").group(1)
            self.key = output.expect(r"dev API key .*: (\S+)").group(1)
        elif name == "local.sqs_poller":
            output.expect(r"polling ")


# A new user's laptop has no AWS settings (tests/procs.py's guard sets these): the doc
# must give them. Without, `spool serve` said "unexpected error: NoCredentialsError".
AWS_UNSET = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    env = guarded_env()
    for name in (*UNSET, *AWS_UNSET):
        env.pop(name, None)
    # ...and no ~/.aws to fall back on (metadata stays off: tests/procs.py's guard).
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws")
    sh = Shell(env)
    try:
        yield sh
    finally:
        for process in reversed(sh.background):
            stop(process)


@pytest.mark.slow
@pytest.mark.aws
@pytest.mark.timeout(240)
def test_the_offline_commands_run_an_echo_job_as_written(shell: Shell) -> None:
    lines = offline_commands()
    assert any("local.sqs_poller" in line for line in lines)
    # A `.venv` built by `make run` alone has no moto_server: the doc installs it first.
    assert "pip install" in lines[0] and "moto[server" in lines[0], lines[0]
    assert not any("SPOOL_DEMO_HANDLERS" in line for line in lines)
    for line in lines:
        done = shell.run(line)
        if done is None:
            continue
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        if " enqueue " in line:
            found = re.search(r"\b(j_[0-9a-f]{32})\b", done.stdout)
            assert found is not None, done.stdout
            shell.job_id = found.group(1)
    assert shell.job_id, "the doc enqueued nothing"
    assert done is not None and "succeeded" in done.stdout  # the last: `spool status --wait`

    poller = shell.outputs["local.sqs_poller"]
    printed = "".join(poller.lines)
    assert "demo       echo, sleep, fail" in printed
    assert "drain_due every 60s" in printed
    # One line per log record (a basicConfig beside Spool's handler printed each twice).
    succeeded = [line for line in poller.lines if "job succeeded" in line]
    assert len(succeeded) == 1, printed


# -- the poller's defaults --------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "offered"),
    [
        ({}, True),  # laptop mode, as the doc runs it
        ({"SPOOL_DEMO_HANDLERS": "false"}, False),
        (
            {"SPOOL_API_KEYS": "k-0123456789abcdef=acme"},
            False,
        ),  # `spool serve` offers none then either
        ({"SPOOL_API_KEYS": "k-0123456789abcdef=acme", "SPOOL_DEMO_HANDLERS": "1"}, True),
    ],
)
def test_the_poller_offers_the_demo_handlers_when_spool_serve_does(
    environ: dict[str, str], offered: bool
) -> None:
    env = dict(environ)
    assert demo_default(env) is offered
    assert env.get("SPOOL_DEMO_HANDLERS", "false").lower() in (
        ("true", "1") if offered else ("false",)
    )


def test_a_bad_store_url_is_one_line_and_exit_2() -> None:
    env = guarded_env(SPOOL_STORE_URL="dynamodb://jobs?queue=jobs&shard=2")
    done = subprocess.run(
        [sys.executable, "-m", "local.sqs_poller", "--max-seconds", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "unknown option 'shard' (did you mean 'shards'?)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_misspelt_setting_stops_the_poller_in_one_line_as_it_stops_spool() -> None:
    """Before: SPOOL_STORE_UR was read by nothing, so the poller polled the default
    store's (SQLite's: none) and said "names no SQS queue", about a URL never given."""
    env = guarded_env(SPOOL_STORE_UR="dynamodb://jobs?queue=jobs&bucket=b&create=1")
    env.pop("SPOOL_STORE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "local.sqs_poller", "--max-seconds", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "spool: SPOOL_STORE_UR (did you mean SPOOL_STORE_URL?) is not a Spool setting, so "
        "nothing reads it. Rename or unset it; docs/settings.md lists every setting.\n"
    )


def test_the_poller_refuses_a_handler_its_invocations_could_never_start(tmp_path: Path) -> None:
    """Before: the poller started, and each of the handler's messages was received and
    handed back (no time left to start it) until SQS dead-lettered it; the job never ran."""
    (tmp_path / "etl_jobs.py").write_text(
        "from chalicelib.handlers import handler\n\n\n"
        "@handler('etl_nightly', timeout=1200)\n"
        "def etl(payload: dict) -> dict:\n"
        "    return {}\n"
    )
    env = guarded_env(
        SPOOL_STORE_URL="dynamodb://jobs?queue=jobs&bucket=b&endpoint=http://127.0.0.1:9",
        SPOOL_HANDLERS="etl_jobs",
        PYTHONPATH=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-m", "local.sqs_poller", "--max-seconds", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "spool: handler 'etl_nightly' (timeout=1200s) would never run: the worker function's "
        "invocations last at most 900s (Lambda's maximum), and a job needs its timeout plus "
        "10s left to start. Lower the timeout to at most 890s.\n"
    )


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [(Rate(1, unit=Rate.MINUTES), 60.0), (Rate(2, unit=Rate.HOURS), 7200.0),
     ("rate(5 minutes)", 300.0), ("rate(1 hour)", 3600.0), ("cron(0 12 * * ? *)", None)],
)  # fmt: skip
def test_schedule_periods_are_read_from_the_rule(expression: object, seconds: float | None) -> None:
    assert schedule_period(expression) == seconds


def test_the_schedule_invokes_drain_due_at_its_rate_and_releases_lost_jobs(
    tmp_path: Path,
) -> None:
    """What EventBridge does on AWS: drain_due once a minute, whose release_due sends the
    ids of jobs whose message was lost (and of jobs delayed past 15 minutes)."""
    clock = FakeClock(datetime.now(UTC))
    settings = settings_for(
        tmp_path, store_url="dynamodb://jobs?queue=jobs&bucket=jobs-bucket&create=1"
    )
    ticks = [1000.0]
    with mock_aws(), installed(settings, clock) as rt:
        store = rt.store
        assert isinstance(store, DynamoStore) and store.dispatch is not None
        request = EnqueueRequest.model_validate({"type": "echo", "payload": {"n": 1}})
        job_id = rt.service.enqueue([request], TENANT_A)[0].job.id
        sqs, url = store.dispatch.client, store.dispatch.queue_url
        sqs.purge_queue(QueueUrl=url)  # its message is lost
        clock.advance(store.config.lost_after + 1)

        schedule = Schedule(spool_app.app, clock=lambda: ticks[0])
        assert schedule.periods == {"drain_due": 60.0}
        assert schedule.run_due() == 1  # at start, as the poller starts
        ticks[0] += 59
        assert schedule.run_due() == 0  # not before the minute is up
        ticks[0] += 1
        assert schedule.run_due() == 1 and schedule.invocations == 2

        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]
        assert len(got) == 1 and job_id in got[0]["Body"]
        job = rt.store.get(job_id)
        assert job is not None and job.state is JobState.QUEUED  # SQS runs it, not drain_due


def test_a_failing_scheduled_invocation_waits_for_its_next_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def broken(event: Any, context: Any) -> Any:
        calls.append(event["detail-type"])
        raise RuntimeError("the store went away")

    monkeypatch.setitem(spool_app.app.handler_map, "drain_due", broken)
    ticks = [0.0]
    schedule = Schedule(spool_app.app, clock=lambda: ticks[0])
    assert schedule.run_due() == 1 and calls == ["Scheduled Event"]  # logged, not raised
    assert schedule.run_due() == 0
    ticks[0] = 60.0
    assert schedule.run_due() == 1 and len(calls) == 2


def test_a_lost_table_is_one_line_each_scheduled_time_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A moto_server restarted under the poller keeps no table: drain_due's release_due
    met StoreNotMigrated, and the poller logged it with a 45-line traceback once a
    minute, as if Spool had a bug. It is a store's answer, said in one line, as a
    StoreUnavailable is; the next minute tries again."""
    clock = FakeClock(datetime.now(UTC))
    settings = settings_for(
        tmp_path, store_url="dynamodb://jobs?queue=jobs&bucket=jobs-bucket&create=1"
    )
    ticks = [0.0]
    with mock_aws(), installed(settings, clock) as rt:
        store = rt.store
        assert isinstance(store, DynamoStore)
        store.ddb.delete_table(TableName="jobs")  # what a restarted moto_server leaves
        schedule = Schedule(spool_app.app, clock=lambda: ticks[0])
        caplog.clear()
        caplog.set_level("WARNING", logger="spool.sqs_poller")
        assert schedule.run_due() == 1  # logged, not raised
        ticks[0] = 60.0
        assert schedule.run_due() == 1  # and tried again at its next time
    said = [r for r in caplog.records if r.name == "spool.sqs_poller"]
    assert len(said) == 2  # one line each time
    assert all(r.exc_info is None and "'jobs' does not exist" in r.getMessage() for r in said)
