"""`spool serve --processes N` over real sockets: N server processes on one port.

Which process answers a connection is the kernel's choice (SO_REUSEPORT), so
the tests open a fresh connection per request and tell the processes apart by
what only a process knows: its result cache. A finished job read over many
connections is a cache miss exactly once per process, then hits.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from local.multiproc import listening_sockets, reuse_port_available
from tests.pg_support import sqlite_or_postgres
from tests.procs import Served, guarded_env, spool_serve, stop
from tests.test_cache_processes import TENANT, bury

ROOT = Path(__file__).resolve().parents[1]
KEY = "multi-key-0123456789"  # for the tenant whose dead job bury() writes
HEADERS = {"X-API-Key": KEY}
PROCESSES = 2
# Fresh connections per check: the chance all of them land on one of 2 processes is 2**-29.
SPREAD = 30

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="--processes needs a POSIX system"),
]


def _env(store_url: str, **extra: str) -> dict[str, str]:
    return guarded_env(
        SPOOL_STORE_URL=store_url,
        SPOOL_API_KEYS=f"{KEY}={TENANT}",
        SPOOL_METRICS_KEYS=KEY,
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_CACHE_TTL="600",
        **extra,
    )


@contextmanager
def serving(store_url: str, *args: str, **env: str) -> Iterator[Served]:
    served = spool_serve(
        "--processes", str(PROCESSES), "--threads", "4", *args, env=_env(store_url, **env)
    )
    try:
        yield served
    finally:
        stop(served.proc, timeout=30)


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> list[str]:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")


def alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def servers(served: Served) -> list[int]:
    """The supervisor's server processes (all started once the banner is out)."""
    wait_for(lambda: len(children_of(served.proc.pid)) == PROCESSES)
    return children_of(served.proc.pid)


def statuses(base: str, job_id: str, times: int = SPREAD) -> list[tuple[int, str, str]]:
    """(status, X-Cache, state) of `times` reads, each on a new connection."""
    out = []
    for _ in range(times):
        reply = requests.get(f"{base}/status/{job_id}", headers=HEADERS, timeout=10)
        body = reply.json()
        out.append((reply.status_code, reply.headers.get("X-Cache", ""), body.get("state", "")))
    return out


def succeeded(base: str) -> set[str]:
    """Ids of the finished jobs, from the listing (never cached: status reads stay cold)."""
    url = f"{base}/jobs?state=succeeded&limit=100"
    return {job["id"] for job in requests.get(url, headers=HEADERS, timeout=10).json()["jobs"]}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/spool.db"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_every_process_serves_every_job_and_the_worker_runs_once(sqlite_url: str) -> None:
    with serving(sqlite_url) as served:
        assert f"by {PROCESSES} server processes" in served.banner
        kids = servers(served)
        assert len(kids) == PROCESSES
        # The emulated worker runs in the supervisor only: every server process is --no-worker.
        assert all("--no-worker" in cmdline(pid) for pid in kids)

        ids = []
        for n in range(SPREAD):  # each enqueue on a new connection: both processes write
            reply = requests.post(
                f"{served.url}/enqueue",
                json={"type": "echo", "payload": {"n": n}},
                headers=HEADERS,
                timeout=10,
            )
            assert reply.status_code == 201, reply.text
            ids.append(reply.json()["id"])
        assert wait_for(lambda: succeeded(served.url) == set(ids), timeout=30)

        # Read over many connections: one miss per process (each caches it once), then hits.
        reads = statuses(served.url, ids[0])
        assert {(code, state) for code, _, state in reads} == {(200, "succeeded")}
        assert [cache for _, cache, _ in reads].count("miss") == PROCESSES
        one = requests.get(f"{served.url}/status/{ids[0]}", headers=HEADERS, timeout=10).json()
        assert one["attempts"] == 1 and one["result"] == {"n": 0}

        # Job totals come from the store: every process reports the same. Each process
        # has a cache of its own, and a scrape adds the others' counts (written each
        # second) to its own: every scrape reads the sum, which used to go up and down
        # with the process that answered (Prometheus took each drop for a reset).
        read_count = SPREAD + 1  # the reads above: one miss in each process, then hits
        assert wait_for(lambda: cache_counts(served.url) == (read_count - PROCESSES, PROCESSES))
        totals = set()
        for _ in range(SPREAD):
            text = requests.get(f"{served.url}/metrics", headers=HEADERS, timeout=10).text
            enqueued = re.search(
                r'^spool_jobs_enqueued_total\{[^}]*type="echo"[^}]*\} (\S+)', text, re.M
            )
            assert enqueued is not None, text[:2000]
            totals.add(float(enqueued.group(1)))
            assert counts_in(text) == (read_count - PROCESSES, PROCESSES)
        assert totals == {float(SPREAD)}


def counts_in(text: str) -> tuple[float, float]:
    hits = re.search(r"^spool_cache_hits_total (\S+)", text, re.M)
    misses = re.search(r"^spool_cache_misses_total (\S+)", text, re.M)
    assert hits is not None and misses is not None
    return float(hits.group(1)), float(misses.group(1))


def cache_counts(base: str) -> tuple[float, float]:
    return counts_in(requests.get(f"{base}/metrics", headers=HEADERS, timeout=10).text)


def run_counts(base: str) -> tuple[float, float]:
    """The echo jobs' run-duration and end-to-end histogram counts in one scrape."""
    text = requests.get(f"{base}/metrics", headers=HEADERS, timeout=10).text
    counts = []
    for family in ("spool_job_run_duration_seconds", "spool_job_end_to_end_seconds"):
        assert f"# TYPE {family} histogram" in text
        pattern = rf'^{family}_count\{{[^}}]*type="echo"[^}}]*\}} (\S+)'
        counts.append(sum(float(n) for n in re.findall(pattern, text, re.M)))
    return counts[0], counts[1]


@pytest.mark.timeout(120)
def test_every_scrape_shows_the_supervisor_s_worker_timings(sqlite_url: str) -> None:
    """The worker runs in the supervisor, which serves no /metrics: its histograms
    reached no scrape (the Grafana latency panels said No data)."""
    with serving(sqlite_url) as served:
        assert run_counts(served.url) == (0, 0)  # the families are there before any job
        for n in range(SPREAD):
            reply = requests.post(
                f"{served.url}/enqueue",
                json={"type": "echo", "payload": {"n": n}},
                headers=HEADERS,
                timeout=10,
            )
            assert reply.status_code == 201, reply.text
        assert wait_for(lambda: run_counts(served.url) == (SPREAD, SPREAD), timeout=30)
        # Whichever process answers, each on a new connection.
        assert {run_counts(served.url) for _ in range(SPREAD)} == {(SPREAD, SPREAD)}


def test_a_redrive_through_one_process_reaches_the_cache_of_every_other(
    store_url: str,
) -> None:
    job_id = bury(store_url)
    with serving(store_url, "--no-worker") as served:
        reads = statuses(served.url, job_id)
        assert [cache for _, cache, _ in reads].count("miss") == PROCESSES
        assert {state for _, _, state in reads} == {"dead"}
        reply = requests.post(f"{served.url}/dlq/{job_id}/redrive", headers=HEADERS, timeout=10)
        assert reply.status_code == 200 and reply.json()["state"] == "queued"
        time.sleep(1.5)  # past the cache's 1 s epoch re-check, far below its TTL
        assert {state for _, _, state in statuses(served.url, job_id)} == {"queued"}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with sqlite_or_postgres(request.param, tmp_path) as url:
        yield url


def test_the_limits_hold_in_every_process(sqlite_url: str) -> None:
    env = {"SPOOL_MAX_BODY_BYTES": "2048", "SPOOL_HTTP_REQUEST_TIMEOUT": "0.5"}
    with serving(sqlite_url, "--no-worker", **env) as served:
        port = int(served.url.rsplit(":", 1)[1])
        for _ in range(SPREAD // 3):  # an oversized body: 413 before it is read, nothing stored
            reply = requests.post(
                f"{served.url}/enqueue",
                data=b'{"type": "echo", "payload": "' + b"x" * 4096 + b'"}',
                headers={**HEADERS, "Content-Type": "application/json"},
                timeout=10,
            )
            assert reply.status_code == 413
            assert reply.json()["error"]["code"] == "payload_too_large"
        huge = {**HEADERS, "X-Filler": "y" * 20_000}
        reply = requests.get(f"{served.url}/health", headers=huge, timeout=10)
        assert reply.status_code == 431
        for _ in range(4):  # a slow client is answered 408 and cut off, whichever process
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"POST /enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
                answer = conn.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        listed = requests.get(f"{served.url}/jobs", headers=HEADERS, timeout=10).json()
        assert listed["jobs"] == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_every_process(sqlite_url: str) -> None:
    with serving(sqlite_url) as served:
        kids = servers(served)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
        assert wait_for(lambda: not any(alive(pid) for pid in kids))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_every_process(sqlite_url: str) -> None:
    with serving(sqlite_url) as served:
        kids = servers(served)
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(30) == 0
        assert wait_for(lambda: not any(alive(pid) for pid in kids))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_server_processes_do_not_outlive_a_killed_supervisor(sqlite_url: str) -> None:
    with serving(sqlite_url, "--no-worker") as served:
        kids = servers(served)
        served.proc.kill()
        served.proc.wait(10)
        assert wait_for(lambda: not any(alive(pid) for pid in kids), timeout=15)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_crashed_server_process_is_replaced(sqlite_url: str) -> None:
    with serving(sqlite_url, "--no-worker") as served:
        kids = servers(served)
        os.kill(kids[0], signal.SIGKILL)

        def replaced() -> bool:
            now = children_of(served.proc.pid)
            return len(now) == PROCESSES and kids[0] not in now

        assert wait_for(replaced, timeout=15)
        for _ in range(SPREAD // 3):  # both sockets answer again
            assert requests.get(f"{served.url}/health", timeout=10).status_code == 200


def _writers(shared: str) -> list[int]:
    """The pid of each cache counts file in `shared`: cache-<pid>-<tag>.counts."""
    names = [n for n in os.listdir(shared) if n.startswith("cache-") and n.endswith(".counts")]
    return [int(name.split("-")[1]) for name in names]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def echo_done(url: str) -> str:
    """Enqueue an echo job through the served processes; its id once it succeeded."""
    reply = requests.post(
        f"{url}/enqueue", json={"type": "echo", "payload": {}}, headers=HEADERS, timeout=10
    )
    job = str(reply.json()["id"])
    assert wait_for(lambda: job in succeeded(url), timeout=30)
    return job


@pytest.mark.timeout(120)
def test_a_replaced_process_s_cache_counts_are_kept_in_one_retired_file(
    sqlite_url: str,
) -> None:
    """Was: each replaced process left its cache counts file, read by every scrape
    for as long as the supervisor ran. Its counts are folded into one retired total,
    the sum unchanged (a counter must never fall)."""
    with serving(sqlite_url) as served:
        job = echo_done(served.url)
        statuses(served.url, job)  # a miss in each process, then hits
        counted = (float(SPREAD - PROCESSES), float(PROCESSES))
        assert wait_for(lambda: cache_counts(served.url) == counted)
        kids = servers(served)
        [shared] = {cmdline(pid)[cmdline(pid).index("--shared-metrics") + 1] for pid in kids}
        for victim in kids:  # every process replaced, one after the other
            os.kill(victim, signal.SIGKILL)

            def replaced(victim: int = victim) -> bool:
                now = children_of(served.proc.pid)
                return len(now) == PROCESSES and victim not in now

            assert wait_for(replaced, timeout=15)
            live = sorted(children_of(served.proc.pid))

            def all_written(pids: list[int] = live) -> bool:
                return set(_writers(shared)) >= set(pids)

            assert wait_for(all_written)
            assert sorted(_writers(shared)) == live  # one file a live process
            assert (Path(shared) / "retired.counts").is_file()
            for _ in range(SPREAD // 3):
                assert cache_counts(served.url) == counted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.timeout(120)
def test_the_supervisor_s_lines_carry_no_job_run_s_request_id(sqlite_url: str) -> None:
    """Was: the emulated invocation's aws_request_id is process-wide, and the
    supervisor's "server process N exited" line (its main thread) carried the id of
    whatever drain was running, as if that job run had restarted the process."""
    with serving(sqlite_url) as served:
        kids = servers(served)
        reply = requests.post(
            f"{served.url}/enqueue",
            json={"type": "sleep", "payload": {"seconds": 4}},
            headers=HEADERS,
            timeout=10,
        )
        assert reply.status_code == 201, reply.text
        job = reply.json()["id"]

        def running() -> bool:
            url = f"{served.url}/status/{job}"
            state = requests.get(url, headers=HEADERS, timeout=10).json()["state"]
            return bool(state == "running")

        assert wait_for(running, timeout=30)  # an invocation is under way, its id set
        os.kill(kids[0], signal.SIGKILL)

        def replaced() -> bool:
            now = children_of(served.proc.pid)
            return len(now) == PROCESSES and kids[0] not in now

        assert wait_for(replaced, timeout=15)
        assert wait_for(lambda: job in succeeded(served.url), timeout=30)
    assert served.proc.stderr is not None
    lines = served.proc.stderr.read().splitlines()
    [done] = [line for line in lines if "job succeeded" in line and job in line]
    # No line here carries one: the built-in worker is a local process, no Lambda
    # invocation (tests/test_chaos_s49_local_request_id.py).
    assert "aws_request_id" not in done, done
    [restart] = [line for line in lines if f"(pid {kids[0]}) exited" in line]
    assert "aws_request_id" not in restart, restart


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_hung_server_process_is_killed_and_replaced(sqlite_url: str) -> None:
    """Was: a process alive but not answering (SIGSTOP here; a deadlock looks the same
    to the kernel) kept its share of new connections, which hung, and nothing noticed."""
    with serving(sqlite_url, "--no-worker", SPOOL_SERVE_HANG_SECONDS="2") as served:
        kids = servers(served)
        os.kill(kids[0], signal.SIGSTOP)
        try:

            def replaced() -> bool:
                now = children_of(served.proc.pid)
                return len(now) == PROCESSES and kids[0] not in now

            assert wait_for(replaced, timeout=20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kids[0], signal.SIGCONT)
        assert not alive(kids[0])
        for _ in range(SPREAD // 3):  # both sockets answer again, none hangs
            assert requests.get(f"{served.url}/health", timeout=5).status_code == 200
        # The healthy process beats on: it is never taken for hung.
        time.sleep(3)
        assert kids[1] in children_of(served.proc.pid)


def test_a_taken_port_is_refused_with_a_clear_message(sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *(sys.executable, "-m", "local.cli", "serve", "--processes", "2"),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=_env(sqlite_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("count", ["0", "-1", "65"])
def test_a_bad_process_count_is_a_usage_error(sqlite_url: str, count: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local.cli", "serve", "--processes", count, "--port", "0"],
        cwd=ROOT,
        env=_env(sqlite_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--processes: must be between 1 and 64" in result.stderr


@pytest.mark.skipif(not reuse_port_available(), reason="SO_REUSEPORT balancing is Linux's")
def test_port_zero_gives_every_process_the_same_port() -> None:
    made = listening_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in made}
        assert len(made) == 3 and len({id(s) for s in made}) == 3 and len(ports) == 1
    finally:
        for sock in made:
            sock.close()


def _failing_supervisor() -> tuple[list[socket.socket], Any]:
    from local.multiproc import Supervisor

    made = listening_sockets("127.0.0.1", 0, PROCESSES)
    fails = [sys.executable, "-c", "import sys; sys.exit(3)"]  # a server that cannot start
    return made, Supervisor(made, 2, guarded_env(), command=fails)


def test_a_server_process_that_fails_at_start_fails_the_start() -> None:
    from local.cli_errors import CliFailure

    _, supervisor = _failing_supervisor()
    with pytest.raises(CliFailure, match=r"exited at start \(code 3\)"):
        supervisor.start()
    assert not any(c.proc.poll() is None for c in supervisor.children)


def test_a_server_process_that_keeps_failing_is_given_up() -> None:
    _, sup = _failing_supervisor()
    for child in sup.children:
        sup.spawn(child)
    reasons: list[str] = []
    assert sup.watch(on_give_up=reasons.append) == 1
    assert reasons and "keeps exiting (code 3)" in reasons[0]
    assert all(child.proc.poll() is not None for child in sup.children)


def test_laptop_mode_shares_its_dev_key_with_every_process(tmp_path: Path) -> None:
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db")
    env.pop("SPOOL_API_KEYS", None)
    env.pop("SPOOL_METRICS_KEYS", None)
    env.pop("SPOOL_DEMO_HANDLERS", None)
    served = spool_serve("--processes", str(PROCESSES), "--no-worker", env=env)
    try:
        found = re.search(r"dev API key \(tenant \S+\), made for this run: (\S+)", served.banner)
        assert found is not None, served.banner
        key = {"X-API-Key": found.group(1)}
        for n in range(SPREAD // 2):  # new connections: every process knows the key
            reply = requests.post(
                f"{served.url}/enqueue",
                json={"type": "echo", "payload": {"n": n}},
                headers=key,
                timeout=10,
            )
            assert reply.status_code == 201, reply.text
        refused = requests.get(f"{served.url}/jobs", headers={"X-API-Key": "nope"}, timeout=10)
        assert refused.status_code == 401
    finally:
        stop(served.proc, timeout=30)


def test_a_process_still_starting_is_not_taken_for_hung() -> None:
    """Silence counts from the first beat: before it, a process is starting (imports,
    the store, handler modules), given READY_TIMEOUT, not SPOOL_SERVE_HANG_SECONDS."""
    from local.multiproc import READY_TIMEOUT, Supervisor

    made = listening_sockets("127.0.0.1", 0, 1)
    silent = [sys.executable, "-c", "import time; time.sleep(120)"]  # never beats
    supervisor = Supervisor(made, 2, guarded_env(), command=silent, hang_seconds=1.0)
    [child] = supervisor.children
    supervisor.spawn(child)
    try:
        assert child.proc is not None
        child.heard -= 30  # silent for 30 s, never having beaten: still starting
        supervisor._kill_the_silent()
        assert child.proc.poll() is None
        child.heard -= READY_TIMEOUT  # past the start-up's allowance: hung
        supervisor._kill_the_silent()
        assert child.proc.poll() == -signal.SIGKILL
        supervisor.spawn(child)  # as if it had beaten, then gone silent past hang_seconds
        child.beating, child.heard = True, time.monotonic() - 2
        supervisor._kill_the_silent()
        assert child.proc.poll() == -signal.SIGKILL
    finally:
        supervisor.stop(grace=1)
