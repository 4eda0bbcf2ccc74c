"""`spool` against a server (`--url`/SPOOL_URL, `--key`/SPOOL_API_KEY), over a real socket.

Most tests call `local.cli.main` in this process (fast; the HTTP is still real,
to a `spool serve` child on a SQLite file); one runs the `spool` entry point as
a child with only environment variables. The last section runs the new
commands (`jobs`, `cancel`, `status --wait`) on the local store.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local import cli, remote_cli
from local.job_commands import EXIT_JOB_FAILED, EXIT_WAIT_TIMEOUT
from tests.apikit import KEY_A, KEY_B
from tests.client_servers import serve
from tests.procs import ROOT, Served, guarded_env, stop


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("remote-cli")
    server = serve(f"sqlite:///{folder}/spool.db", folder / "serve.log")
    try:
        yield server
    finally:
        stop(server.proc)


@pytest.fixture
def remote(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[object]:
    """`spool ARGS` against the server with tenant A's key: (exit code, stdout, stderr)."""
    monkeypatch.delenv("SPOOL_URL", raising=False)
    monkeypatch.delenv("SPOOL_API_KEY", raising=False)

    def spool(*argv: str, key: str = KEY_A, url: str | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main([*argv, "--url", url or served.url, "--key", key])
        out, err = capsys.readouterr()
        return code, out, err

    yield spool


def queue() -> str:
    return "q-" + uuid.uuid4().hex[:10]


def test_enqueue_prints_a_line_or_json_and_honours_the_idempotency_key(remote) -> None:
    code, out, err = remote("enqueue", "echo", "--payload", '{"n": 1}', "--idempotency-key", "k1")
    assert code == 0 and err == ""
    first = re.fullmatch(r"(j_[0-9a-f]{32})  queued  created\n", out)
    assert first, out
    code, out, _ = remote(
        "enqueue", "echo", "--payload", '{"n": 1}', "--idempotency-key", "k1", "--json"
    )
    again = json.loads(out)
    assert code == 0 and again["created"] is False and again["id"] == first.group(1)
    assert again["idempotency_key"] == "k1"


def test_enqueue_count_uses_batches(remote) -> None:
    q = queue()
    code, out, err = remote(
        "enqueue", "echo", "--queue", q, "--delay", "1h", "--count", "150", "--json"
    )
    assert code == 0 and "enqueued 150 jobs" in err
    assert len({j["id"] for j in json.loads(out)}) == 150
    code, out, _ = remote("jobs", "--queue", q, "--all", "--json")
    assert len(json.loads(out)["jobs"]) == 150


def test_enqueue_count_goes_a_slice_at_a_time(remote, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every job and answer of a --count was held at once (~100 MB for 100,000)."""
    from spool_client import Client

    monkeypatch.setattr(remote_cli, "REMOTE_SLICE", 60)
    sizes: list[int] = []
    real = Client.enqueue_many

    def counted(self: Client, jobs: list[Any], **kwargs: Any) -> Any:
        sizes.append(len(jobs))
        return real(self, jobs, **kwargs)

    monkeypatch.setattr(Client, "enqueue_many", counted)
    q = queue()
    code, out, err = remote("enqueue", "echo", "--queue", q, "--delay", "1h", "--count", "150")
    assert code == 0 and out == "" and "enqueued 150 jobs" in err
    assert sizes == [60, 60, 30]
    code, out, _ = remote("jobs", "--queue", q, "--all", "--json")
    assert len(json.loads(out)["jobs"]) == 150


def test_status_wait_exits_by_how_the_job_ended(remote) -> None:
    _, out, _ = remote("enqueue", "echo", "--payload", '{"hi": 2}', "--json")
    job_id = json.loads(out)["id"]
    code, out, _ = remote("status", job_id, "--wait", "20s")
    assert code == 0
    assert f"job       {job_id}" in out and "state     succeeded" in out
    assert "attempts (the last 1" in out and "tenant (your key's)" in out
    code, out, _ = remote("status", job_id, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["result"] == {"hi": 2} and len(shown["attempt_history"]) == 1

    _, out, _ = remote(
        "enqueue", "fail", "--payload", '{"always": true}', "--max-attempts", "1", "--json"
    )
    dead = json.loads(out)["id"]
    code, out, _ = remote("status", dead, "--wait")
    assert code == EXIT_JOB_FAILED and "state     dead" in out and "planned failure" in out

    _, out, _ = remote("enqueue", "echo", "--delay", "1h", "--json")
    later = json.loads(out)["id"]
    code, out, _ = remote("status", later, "--wait", "1", "--json")
    assert code == EXIT_WAIT_TIMEOUT and json.loads(out)["state"] == "queued"


def within(seconds: float, command: Any, *argv: str) -> tuple[int, str, str]:
    """command(*argv) on a thread, failing the test if it has not returned in time."""
    answer: list[tuple[int, str, str]] = []
    runner = threading.Thread(target=lambda: answer.append(command(*argv)), daemon=True)
    runner.start()
    runner.join(seconds)
    assert answer, f"spool {' '.join(argv)} was still running after {seconds} s"
    return answer[0]


def test_status_wait_0_looks_once(remote, local) -> None:
    """`--wait TIME` waits at most TIME, so `--wait 0` answers at once (exit 3 for a job
    not finished); it used to mean no limit, as `--wait` alone does, and never returned
    for a delayed job."""
    for spool in (remote, local):
        later = json.loads(spool("enqueue", "echo", "--delay", "1h", "--json")[1])["id"]
        for zero in ("0", "0s"):
            code, out, _ = within(30, spool, "status", later, "--wait", zero, "--json")
            assert code == EXIT_WAIT_TIMEOUT and json.loads(out)["state"] == "queued"
        spool("cancel", later)
        code, _, _ = within(30, spool, "status", later, "--wait", "0")
        assert code == EXIT_JOB_FAILED  # finished already: the one look tells how


def test_enqueue_json_names_the_idempotency_key_locally_and_remotely(remote, local) -> None:
    """docs/client.md: `enqueue --json` prints {"id", "state", "created", "idempotency_key"};
    on the local store it printed `tenant` in place of the key."""
    for spool in (remote, local):
        key = "k-" + uuid.uuid4().hex
        code, out, _ = spool("enqueue", "echo", "--idempotency-key", key, "--json")
        answer = json.loads(out)
        assert code == 0 and {"id", "state", "created", "idempotency_key"} <= set(answer)
        assert answer["idempotency_key"] == key and answer["created"] is True
        again = json.loads(spool("enqueue", "echo", "--idempotency-key", key, "--json")[1])
        assert again["id"] == answer["id"] and again["created"] is False


def test_jobs_lists_pages_with_filters(remote) -> None:
    q = queue()
    ids = []
    for i in range(5):
        _, out, _ = remote(
            "enqueue", "echo", "--queue", q, "--delay", "1h", "--payload", f'{{"i": {i}}}', "--json"
        )
        ids.append(json.loads(out)["id"])
    code, out, err = remote("jobs", "--queue", q, "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "type",
        "queue",
        "state",
        "tries",
        "created",
        "(UTC)",
        "error",
        "/",
        "result",
    ]
    assert [line.split()[0] for line in lines[1:]] == ids[:2]
    cursor = re.search(r"the next page: --cursor (\S+)$", err.strip())
    assert cursor and err.startswith("2 job(s)")
    code, out, _ = remote(
        "jobs", "list", "--queue", q, "--limit", "2", "--cursor", cursor.group(1), "--json"
    )
    page = json.loads(out)
    assert [j["id"] for j in page["jobs"]] == ids[2:4] and page["next_cursor"]
    code, out, err = remote("jobs", "--queue", q, "--limit", "2", "--all", "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == ids
    assert json.loads(out)["next_cursor"] is None and "more" not in err
    code, out, _ = remote("jobs", "--queue", q, "--state", "succeeded", "--json")
    assert json.loads(out)["jobs"] == []
    code, _, err = remote("jobs", "--queue", q, "--state", "nope")
    assert code == 2 and "invalid choice" in err


def test_cancel_then_cancel_again_is_refused(remote) -> None:
    _, out, _ = remote("enqueue", "echo", "--delay", "1h", "--json")
    job_id = json.loads(out)["id"]
    code, out, _ = remote("cancel", job_id)
    assert code == 0 and out == f"{job_id}  cancelled\n"
    code, out, err = remote("cancel", job_id, "--json")
    assert code == 1 and out == "" and err.startswith("spool: ") and err.count("\n") == 1
    assert "cancel" in err
    code, _, err = remote("cancel", job_id, key=KEY_B)  # another tenant: not found
    assert code == 1 and "not found" in err and "--key" in err


def test_dead_letters_list_and_redrive(remote) -> None:
    q = queue()
    dead = []
    for _ in range(3):
        _, out, _ = remote(
            "enqueue",
            "fail",
            "--queue",
            q,
            "--payload",
            '{"always": true}',
            "--max-attempts",
            "1",
            "--json",
        )
        dead.append(json.loads(out)["id"])
    for job_id in dead:
        assert remote("status", job_id, "--wait", "20")[0] == EXIT_JOB_FAILED
    code, out, err = remote("dlq", "list", "--queue", q)
    assert code == 0 and "3 dead job(s)" in err
    assert all(i in out for i in dead) and "planned failure" in out
    code, out, _ = remote("dlq", "redrive", dead[0], "--json")
    assert code == 0 and json.loads(out)["id"] == dead[0]
    assert remote("status", dead[0], "--wait", "20")[0] == EXIT_JOB_FAILED
    code, out, err = remote("dlq", "redrive", "--all", "--queue", q, "--json")
    assert code == 0 and sorted(json.loads(out)["ids"]) == sorted(dead)
    assert "redriven 3 job(s)" in err
    code, _, err = remote("dlq", "redrive")
    assert code == 2 and "--all" in err
    # A filter beside an id chose nothing: it was ignored and the job redriven anyway.
    code, _, err = remote("dlq", "redrive", dead[0], "--queue", "elsewhere")
    assert code == 2 and "a job id names one job" in err


def test_failures_are_one_line_with_the_right_exit_code(
    remote, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = remote("enqueue", "echo", key="wrong-key")
    assert code == 2 and out == "" and "invalid API key" in err and "SPOOL_API_KEY" in err
    code, _, err = remote("enqueue", "no_such_type")
    assert code == 2 and "no_such_type" in err and "echo" in err  # names the server's types
    code, _, err = remote("enqueue", "sleep", "--payload", '{"seconds": -1}')
    assert code == 2 and "seconds" in err
    code, _, err = remote("enqueue", "echo", "--payload", "[1]")
    assert code == 2 and "JSON object" in err
    code, _, err = remote("status", "j_" + "0" * 32)
    assert code == 1 and "not found" in err
    code, _, err = remote("jobs", "--tenant", "acme")
    assert code == 2 and "--tenant is for the local store" in err
    code, _, err = remote("jobs", "--cursor", "garbage")
    assert code == 2 and "cursor" in err
    monkeypatch.setitem(remote_cli.RETRY, "attempts", 2)
    monkeypatch.setitem(remote_cli.RETRY, "base", 0.01)
    code, _, err = remote("jobs", url="http://127.0.0.1:9")
    assert code == 1 and "cannot reach http://127.0.0.1:9" in err and "SPOOL_URL" in err
    assert err.count("\n") == 1


def test_the_spool_command_reads_the_url_and_key_from_the_environment(served: Served) -> None:
    env = guarded_env(SPOOL_URL=served.url, SPOOL_API_KEY=KEY_B)
    env.pop("SPOOL_STORE_URL", None)

    def spool(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "local.cli", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    added = spool("enqueue", "echo", "--payload", '{"env": 1}', "--json")
    assert added.returncode == 0, added.stderr
    job_id = json.loads(added.stdout)["id"]
    listed = spool("jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert job_id in {j["id"] for j in json.loads(listed.stdout)["jobs"]}
    # The flags win over the environment, and work before the command too.
    other = spool("--key", KEY_A, "status", job_id)
    assert other.returncode == 1 and "not found" in other.stderr


def test_url_on_a_command_that_cannot_use_it_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--url", "http://127.0.0.1:9", "worker", "--burst"]) == 2
    err = capsys.readouterr().err
    assert "--url and --key work with the job commands" in err and "spool worker" in err


def test_a_store_url_given_before_db_is_refused_not_ignored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`spool --url postgresql://... db migrate` migrated nothing and exited 0 (the flag
    before `db` is the server's, and db went on with SPOOL_STORE_URL)."""
    assert cli.main(["--url", "postgresql://127.0.0.1:9/x", "db", "migrate"]) == 2
    err = capsys.readouterr().err
    assert "not with `spool db`" in err and "spool db --url STORE_URL migrate" in err


def test_every_option_of_every_command_says_what_it_does() -> None:
    import argparse

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        bare = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    bare += walk(child, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                bare.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
        return bare

    assert walk(cli.build_parser(), "spool") == []


def test_help_documents_the_exit_codes_and_the_remote_options() -> None:
    text = cli.build_parser().format_help()
    assert "exit codes:" in text and "--url" in text and "SPOOL_API_KEY" in text
    for code in ("0", "1", "2", str(EXIT_WAIT_TIMEOUT), str(EXIT_JOB_FAILED), "130"):
        assert re.search(rf"^  {code}\s", text, flags=re.M), code
    for command in ("enqueue", "status", "jobs", "cancel"):
        sub = subprocess.run(
            [sys.executable, "-m", "local.cli", command, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "--url" in sub.stdout and "--key" in sub.stdout, command
        if command == "status":  # its --wait's help points at them
            assert "exit codes:" in sub.stdout


# -- the new commands on the local store ------------------------------------------------------


@pytest.fixture
def local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[object]:
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{tmp_path}/local.db")
    monkeypatch.setenv("SPOOL_DEMO_HANDLERS", "true")
    monkeypatch.delenv("SPOOL_URL", raising=False)

    def spool(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    yield spool


def test_local_jobs_and_cancel(local) -> None:
    ids = [
        json.loads(local("enqueue", "echo", "--delay", "1h", "--json", "--tenant", t)[1])["id"]
        for t in ("acme", "acme", "other")
    ]
    code, out, err = local("jobs")
    assert code == 0 and "3 job(s)" in err
    assert "tenant" in out.splitlines()[0] and all(i in out for i in ids)
    code, out, _ = local("jobs", "--tenant", "acme", "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == ids[:2]
    code, out, err = local("jobs", "--limit", "1", "--json")
    first = json.loads(out)
    assert [j["id"] for j in first["jobs"]] == ids[:1] and first["next_cursor"]
    code, out, _ = local("jobs", "--limit", "1", "--cursor", first["next_cursor"], "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == ids[1:2]
    code, out, _ = local("cancel", ids[0], "--json")
    assert code == 0 and json.loads(out)["state"] == "cancelled"
    code, _, err = local("cancel", ids[0])
    assert code == 1 and err.startswith("spool: ")
    code, out, _ = local("jobs", "--state", "cancelled", "--json")
    assert [j["id"] for j in json.loads(out)["jobs"]] == ids[:1]
    code, _, err = local("cancel", ids[2], "--tenant", "acme")
    assert code == 1 and "not found" in err


def test_local_enqueue_count_json_lists_every_job(local) -> None:
    code, out, err = local("enqueue", "echo", "--count", "3", "--delay", "1h", "--json")
    added = json.loads(out)
    assert code == 0 and len({a["id"] for a in added}) == 3 and "enqueued 3 jobs" in err
    assert {a["state"] for a in added} == {"queued"} and all(a["created"] for a in added)


def test_local_status_wait(local) -> None:
    job_id = json.loads(local("enqueue", "echo", "--delay", "1h", "--json")[1])["id"]
    code, out, _ = local("status", job_id, "--wait", "0.3")
    assert code == EXIT_WAIT_TIMEOUT and "state     queued" in out
    local("cancel", job_id)
    code, out, _ = local("status", job_id, "--wait", "--json")
    assert code == EXIT_JOB_FAILED and json.loads(out)["state"] == "cancelled"
    done = json.loads(local("enqueue", "echo", "--json")[1])["id"]
    assert local("worker", "--burst", "--quiet")[0] == 0
    code, out, _ = local("status", done, "--wait", "5")
    assert code == 0 and "state     succeeded" in out


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("127.0.0.1:8000", "Fix --url / SPOOL_URL: http://127.0.0.1:8000"),
        ("sqlite:///.spool/spool.db", "SPOOL_URL names a Spool server (http://HOST:PORT)"),
        ("postgresql://db/spool", "the store's URL goes in SPOOL_STORE_URL"),
    ],
)
def test_a_server_url_that_is_not_http_says_what_to_give(
    url: str, fix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fix named the key too ("Fix --url / SPOOL_URL or --key / SPOOL_API_KEY") for a
    URL without its scheme, and a store URL given as the server's was not told apart."""
    assert cli.main(["--url", url, "--key", "k", "jobs"]) == 2
    err = capsys.readouterr().err
    assert fix in err and "SPOOL_API_KEY" not in err and err.count("\n") == 1


def test_a_key_no_server_could_hold_names_the_key_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--url", "http://127.0.0.1:9", "--key", "two words", "jobs"]) == 2
    err = capsys.readouterr().err
    assert "Fix --key / SPOOL_API_KEY" in err and "--url" not in err


def test_no_key_at_all_says_none_was_given_not_which_header_to_send(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command-line user sends no header: the server's "send it in the X-API-Key header"
    told them how to write HTTP, not that SPOOL_API_KEY was unset."""
    monkeypatch.delenv("SPOOL_API_KEY", raising=False)
    assert cli.main(["--url", served.url, "jobs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spool: no API key given: the server needs one.")
    assert "X-API-Key" not in err
    assert "Pass the key with --key or SPOOL_API_KEY" in err and err.count("\n") == 1
