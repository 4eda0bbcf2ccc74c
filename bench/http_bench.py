"""HTTP benchmark: `spool serve` beside a floor server, in one run.

    python -m bench.http_bench [--duration 10] [--rounds 3] [--connections 8]
        [--processes 2] [--before DIR] [--chalice-local] [--tool wrk|python] [--write]

Every server runs in its own process(es) on its own SQLite file, with no worker
running, so only the HTTP edge and the store's writes are measured:

- floor: the same server stack (local/server.py, the same threads; with
  --processes the same shared port) whose app only parses the JSON and inserts
  one row with raw sqlite3 (bench/http_floor.py); its GET answers a constant;
- spool: `spool serve --no-worker`, one process, and `--processes N`;
- before (with --before DIR): `spool serve` from another tree, e.g. the commit
  before a change (`git archive HEAD | tar -x -C DIR`), for "x today's";
- chalice local (with --chalice-local): the development server, for scale.

Scenarios, each over N keep-alive connections on loopback: POST /enqueue of
one job; POST /enqueue of a batch of --batch jobs (jobs/s = requests/s x
batch); GET /status of a queued job (a store read); GET /status of a finished
job (a result-cache hit). Ratios are against rows of the same run only: on a
shared machine an absolute figure alone proves nothing. The load generator is
wrk when installed (apt-get install wrk), else a Python http.client one that
shares the cores with the servers and so understates all of them. --write
replaces the HTTP section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.plotting import pyplot, save

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789"
JOB = '{"type": "echo", "payload": {"n": 1}}'
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- section:http -->", "<!-- /section:http -->"
LOAD = [0.0, 0.0]  # load average (1 min) at the start and end of the run

ENQUEUE, BATCH, READ, CACHED = (
    "POST /enqueue (one job)",
    "POST /enqueue (batch)",
    "GET /status (store read)",
    "GET /status (cache hit)",
)
FLOOR, SPOOL, BEFORE, CHALICE = "floor", "spool serve", "before", "chalice local"
# Goals (issue 16): single enqueue >= 60% of the floor and >= 2x before; batch >=
# 30k jobs/s; cache hits >= 3x before.
GOALS = {"floor": 0.60, "enqueue_x": 2.0, "batch_jobs": 30_000.0, "cached_x": 3.0}


@dataclass
class Result:
    server: str
    scenario: str
    rps: float
    jobs: float  # jobs/s (requests/s x jobs per request); == rps for a single job
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if request(port, "GET", "/health")[0] == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not become healthy")


def _env(db: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPOOL_API_KEYS": f"{KEY}=bench",
        "SPOOL_STORE_URL": f"sqlite:///{db}",
        "SPOOL_DEMO_HANDLERS": "true",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def _chalice_project(workdir: Path, db: Path) -> tuple[list[str], Path]:
    # chalice reads .chalice/config.json from its project directory; its local
    # stage names a relative SQLite path, so give it a copy whose env points here.
    cwd = workdir / "chalice-project"
    shutil.copytree(
        ROOT / ".chalice", cwd / ".chalice", ignore=shutil.ignore_patterns("deployments")
    )
    shutil.copy(ROOT / "app.py", cwd / "app.py")
    shutil.copytree(
        ROOT / "chalicelib", cwd / "chalicelib", ignore=shutil.ignore_patterns("__pycache__")
    )
    config = json.loads((cwd / ".chalice" / "config.json").read_text())
    config["stages"]["local"]["environment_variables"]["SPOOL_STORE_URL"] = f"sqlite:///{db}"
    (cwd / ".chalice" / "config.json").write_text(json.dumps(config))
    chalice = Path(sys.executable).with_name("chalice")
    return [str(chalice), "local", "--stage", "local", "--no-autoreload"], cwd


@dataclass(frozen=True)
class Kind:
    """One server under test: which, how many processes, from which tree."""

    name: str
    label: str
    processes: int = 1
    tree: Path = ROOT


@contextlib.contextmanager
def server(kind: Kind, workdir: Path, threads: int) -> Iterator[tuple[int, Path]]:
    port = free_port()
    db = workdir / f"{kind.label.replace(' ', '-')}.db"
    cwd = kind.tree
    if kind.name == FLOOR:
        cmd = [sys.executable, "-m", "bench.http_floor", "--db", str(db)]
        cmd += ["--threads", str(threads), "--processes", str(kind.processes)]
    elif kind.name == CHALICE:
        cmd, cwd = _chalice_project(workdir, db)
    else:
        cmd = [sys.executable, "-m", "local.cli", "serve", "--no-worker"]
        cmd += ["--threads", str(threads)]
        if kind.processes > 1:
            cmd += ["--processes", str(kind.processes)]
    cmd += ["--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(db), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_healthy(port, proc)
        yield port, db
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def finish_all(db: Path, tree: Path) -> None:
    """Run what is queued with the CLI worker (the servers run none), so a status is final."""
    subprocess.run(
        [sys.executable, "-m", "local.cli", "worker", "--burst", "--quiet"],
        cwd=tree,
        env=_env(db),
        check=True,
        timeout=120,
        capture_output=True,
    )


# -- load generators -----------------------------------------------------------


def _ms(value: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if found is None:
        raise ValueError(f"cannot read wrk latency {value!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    port: int, method: str, path: str, body: str | None, seconds: float, conns: int, tmp: Path
) -> tuple[float, float, float, int]:
    script = tmp / "req.lua"
    script.write_text(
        f'wrk.method = "{method}"\n'
        + (f"wrk.body = [==[{body}]==]\n" if body is not None else "")
        + f'wrk.headers["X-API-Key"] = "{KEY}"\n'
        + 'wrk.headers["Content-Type"] = "application/json"\n'
    )
    out = subprocess.run(
        [
            *("wrk", "-t", "2", "-c", str(conns), "-d", f"{seconds:g}s", "--latency"),
            *("-s", str(script), f"http://127.0.0.1:{port}{path}"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    if "Latency Distribution" not in out:
        raise RuntimeError(f"wrk said:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return rps, p50, p99, errors


def run_python(
    port: int, method: str, path: str, body: str | None, seconds: float, conns: int, tmp: Path
) -> tuple[float, float, float, int]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        bad = 0
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            reply.read()
            mine.append(time.perf_counter() - started)
            bad += reply.status >= 300
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client) for _ in range(conns)]
    begun = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - begun
    cuts = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000, errors[0]


# -- the run ----------------------------------------------------------------------


def batch_body(size: int) -> str:
    return json.dumps({"jobs": [{"type": "echo", "payload": {"n": i}} for i in range(size)]})


Scenario = tuple[str, str, str, str | None]


def scenarios(kind: Kind, port: int, db: Path, batch: int) -> list[Scenario]:
    """(label, method, path, body) for this server; the floor has no status to read."""
    if kind.name == FLOOR:
        return [(ENQUEUE, "POST", "/enqueue", JOB), (CACHED, "GET", "/status/1", None)]
    done = json.loads(request(port, "POST", "/enqueue", JOB)[1])["id"]
    finish_all(db, kind.tree)
    return [
        (ENQUEUE, "POST", "/enqueue", JOB),
        (BATCH, "POST", "/enqueue", batch_body(batch)),
        (READ, "GET", f"/status/{_waiting(port)}", None),
        (CACHED, "GET", f"/status/{done}", None),
    ]


def bench(
    kinds: list[Kind],
    seconds: float,
    conns: int,
    tool: str,
    threads: int,
    batch: int,
    rounds: int,
) -> list[Result]:
    """Every server up at once; each round runs every scenario on every server in
    turn, so a burst of load from elsewhere hits all of them alike; the median
    round (by requests/s) of each pair is kept."""
    run = run_wrk if tool == "wrk" else run_python
    runs: dict[tuple[str, str], list[Result]] = {}
    with contextlib.ExitStack() as up:
        tmp = Path(up.enter_context(tempfile.TemporaryDirectory(prefix="spool-http-bench-")))
        plans = []
        for kind in kinds:
            port, db = up.enter_context(server(kind, tmp, threads))
            plans.append((kind, port, scenarios(kind, port, db, batch)))
        for round_ in range(rounds):
            for label in (ENQUEUE, BATCH, READ, CACHED):
                for kind, port, planned in plans:
                    for scenario, method, path, body in planned:
                        if scenario != label:
                            continue
                        run(port, method, path, body, 1.0, conns, tmp)  # warm up
                        rps, p50, p99, errors = run(port, method, path, body, seconds, conns, tmp)
                        jobs = rps * batch if label == BATCH else rps
                        result = Result(kind.label, label, rps, jobs, p50, p99, errors)
                        runs.setdefault((kind.label, label), []).append(result)
                        print(
                            f"round {round_ + 1} {kind.label:16} {label:26} {rps:9.1f} req/s"
                            f" {jobs:9.1f} jobs/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
                            f"  errors {errors}",
                            flush=True,
                        )
    return [_median(found) for found in runs.values()]


def _median(found: list[Result]) -> Result:
    ordered = sorted(found, key=lambda r: r.rps)
    middle = ordered[len(ordered) // 2]
    errors = sum(r.errors for r in found)
    return Result(middle.server, middle.scenario, middle.rps, middle.jobs, middle.p50_ms,
                  middle.p99_ms, errors)  # fmt: skip


def _waiting(port: int) -> str:
    """A job that stays queued for the whole run, so every read goes to the store."""
    body = json.dumps({"type": "echo", "delay": 86400})
    return str(json.loads(request(port, "POST", "/enqueue", body)[1])["id"])


# -- the report ---------------------------------------------------------------------


def floor_of(server_label: str) -> str:
    """The floor with as many processes: "spool serve x2" against "floor x2"."""
    count = server_label.rpartition(" x")[2]
    return f"{FLOOR} x{count}" if count.isdigit() and server_label != FLOOR else FLOOR


def _ratio(value: float, base: Result | None) -> str:
    return f"{value / base.jobs:.2f}x" if base is not None and base.jobs else "-"


def table(results: list[Result], args: argparse.Namespace, multi: str) -> str:
    by = {(r.server, r.scenario): r for r in results}
    command = (
        f"python -m bench.http_bench --duration {args.duration:g} --rounds {args.rounds}"
        " --connections"
        f" {args.connections} --processes {args.processes} --threads {args.threads}"
        f" --batch {args.batch} --tool {args.tool}"
        + (" --before DIR" if args.before else "")
        + (" --chalice-local" if args.chalice_local else "")
        + " --write"
    )
    lines = [
        "## HTTP server",
        "",
        f"`{command}`",
        "",
        f"{args.connections} keep-alive connections over loopback, load from {args.tool};"
        " every server on its own SQLite file with no worker running, "
        f"{args.threads} threads per process; each figure is the median of {args.rounds} rounds,"
        " every round running each scenario on every server in turn (errors: summed)."
        f" Machine: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {LOAD[0]:.2f} at the start and "
        f"{LOAD[1]:.2f} at the end of the run (the machine is shared with other work).",
        "",
        "| scenario | server | requests/s | jobs/s | p50 ms | p99 ms | errors"
        " | vs floor (same processes) | vs spool, 1 process | vs before |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    servers = list(dict.fromkeys(r.server for r in results))
    for scenario in (ENQUEUE, BATCH, READ, CACHED):
        single = by.get((SPOOL, scenario))
        before = by.get((BEFORE, scenario))
        for name in servers:
            r = by.get((name, scenario))
            if r is None:
                continue
            floor = by.get((floor_of(name), scenario))
            lines.append(
                f"| {scenario} | {name} | {r.rps:,.0f} | {r.jobs:,.0f} | {r.p50_ms:.2f}"
                f" | {r.p99_ms:.2f} | {r.errors} | {_ratio(r.jobs, floor)}"
                f" | {_ratio(r.jobs, single)} | {_ratio(r.jobs, before)} |"
            )
    lines += [
        "",
        "- floor: bench/http_floor.py, the same server (local/server.py: waitress, its guards,",
        "  the same threads, every request answered on the loop thread as `spool serve` answers",
        "  its quick ones; `x2` on the same shared port) with an app that parses the JSON and",
        "  inserts one row with raw sqlite3 (WAL, synchronous=NORMAL, one connection behind a",
        "  lock, as Spool's SQLite store); its GET answers a constant, so beside the cache hit",
        "  it is the server alone.",
        "- spool serve: `spool serve --no-worker`; `x2`: `--processes 2` (local/multiproc.py);",
        "  on SQLite both answer enqueue, status, cancel and health on the loop thread",
        "  (local/inline_dispatch.py).",
        "- before: `spool serve` from the tree given to --before (the commit before this",
        '  change), in the same rounds, for the "x today\'s" goals.',
        "",
        *goal_lines(by, multi),
    ]
    return "\n".join(lines)


def goal_lines(by: dict[tuple[str, str], Result], multi: str) -> list[str]:
    """Each goal of issue 16 item 2, met or not, from this run's rows."""

    def best(scenario: str) -> Result | None:
        rows = [by.get((SPOOL, scenario)), by.get((multi, scenario))]
        found = [r for r in rows if r is not None]
        return max(found, key=lambda r: r.jobs) if found else None

    out = ["Goals (issue 16), from this run:", ""]
    before = {s: by.get((BEFORE, s)) for s in (ENQUEUE, CACHED)}
    for name in (SPOOL, multi):
        row = by.get((name, ENQUEUE))
        floor = by.get((floor_of(name), ENQUEUE))
        if row is not None and floor is not None:
            share = row.jobs / floor.jobs
            mark = "met" if share >= GOALS["floor"] else "not met"
            out.append(
                f"- single enqueue, {name}: {share:.0%} of {floor.server}"
                f" (goal >= {GOALS['floor']:.0%}): {mark}"
            )
    top = best(ENQUEUE)
    if top is not None and before[ENQUEUE] is not None:
        x = top.jobs / before[ENQUEUE].jobs  # type: ignore[union-attr]
        mark = "met" if x >= GOALS["enqueue_x"] else "not met"
        out.append(f"- single enqueue vs before: {x:.2f}x ({top.server}; goal >= 2x): {mark}")
    top = best(BATCH)
    if top is not None:
        mark = "met" if top.jobs >= GOALS["batch_jobs"] else "not met"
        out.append(
            f"- batch enqueue: {top.jobs:,.0f} jobs/s ({top.server}; goal >= 30,000): {mark}"
        )
    top = best(CACHED)
    if top is not None and before[CACHED] is not None:
        x = top.jobs / before[CACHED].jobs  # type: ignore[union-attr]
        mark = "met" if x >= GOALS["cached_x"] else "not met"
        out.append(f"- cached status vs before: {x:.2f}x ({top.server}; goal >= 3x): {mark}")
    return out


PLOT = DOCS.parent / "img" / "http_bench.png"


def plot(results: list[Result]) -> bool:
    """Jobs/s and p99 per scenario, one bar per server."""
    plt = pyplot()
    if plt is None:
        return False
    scenarios_ = list(dict.fromkeys(r.scenario for r in results))
    servers = list(dict.fromkeys(r.server for r in results))
    by = {(r.server, r.scenario): r for r in results}
    xs = list(range(len(scenarios_)))
    width = 0.8 / max(1, len(servers))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, name in enumerate(servers):
        offset = (i - (len(servers) - 1) / 2) * width
        rows = [by.get((name, s)) for s in scenarios_]
        left.bar([x + offset for x in xs], [r.jobs if r else 0 for r in rows], width, label=name)
        right.bar([x + offset for x in xs], [r.p99_ms if r else 0 for r in rows], width, label=name)
    labels = [s.replace(" (", "\n(") for s in scenarios_]
    left.set_xticks(xs, labels, fontsize=8)
    left.set_ylabel("jobs (or requests) per second")
    left.set_yscale("log")
    left.set_title("Throughput (higher is better)")
    right.set_xticks(xs, labels, fontsize=8)
    right.set_ylabel("p99 latency, ms")
    right.set_title("p99 latency (lower is better)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    save(fig, PLOT)
    return True


def write_docs(section: str) -> None:
    text = DOCS.read_text()
    start, end = text.index(START) + len(START), text.index(END)
    DOCS.write_text(text[:start] + "\n" + section + "\n" + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8, help="HTTP threads per process")
    parser.add_argument("--processes", type=int, default=2, help="for the multi-process rows")
    parser.add_argument("--batch", type=int, default=100, help="jobs per batch request")
    parser.add_argument("--rounds", type=int, default=3, help="medians of this many runs")
    parser.add_argument("--before", type=Path, help="a tree whose `spool serve` is the baseline")
    parser.add_argument("--chalice-local", action="store_true", help="also run chalice local")
    parser.add_argument(
        "--tool", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python"
    )
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    multi = f"{SPOOL} x{args.processes}"
    kinds = [
        Kind(FLOOR, FLOOR),
        Kind(FLOOR, f"{FLOOR} x{args.processes}", args.processes),
        Kind(SPOOL, SPOOL),
        Kind(SPOOL, multi, args.processes),
    ]
    if args.before is not None:
        kinds.append(Kind(BEFORE, BEFORE, tree=args.before.resolve()))
    if args.chalice_local:
        kinds.append(Kind(CHALICE, CHALICE))
    LOAD[0] = os.getloadavg()[0]
    results = bench(
        kinds,
        args.duration,
        args.connections,
        args.tool,
        args.threads,
        args.batch,
        args.rounds,
    )
    LOAD[1] = os.getloadavg()[0]
    section = table(results, args, multi)
    print("\n" + section)
    if args.write:
        if plot(results):
            section += "\n\n![spool serve beside its floor](img/http_bench.png)"
        write_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
