"""docs/self-hosting.md's Postgres steps, pasted as written, run a user's own job.

tests/test_docs_commands.py only parses each `spool` line; tests/test_deploy.py starts
the containers' commands. Neither followed the page as a new user does: its `export`
lines, `spool db migrate`, then the worker and API lines of "Run the processes",
with a handler module of their own. The page never said where the processes get
those handlers, so an API started as shown refused every job of the user's type
(422 unknown_job_type) while the worker had it. Here only the hosts, ports, keys
and the database are substituted; every other setting is the page's.

The same page, taken literally, also: shows the image with your handlers (linted
by hadolint, its layout reproduced here), has you make secrets files that
.gitignore must keep out of commits, and makes a key and its sha256 entry that a
server must accept.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.pg_support import fresh_schema
from tests.procs import guarded_env, read_banner, stop
from tests.test_docs import ROOT, _commands

PAGE = ROOT / "docs" / "self-hosting.md"
BIN = Path(sys.executable).parent
KEY = "k-docs-0123456789"
JOB_TYPE = "docs_self_hosting_hello"


def postgres_part() -> str:
    """The page's Postgres steps: from its start to the `--processes` section."""
    text = PAGE.read_text(encoding="utf-8")
    return text[: text.index("### Several API processes")]


def _assignment(word: str) -> tuple[str, str] | None:
    found = re.match(r"([A-Za-z_]\w*)=(.*)", word, flags=re.S)
    return (found.group(1), found.group(2)) if found else None


def steps() -> tuple[dict[str, str], list[tuple[dict[str, str], list[str]]]]:
    """(exported settings, [(per-command settings, spool argv)]) of the Postgres part's
    shell blocks, in page order."""
    exported: dict[str, str] = {}
    commands: list[tuple[dict[str, str], list[str]]] = []
    for block in _blocks():
        for command in _commands(block):
            words = shlex.split(command, comments=True)
            if words[:1] == ["export"]:
                exported.update(a for w in words[1:] if (a := _assignment(w)))
                continue
            settings = {}
            while words and (a := _assignment(words[0])):
                settings[a[0]] = a[1]
                words = words[1:]
            if words and words[0].removeprefix(".venv/bin/") == "spool":
                commands.append((settings, words[1:]))
    return exported, commands


def _blocks() -> list[str]:
    return re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", postgres_part(), flags=re.M | re.S)


def _local(argv: list[str]) -> list[str]:
    """The page's argv on this host: loopback and a free port, never 0.0.0.0:8000."""
    out = list(argv)
    for flag, value in (("--host", "127.0.0.1"), ("--port", "0")):
        if flag in out:
            out[out.index(flag) + 1] = value
    return out


def _write_handler_modules(where: Path, modules: str) -> None:
    """Each module SPOOL_HANDLERS names, as the user's own: the first registers a job
    type the built-ins lack, so only a process that imported it can take the job."""
    for n, name in enumerate(m.strip() for m in modules.split(",") if m.strip()):
        parts = name.split(".")
        for i in range(1, len(parts)):
            package = where.joinpath(*parts[:i])
            package.mkdir(parents=True, exist_ok=True)
            (package / "__init__.py").touch()
        body = (
            "from chalicelib.handlers import handler\n\n\n"
            f"@handler({JOB_TYPE!r})\n"
            "def hello(payload):\n"
            "    return {'hello': payload.get('name')}\n"
            if n == 0
            else ""
        )
        where.mkdir(parents=True, exist_ok=True)
        where.joinpath(*parts[:-1], parts[-1] + ".py").write_text(body)


def test_the_page_shows_the_steps_this_test_follows() -> None:
    exported, commands = steps()
    assert "SPOOL_STORE_URL" in exported
    verbs = [argv[:2] for _, argv in commands]
    assert ["db", "migrate"] in verbs and ["worker"] in [v[:1] for v in verbs]
    assert any(argv[:1] == ["serve"] and "--no-worker" in argv for _, argv in commands)


def test_the_page_says_where_the_processes_get_your_handlers() -> None:
    exported, commands = steps()
    names = [exported] + [settings for settings, _ in commands]
    assert any("SPOOL_HANDLERS" in s for s in names), (
        "docs/self-hosting.md's Postgres steps never set SPOOL_HANDLERS: an API and a "
        "worker started as shown know only the built-in job types"
    )


@pytest.mark.postgres
def test_the_postgres_steps_as_written_run_a_job_of_your_own_handler(tmp_path: Path) -> None:
    exported, commands = steps()
    with fresh_schema(migrate=False) as url:
        base = {**exported, "SPOOL_STORE_URL": url}
        _write_handler_modules(tmp_path, base.get("SPOOL_HANDLERS", ""))
        procs: list[subprocess.Popen[str]] = []
        api = ""
        try:
            for settings, argv in commands:
                env = guarded_env(**{**base, **settings})
                if env.get("SPOOL_API_KEYS") in ("...", "'...'"):
                    env["SPOOL_API_KEYS"] = f"{KEY}=acme"
                run = [str(BIN / "spool"), *_local(argv)]
                if argv[0] == "db":
                    done = subprocess.run(
                        run, cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=120, check=False,
                    )  # fmt: skip
                    assert done.returncode in (0, 3), done.stderr  # status: 3 while pending
                    continue
                proc = subprocess.Popen(
                    run, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, text=True,
                )  # fmt: skip
                procs.append(proc)
                if argv[0] == "serve":
                    banner = read_banner(proc)
                    found = re.search(r"serving app\.py on (http://127\.0\.0\.1:\d+)", banner)
                    assert found, banner
                    api = found.group(1)
            assert api, "the page starts no API process"
            request = urllib.request.Request(
                f"{api}/enqueue",
                data=json.dumps({"type": JOB_TYPE, "payload": {"name": "docs"}}).encode(),
                headers={"X-API-Key": KEY},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    job = json.load(reply)
            except urllib.error.HTTPError as refused:
                pytest.fail(f"the API refused the job: {refused.code} {refused.read()!r}")
            status = urllib.request.Request(
                f"{api}/status/{job['id']}?wait=20", headers={"X-API-Key": KEY}
            )
            with urllib.request.urlopen(status, timeout=30) as reply:
                answer = json.load(reply)
            assert (answer["state"], answer["result"]) == ("succeeded", {"hello": "docs"})
        finally:
            for proc in procs:
                stop(proc)


# -- the image with your handlers -------------------------------------------------


def derived_dockerfile() -> str:
    """The page's Dockerfile for an image with the user's handlers."""
    found = re.findall(r"^```dockerfile\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.M | re.S)
    assert len(found) == 1, "docs/self-hosting.md shows no image with your own handlers"
    return str(found[0])


def _instructions(dockerfile: str) -> list[list[str]]:
    """Each instruction's words, continued lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and line[0] != "#"]


def _workdir() -> str:
    found = re.findall(r"^WORKDIR (\S+)", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    return str(found[-1])


def test_the_image_with_your_handlers_passes_hadolint(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(derived_dockerfile())
    result = subprocess.run(
        [str(BIN / "hadolint"), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_with_your_handlers_imports_them_from_where_it_copied_them(
    tmp_path: Path,
) -> None:
    """The image's layout on this host: what COPY puts at DEST is put at ROOT/DEST,
    the ENV's PYTHONPATH is read under ROOT the same way, and `spool` runs in an empty
    working directory, as under compose's and Kubernetes' empty /tmp. Then
    `spool enqueue` of the user's type is accepted: SPOOL_HANDLERS found the module."""
    image = tmp_path / "image"
    env_lines: dict[str, str] = {}
    copied: list[str] = []
    for words in _instructions(derived_dockerfile()):
        if words[0] == "COPY":
            copied.append(words[-1])
        elif words[0] == "ENV":
            env_lines.update(a for w in words[1:] if (a := _assignment(w)))
    workdir = _workdir()
    assert copied, "the image copies no handlers"
    for dest in copied:
        assert not (dest + "/").startswith(workdir.rstrip("/") + "/"), (
            f"{dest} is under {workdir}, the working directory compose and Kubernetes "
            "mount an empty volume over"
        )
    assert "SPOOL_HANDLERS" in env_lines and "PYTHONPATH" in env_lines
    modules = env_lines["SPOOL_HANDLERS"]
    top = modules.split(",")[0].strip().split(".")[0]
    home = next(d for d in copied if Path(d).name == top)
    _write_handler_modules(image / Path(home).parent.relative_to("/"), modules)
    path = ":".join(
        str(image / Path(p).relative_to("/")) for p in env_lines["PYTHONPATH"].split(":")
    )
    empty = tmp_path / "workdir"
    empty.mkdir()
    env = guarded_env(
        SPOOL_HANDLERS=modules, PYTHONPATH=path,
        SPOOL_STORE_URL=f"sqlite:///{tmp_path / 'spool.db'}", SPOOL_DEMO_HANDLERS="false",
    )  # fmt: skip
    done = subprocess.run(
        [str(BIN / "spool"), "enqueue", JOB_TYPE, "--payload", '{"name": "docs"}'],
        cwd=empty, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# -- the secrets files the page has you make ----------------------------------------


def copied_secret_files() -> list[str]:
    """DEST of every `cp SRC.example DEST` on the page (inline or in a block): the
    files it has the user fill with passwords and keys."""
    text = PAGE.read_text(encoding="utf-8")
    return [dest.rstrip("`") for _, dest in re.findall(r"\bcp (\S+)\.example (\S+)", text)]


def test_the_secrets_files_the_page_has_you_make_are_ignored_by_git(tmp_path: Path) -> None:
    """The page says deploy/.env and the overlay's spool.env are never committed: the
    repository's .gitignore, in a scratch repository holding those files, must keep
    them out of `git add -A`, or the first commit after following the page holds
    the database password and every API key."""
    made = copied_secret_files()
    assert {"deploy/.env", "deploy/k8s/overlays/example/spool.env"} <= set(made)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    (tmp_path / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    for name in made:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("POSTGRES_PASSWORD=secret\n")
    listed = subprocess.run(
        ["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert not [name for name in made if name in listed], listed


# -- making a key -------------------------------------------------------------------


def key_block() -> str:
    """The page's block that makes a tenant key and its SPOOL_API_KEYS entry."""
    found = [b for b in _blocks() if "token_urlsafe" in b and "sha256" in b]
    assert len(found) == 1, "docs/self-hosting.md shows no way to make a key's digest"
    return found[0]


def test_the_key_the_page_makes_opens_a_server_given_its_entry(tmp_path: Path) -> None:
    """The block run by a shell prints a key and an entry; a `spool serve` given only
    that entry in SPOOL_API_KEYS answers the key (200), and refuses a wrong one."""
    from tests.procs import spool_serve

    made = subprocess.run(
        ["bash", "-euc", key_block()], capture_output=True, text=True, check=True, timeout=60
    )
    key, entry = made.stdout.split()
    assert entry.startswith("sha256:") and entry.endswith("=acme") and key not in entry
    env = guarded_env(SPOOL_STORE_URL=f"sqlite:///{tmp_path / 'spool.db'}", SPOOL_API_KEYS=entry)
    served = spool_serve("--no-worker", env=env)
    try:
        for sent, code in ((key, 200), (key + "x", 401)):
            request = urllib.request.Request(f"{served.url}/jobs", headers={"X-API-Key": sent})
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    status = reply.status
            except urllib.error.HTTPError as refused:
                status = refused.code
            assert status == code, sent
    finally:
        stop(served.proc)
