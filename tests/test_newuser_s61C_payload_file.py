"""`spool enqueue --payload @FILE` and `--payload -`: a payload bigger than one
command-line argument may be (128 KiB on Linux) but within the 256 KiB a server takes.

Before, the command refused both forms and advised `--payload "$(cat job.json)"`, which
the shell itself refuses for such a file ("Argument list too long", exit 126): a job of
150-256 KiB could be sent with curl but not with `spool enqueue`, locally or remotely.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local import cli, payload_source
from local.cli_errors import UsageError
from tests.apikit import KEY_A
from tests.procs import ROOT, guarded_env
from tests.served import served

# Linux's MAX_ARG_STRLEN: no single argument (so no "$(cat job.json)") may be longer.
ONE_ARGUMENT_MAX = 32 * 4096
BIG = {"note": "x" * 200_000}


@pytest.fixture
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/s.db")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "s.db"


def spool(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(BIG))
    assert path.stat().st_size > ONE_ARGUMENT_MAX  # the shell could not pass it inline
    return path


def payload_of(capsys: pytest.CaptureFixture[str], job_id: str, *server: str) -> Any:
    code, out, err = spool(capsys, *server, "status", job_id, "--json")
    assert code == 0, err
    return json.loads(out)["payload"]


def test_a_payload_past_one_arguments_limit_is_enqueued_locally_from_its_file(
    tmp_path: Path, local_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big_file(tmp_path)
    code, out, err = spool(capsys, "enqueue", "echo", "--payload", "@job.json", "--json")
    assert code == 0, err
    assert payload_of(capsys, json.loads(out)["id"]) == BIG


def test_a_payload_past_one_arguments_limit_is_sent_to_a_server_from_its_file(
    tmp_path: Path, local_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big_file(tmp_path)
    with served(tmp_path / "server") as server:
        remote = ["--url", f"http://127.0.0.1:{server.port}", "--key", KEY_A]
        code, out, err = spool(
            capsys, *remote, "enqueue", "echo", "--payload", "@job.json", "--json"
        )
        assert code == 0, err
        assert payload_of(capsys, json.loads(out)["id"], *remote) == BIG
    assert not local_store.exists()


def test_a_payload_piped_into_the_command_is_read_from_standard_input(tmp_path: Path) -> None:
    """The real `spool` process, its standard input a pipe of the big file."""
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path}/s.db", SPOOL_DEMO_HANDLERS="true")
    env.pop("SPOOL_URL", None)
    with big_file(tmp_path).open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "local.cli", "enqueue", "echo", "--payload", "-", "--json"],
            cwd=ROOT,
            env=env,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["id"]
    status = subprocess.run(
        [sys.executable, "-m", "local.cli", "status", job_id, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(status.stdout)["payload"] == BIG, status.stderr


@pytest.mark.parametrize(
    ("content", "given", "said"),
    [
        (None, "@missing.json", "spool: --payload @missing.json: no such file."),
        (None, "@", "spool: --payload @ names no file. Name the file: --payload @job.json."),
        (b"\xef\xbb\xbf{}", "@job.json", "spool: --payload: job.json begins with a byte order"),
        (b'{"a": "\xff"}', "@job.json", "spool: --payload: job.json is not UTF-8 text (byte 7)."),
        (b'{"a": 1,}', "@job.json", "Fix the JSON in job.json."),
        (b"{}", "job.json", "put @ before its name: --payload @job.json."),
    ],
    ids=["missing", "no-name", "bom", "not-utf8", "bad-json", "without-at"],
)
@pytest.mark.parametrize("remote", [False, True])
def test_a_payload_file_that_cannot_be_a_job_is_one_line_naming_the_fix(
    tmp_path: Path,
    local_store: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    given: str,
    said: str,
    remote: bool,
) -> None:
    if content is not None:
        (tmp_path / "job.json").write_bytes(content)
    server = ["--url", "http://127.0.0.1:9", "--key", "dev-key-of-sixteen-chars"] if remote else []
    code, out, err = spool(capsys, *server, "enqueue", "echo", "--payload", given)
    assert (code, out) == (2, "")
    assert said in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not local_store.exists()


def test_a_terminal_on_standard_input_is_told_to_pipe_the_json_in() -> None:
    """Reading a terminal would wait for input the user never meant to type."""

    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    args = cli.build_parser().parse_args(["enqueue", "echo", "--payload", "-"])
    with pytest.raises(UsageError) as refused:
        payload_source.resolve(args, Terminal(b"{}"))
    assert "standard input, which is a terminal" in refused.value.problem
    assert "--payload - < job.json" in refused.value.fix


def test_a_stream_without_end_is_refused_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--payload @/dev/zero`, `yes | ... --payload -`: refused, not read into memory."""
    monkeypatch.setattr(payload_source, "MAX_BYTES", 1024 * 1024)
    args = cli.build_parser().parse_args(["enqueue", "echo", "--payload", "@/dev/zero"])
    with pytest.raises(UsageError) as refused:
        payload_source.resolve(args)
    assert refused.value.problem == "--payload: /dev/zero holds more than 1 MiB"


def test_a_payload_over_the_servers_limit_says_what_to_do(
    tmp_path: Path, local_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's 413 gave the sizes only ("request body is N bytes; the limit is
    262144"): the command adds what to do and whose limit it is."""
    (tmp_path / "job.json").write_text(json.dumps({"note": "x" * 300_000}))
    with served(tmp_path / "server") as server:
        remote = ["--url", f"http://127.0.0.1:{server.port}", "--key", KEY_A]
        code, out, err = spool(capsys, *remote, "enqueue", "echo", "--payload", "@job.json")
    assert (code, out) == (2, "")
    assert err.startswith("spool: request body is 300"), err
    assert "the limit is 262144. Send a smaller payload: keep large data elsewhere" in err
    assert "the server's SPOOL_MAX_BODY_BYTES, its operator's to raise.\n" in err
    assert err.count("\n") == 1, err
