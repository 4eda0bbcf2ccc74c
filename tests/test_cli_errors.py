"""Every `spool` failure is one line naming the problem and the fix, never a traceback.

These run the installed `spool` script as a user does (its sys.path[0] is the
venv's bin/, not the working directory), against real stores.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.storage import open_store
from local import cli
from tests.procs import ROOT, guarded_env

SPOOL = Path(sys.executable).with_name("spool")


def spool(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPOOL), *argv],
        cwd=cwd,
        env=guarded_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's single stderr line, checked for the shape every failure has."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spool: ") and lines[0].endswith("."), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unknown_store_scheme_is_one_line_with_the_known_ones(tmp_path: Path) -> None:
    result = spool("status", "j_x", cwd=tmp_path, SPOOL_STORE_URL="mysql://app:s3cret@db/jobs")
    assert result.returncode == 2
    line = one_line(result)
    assert "unknown store URL scheme 'mysql'" in line and "sqlite://" in line
    assert "s3cret" not in line and "app:***@db" in line


def test_a_handler_module_that_cannot_be_imported_is_named(tmp_path: Path) -> None:
    result = spool("enqueue", "echo", cwd=tmp_path, SPOOL_HANDLERS="no_such_jobs_module")
    assert result.returncode == 2
    line = one_line(result)
    assert "SPOOL_HANDLERS: cannot import 'no_such_jobs_module'" in line
    assert "working directory" in line and "PYTHONPATH" in line


@pytest.mark.parametrize(
    ("entry", "module"),
    [("myjobs.py", "myjobs"), ("./pkg/myjobs.py", "pkg.myjobs"), ("pkg/myjobs", "pkg.myjobs")],
)
def test_a_file_path_on_spool_handlers_is_named_with_the_module_meant(
    tmp_path: Path, entry: str, module: str
) -> None:
    """A new user names the file they wrote; importlib would run `myjobs` for "myjobs.py"
    before failing, and "Fix the module" pointed at a module that was fine."""
    (tmp_path / "pkg").mkdir()
    for where in (tmp_path / "myjobs.py", tmp_path / "pkg" / "myjobs.py"):
        where.write_text("open('imported', 'w').close()\n")
    result = spool("worker", "--burst", cwd=tmp_path, SPOOL_HANDLERS=f"other,{entry}")
    assert result.returncode == 2
    line = one_line(result)
    assert f"SPOOL_HANDLERS: {entry!r} is a file path" in line
    assert f"SPOOL_HANDLERS=other,{module}" in line
    assert "Fix the module" not in line
    assert not (tmp_path / "imported").exists()  # checked before anything is imported


@pytest.mark.parametrize("value", ["myjobs; other", "myjobs other"])
def test_modules_on_spool_handlers_separated_otherwise_than_by_commas_are_named(
    tmp_path: Path, value: str
) -> None:
    result = spool("worker", "--burst", cwd=tmp_path, SPOOL_HANDLERS=value)
    assert result.returncode == 2
    line = one_line(result)
    assert f"SPOOL_HANDLERS: {value!r} is not a module name" in line
    assert "separate modules with commas" in line and "SPOOL_HANDLERS=myjobs,other" in line


def test_handler_modules_load_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "myjobs.py").write_text(
        "from chalicelib.handlers import handler\n"
        "@handler('myjobs.hello')\n"
        "def hello(payload):\n"
        "    return {'hi': payload.get('name')}\n"
    )
    env = {"SPOOL_HANDLERS": "myjobs", "SPOOL_STORE_URL": f"sqlite:///{tmp_path}/s.db"}
    added = spool(
        "enqueue", "myjobs.hello", "--json", "--payload", '{"name": "x"}', cwd=tmp_path, **env
    )
    assert added.returncode == 0, added.stderr
    ran = spool("worker", "--burst", "--quiet", cwd=tmp_path, **env)
    assert ran.returncode == 0, ran.stderr
    shown = spool("status", json.loads(added.stdout)["id"], "--json", cwd=tmp_path, **env)
    assert json.loads(shown.stdout)["result"] == {"hi": "x"}


def test_a_postgres_store_on_a_wrong_port_is_one_line_naming_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    url = f"postgresql://spool:s3cret@127.0.0.1:{port}/test?connect_timeout=2"
    result = spool("worker", "--burst", cwd=tmp_path, SPOOL_STORE_URL=url)
    assert result.returncode == 1
    line = one_line(result)
    assert f"127.0.0.1:{port}" in line and "s3cret" not in line
    assert "SPOOL_STORE_URL" in line


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SPOOL_CONCURRENCY": "eight"}, "SPOOL_CONCURRENCY must be a whole number"),
        ({"SPOOL_LEASE_SECONDS": "1m"}, "SPOOL_LEASE_SECONDS must be a number"),
        ({"SPOOL_STORE_URL": "no-scheme-at-all"}, "a store URL needs a scheme"),
    ],
)
def test_bad_settings_are_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = spool("status", "j_x", cwd=tmp_path, **env)
    assert result.returncode == 2
    assert named in one_line(result)


def test_a_usage_error_is_one_line_pointing_at_help(tmp_path: Path) -> None:
    result = spool("enqueue", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert "required: type" in line and "spool enqueue --help" in line


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/s.db")
    open_store(f"sqlite:///{tmp_path}/s.db").close()  # `status` reads a store that exists
    monkeypatch.delenv("SPOOL_DEBUG", raising=False)

    def boom(rt: object, args: object) -> int:
        raise RuntimeError("lost postgresql://app:s3cret@db/jobs\non two lines")

    monkeypatch.setitem(cli.COMMANDS, "status", boom)
    assert cli.main(["status", "j_x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3cret" not in err
    assert "unexpected error: RuntimeError: lost postgresql://app:***@db/jobs on two lines" in err
    assert "SPOOL_DEBUG=1" in err
    monkeypatch.setenv("SPOOL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="lost"):
        cli.main(["status", "j_x"])


def test_ctrl_c_is_one_line_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/s.db")
    open_store(f"sqlite:///{tmp_path}/s.db").close()  # `status` reads a store that exists

    def interrupted(rt: object, args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "status", interrupted)
    assert cli.main(["status", "j_x"]) == 130
    assert capsys.readouterr().err == "spool: interrupted.\n"


def test_db_commands_name_the_redacted_url_on_failure(tmp_path: Path) -> None:
    url = f"postgresql://spool:s3cret@127.0.0.1:{free_port()}/test?connect_timeout=2"
    result = spool("db", "status", cwd=tmp_path, SPOOL_STORE_URL=url)
    assert result.returncode == 1
    line = one_line(result)
    assert "spool:***@127.0.0.1" in line and "s3cret" not in line


def test_a_reader_that_stops_early_is_not_an_error(tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "SPOOL_STORE_URL": f"sqlite:///{tmp_path}/spool.db"}
    spool = [sys.executable, "-m", "local.cli"]
    subprocess.run(
        [*spool, "enqueue", "echo", "--count", "3000", "--delay", "600"],
        env={**env, "SPOOL_DEMO_HANDLERS": "true"},
        check=True,
        capture_output=True,
    )
    # `spool jobs --all | head -1`: head exits after one line, the rest hits a closed pipe.
    jobs = subprocess.Popen(
        [*spool, "jobs", "--all"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert jobs.stdout is not None
    jobs.stdout.readline()
    jobs.stdout.close()
    _, err = jobs.communicate(timeout=60)
    assert jobs.returncode == 0, err
    assert b"BrokenPipe" not in err and b"unexpected" not in err


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        (("worker", "--burst"), {"SPOOL_LIMITS": '{"resize": {"concurrency": 2}}'}, "SPOOL_LIMITS"),
        (("worker", "--burst"), {"SPOOL_FAIR_TENANTS": "maybe"}, "SPOOL_FAIR_TENANTS"),
        (("worker", "--burst"), {"SPOOL_TENANT_WEIGHTS": '{"a": 0}'}, "SPOOL_TENANT_WEIGHTS"),
        (("serve", "--port", "0"), {"SPOOL_TENANT_LIMITS": "[1]"}, "SPOOL_TENANT_LIMITS"),
        (("serve", "--port", "0"), {"SPOOL_AUTH_FAILURES": "often"}, "SPOOL_AUTH_FAILURES"),
    ],
)
def test_bad_limit_settings_stop_serve_and_worker_with_one_line(
    tmp_path: Path, command: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    store = {"SPOOL_STORE_URL": f"sqlite:///{tmp_path}/spool.db"}
    result = spool(*command, cwd=tmp_path, **store, **env)
    assert result.returncode == 2
    assert named in one_line(result)


def test_a_deleted_working_directory_is_named_not_a_traceback(tmp_path: Path) -> None:
    """Run from a directory deleted under it, every command died with a traceback from
    os.getcwd() (the handlers' import path); a local one now says what to do."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (
        "import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
        "from local.cli import main; sys.exit(main(['jobs']))"
    )
    env = {**guarded_env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(gone)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("spool: the working directory no longer exists"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("remote", [False, True])
def test_a_payload_named_by_its_file_says_to_put_an_at_before_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    remote: bool,
) -> None:
    """A file's name where its JSON goes: "Expecting value: line 1 column 1" and a fix
    about shell quoting, for a file that held good JSON. `@job.json` reads it (curl's
    `-d @file`; tests/test_newuser_s61C_payload_file.py)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/s.db")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    monkeypatch.delenv("SPOOL_URL", raising=False)
    (tmp_path / "job.json").write_text('{"a": 1}')
    server = ["--url", "http://127.0.0.1:9", "--key", "k"] if remote else []
    assert cli.main([*server, "enqueue", "echo", "--payload", "job.json"]) == 2
    err = capsys.readouterr().err
    assert "put @ before its name: --payload @job.json." in err
    assert not (tmp_path / "s.db").exists()
