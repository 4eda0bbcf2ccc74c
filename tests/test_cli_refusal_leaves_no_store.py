"""A command refused for its settings or its input leaves no SQLite store behind.

`spool enqueue echo` typed in a new terminal (no SPOOL_URL exported, no demo
handlers) answered "unknown job type 'echo'", and left `.spool/spool.db` in the
folder; `spool top` there then showed an empty store instead of saying there is
none. A malformed SPOOL_SCHEDULES did the same to `spool worker` and `spool
serve`. Handler modules were already loaded before the store was opened; the
schedules, the built-ins' settings and the job itself now are too.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import guarded_env, spool_serve, stop

BAD_SCHEDULE = '[{"name": "x", "type": "no_such_type", "every": "15m"}]'
ECHO_SCHEDULE = '[{"name": "tick", "type": "echo", "every": "1h"}]'


def _spool(cwd: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    child = guarded_env(**env)
    for name in ("SPOOL_STORE_URL", "SPOOL_URL", "SPOOL_API_KEY", "SPOOL_API_KEYS"):
        child.pop(name, None)  # the default store, in cwd, as a fresh shell has it
    if "SPOOL_DEMO_HANDLERS" not in env:
        child.pop("SPOOL_DEMO_HANDLERS", None)
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *argv],
        cwd=cwd, env=child, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "env", "said"),
    [
        (["enqueue", "echo"], {}, "unknown job type 'echo'"),
        (["enqueue", "sleep", "--payload", '{"seconds": "x"}'], {"SPOOL_DEMO_HANDLERS": "true"},
         "seconds"),
        (["enqueue", "echo", "--payload", "[1]"], {"SPOOL_DEMO_HANDLERS": "true"}, "payload"),
        # A handler's admit check (here: no allowlist, so no URL is reachable).
        (["enqueue", "http_request", "--payload", '{"url": "https://x.example/"}'], {},
         "SPOOL_HTTP_ALLOWLIST"),
        (["worker", "--burst"], {"SPOOL_SCHEDULES": BAD_SCHEDULE}, "schedule 'x'"),
        (["serve", "--port", "0"], {"SPOOL_SCHEDULES": BAD_SCHEDULE}, "schedule 'x'"),
        (["worker", "--burst"], {"SPOOL_SMTP_PORT": "0"}, "SPOOL_SMTP_PORT"),
        # Checked once the store is open (the edge's settings): the store made is removed.
        (["serve", "--port", "0"], {"SPOOL_CACHE_BYTES": "lots"}, "SPOOL_CACHE_BYTES"),
    ],
    ids=["unknown-type", "bad-payload", "not-an-object", "admit-check", "worker-schedule",
         "serve-schedule",
         "worker-builtin-setting", "serve-edge-setting"],
)  # fmt: skip
def test_a_refused_command_leaves_no_store_behind(
    tmp_path: Path, argv: list[str], env: dict[str, str], said: str
) -> None:
    ran = _spool(tmp_path, *argv, **env)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert said in ran.stderr and ran.stderr.startswith("spool: ")
    assert not (tmp_path / ".spool").exists(), f"`spool {' '.join(argv)}` left a store behind"


def test_a_command_that_goes_on_creates_the_store(tmp_path: Path) -> None:
    ran = _spool(tmp_path, "enqueue", "echo", SPOOL_DEMO_HANDLERS="true")
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / ".spool" / "spool.db").exists()
    ran = _spool(tmp_path, "worker", "--burst", SPOOL_SCHEDULES=ECHO_SCHEDULE,
                 SPOOL_DEMO_HANDLERS="true")  # fmt: skip
    assert ran.returncode == 0, ran.stderr


def test_serve_checks_its_schedules_with_the_demo_handlers_laptop_mode_loads(
    tmp_path: Path,
) -> None:
    """Without keys `spool serve` turns the demo handlers on: a schedule of the demo
    type `echo` is one it can fire, so the check made before the store is opened must
    see them too, and the server starts."""
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/fresh/spool.db",
                      SPOOL_SCHEDULES=ECHO_SCHEDULE)  # fmt: skip
    for name in ("SPOOL_DEMO_HANDLERS", "SPOOL_API_KEYS", "SPOOL_METRICS_KEYS"):
        env.pop(name, None)
    served = spool_serve(env=env)
    try:
        assert "made for this run" in served.banner
    finally:
        stop(served.proc)


def _taken_port() -> socket.socket:
    """A port this test listens on, so a start on it is refused (no SO_REUSEPORT: a
    `--processes N` supervisor's sockets cannot share it either)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["serve", "--port", "{port}"], "cannot listen on 127.0.0.1"),
        (["serve", "--port", "{port}", "--processes", "2"], "cannot listen on 127.0.0.1"),
        (["serve", "--host", "192.0.2.1", "--port", "0"], "--host must be an address"),
        (["worker", "--metrics-port", "{port}"], "cannot serve metrics"),
    ],
    ids=["serve-port-taken", "serve-processes-port-taken", "serve-foreign-host",
         "worker-metrics-port-taken"],
)  # fmt: skip
def test_a_start_refused_after_opening_the_store_removes_the_store_it_made(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    """A bind is refused only once the store is open: the start removes what it made
    (the file, its companions, the `.spool` folder), not only the file."""
    with _taken_port() as taken:
        port = str(taken.getsockname()[1])
        ran = _spool(tmp_path, *(a.replace("{port}", port) for a in argv))
    assert ran.returncode != 0, ran.stdout + ran.stderr
    assert said in ran.stderr and ran.stderr.startswith("spool: ")
    assert list(tmp_path.iterdir()) == [], f"`spool {' '.join(argv)}` left a store behind"


def test_a_refused_start_never_removes_a_store_that_was_there(tmp_path: Path) -> None:
    ran = _spool(tmp_path, "enqueue", "echo", SPOOL_DEMO_HANDLERS="true")
    assert ran.returncode == 0, ran.stderr
    before = sorted(p.name for p in (tmp_path / ".spool").iterdir())
    with _taken_port() as taken:
        ran = _spool(tmp_path, "serve", "--port", str(taken.getsockname()[1]))
    assert ran.returncode != 0 and "cannot listen" in ran.stderr
    assert sorted(p.name for p in (tmp_path / ".spool").iterdir()) == before
    listed = _spool(tmp_path, "jobs", "--json")
    assert listed.returncode == 0 and '"echo"' in listed.stdout, listed.stderr


def test_a_store_folder_that_existed_is_kept_when_the_start_is_refused(tmp_path: Path) -> None:
    """Only the folders made for the store go: one the user made stays, with what is in it."""
    (tmp_path / ".spool").mkdir()
    (tmp_path / ".spool" / "notes.txt").write_text("mine")
    with _taken_port() as taken:
        ran = _spool(tmp_path, "serve", "--port", str(taken.getsockname()[1]))
    assert ran.returncode != 0 and "cannot listen" in ran.stderr
    assert [p.name for p in (tmp_path / ".spool").iterdir()] == ["notes.txt"]
