"""Every Python block of README.md, client/README.md and docs/*.md runs under a test.

A new user copies them. Only README's and docs/client.md's ran before (stop 57): a
renamed import or argument anywhere else reached readers unseen. tests/doc_samples.py
says how a block is marked. Here an unmarked block runs as written in a fresh
interpreter against a real `spool serve` (SQLite, real HTTP, one server per server
setup for the whole module) and must exit 0 and print what its `print(...)  # TEXT`
comments say; a page's handler-module blocks make one module that a real
`spool worker` imports, with every job type the blocks declare registered from it
(tests/test_handlers_docs.py runs their jobs); a `not run` block gives its reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.webhooks.signing import new_secret
from tests import doc_samples
from tests.apikit import KEY_A, TENANT_A
from tests.client_servers import serve
from tests.procs import ROOT, Served, guarded_env, stop

# The server a page's programs run against, when not the default one. webhooks.md's
# callback URLs name public hosts: its server has no worker, so no job of its
# finishes and no delivery resolves them (the network guard would refuse it); its
# tenant has a signing secret, without which a callback_url is refused (422).
SERVER_ARGS: dict[str, tuple[str, ...]] = {"docs/webhooks.md": ("--no-worker",)}
SERVER_ENV: dict[str, dict[str, str]] = {
    "docs/webhooks.md": {"SPOOL_WEBHOOKS": json.dumps({TENANT_A: {"secrets": [new_secret()]}})},
}


class Servers:
    """The module's `spool serve`s, started on first use, one per server setup."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, Served] = {}

    def url_for(self, page: str) -> str:
        setup = page if page in SERVER_ARGS or page in SERVER_ENV else "default"
        if setup not in self.running:
            place = self.folder / setup.replace("/", "_")
            place.mkdir()
            self.running[setup] = serve(
                f"sqlite:///{place}/spool.db",
                place / "serve.log",
                *SERVER_ARGS.get(setup, ()),
                **SERVER_ENV.get(setup, {}),
            )
        return self.running[setup].url

    def stop_all(self) -> None:
        for served in self.running.values():
            stop(served.proc)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    running = Servers(tmp_path_factory.mktemp("doc-samples"))
    try:
        yield running
    finally:
        running.stop_all()


def with_root(env: dict[str, str]) -> dict[str, str]:
    """ENV with this checkout importable, the network guard's path kept first."""
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "PYTHONPATH": os.pathsep.join([*parts, str(ROOT)])}


def run_program(code: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = guarded_env(SPOOL_URL=url, SPOOL_API_KEY=KEY_A)
    for name in ("SPOOL_STORE_URL", "SPOOL_HANDLERS", "SPOOL_SCHEDULES", "SPOOL_LIMITS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd, env=with_root(env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_every_block_has_a_known_mark() -> None:
    blocks = doc_samples.all_blocks()  # raises on a comment that is no mark
    assert len(doc_samples.programs()) >= 10
    assert any(b.mark == doc_samples.HANDLER_MODULE for b in blocks)
    for block in blocks:
        if block.mark == doc_samples.NOT_RUN:
            assert len(block.reason) >= 10, f"{block.name}: say why it is not run"


PAGE = """\
Text.

```py
print("unmarked: run")
```

<!-- not run: a signature, nothing to call -->

```python
def f(x): ...
```
<!-- handler module -->
```python
X = 1
```
```sh
not python
```
"""


def test_marks_are_read_and_a_new_block_runs_by_default(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE, encoding="utf-8")
    blocks = doc_samples.page_blocks(page)
    assert [(b.line, b.mark, b.reason) for b in blocks] == [
        (3, None, ""),  # a `py` fence is Python too
        (9, doc_samples.NOT_RUN, "a signature, nothing to call"),
        (13, doc_samples.HANDLER_MODULE, ""),
    ]
    assert blocks[0].code == 'print("unmarked: run")\n'


@pytest.mark.parametrize("mark", ["<!-- not ran: typo -->", "<!-- not run: -->", "<!-- skip -->"])
def test_a_comment_that_is_no_mark_is_refused(mark: str, tmp_path: Path) -> None:
    """A misspelt mark, or one without its reason, must not quietly skip a block."""
    page = tmp_path / "page.md"
    page.write_text(f"{mark}\n```python\nraise SystemExit(1)\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is no sample mark"):
        doc_samples.page_blocks(page)


@pytest.mark.parametrize("block", doc_samples.programs(), ids=lambda b: b.name)
def test_each_program_runs_as_written(
    block: doc_samples.Block, servers: Servers, tmp_path: Path
) -> None:
    ran = run_program(block.code, servers.url_for(doc_samples.shown(block.page)), tmp_path)
    assert ran.returncode == 0, f"{block.name} failed:\n{ran.stderr}"
    for claim in doc_samples.printed_claims(block.code):
        assert claim in ran.stdout, f"{block.name}: printed {ran.stdout!r}, not {claim!r}"


def _declared_types(code: str) -> set[str]:
    return set(re.findall(r"""@handler\(\s*["']([^"']+)["']""", code))


HANDLER_PAGES = sorted(
    {b.page for b in doc_samples.all_blocks() if b.mark == doc_samples.HANDLER_MODULE}
)

# The reader's own modules a handler module imports, as the page names them ("yours").
READERS_MODULES = {
    "myapp/__init__.py": "",
    "myapp/billing.py": "billing = None  # the reader's payment client; never called here\n",
}

REGISTERED = """
import json
from chalicelib import runtime
rt = runtime.current()
print(json.dumps(sorted(s.type for s in rt.registry.loaded_specs()
                        if s.func.__module__ == "docs_handlers")))
"""


@pytest.mark.parametrize("page", HANDLER_PAGES, ids=lambda p: p.name)
def test_a_pages_handler_module_loads_in_a_worker(page: Path, tmp_path: Path) -> None:
    module = doc_samples.handler_module(page)
    (tmp_path / "docs_handlers.py").write_text(module, encoding="utf-8")
    for name, text in READERS_MODULES.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = guarded_env(SPOOL_HANDLERS="docs_handlers", SPOOL_STORE_URL="sqlite:///spool.db")
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_SCHEDULES", "SPOOL_LIMITS"):
        env.pop(name, None)
    env = with_root({**env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"})
    worker = subprocess.run(
        [sys.executable, "-m", "local.cli", "worker", "--burst", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    listed = subprocess.run(
        [sys.executable, "-c", REGISTERED],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == sorted(_declared_types(module))
