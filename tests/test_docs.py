"""The docs against the code: every route app.py declares is in the README with a
curl line, every curl line in the README names a real route, every chalicelib/ and
local/ module is on docs/architecture.md's map, no link in the docs leaves the
repository or points at a file that is not there, and a setting a shell block sets on
a line of its own is exported (pasted as written, it otherwise reached no `spool`).
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def declared_routes() -> set[tuple[str, str]]:
    """(method, path) of every @app.route in app.py, read from its source. HEAD, which
    every GET route takes (app.py's GET: the GET without its body), is left out: the
    README's table and curls list the GET, and say HEAD is answered too."""
    tree = ast.parse((ROOT / "app.py").read_text(encoding="utf-8"))
    named = {  # module-level NAME = [...] (methods=GET)
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    routes: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if (
                isinstance(deco, ast.Call)
                and isinstance(deco.func, ast.Attribute)
                and deco.func.attr == "route"
            ):
                path = ast.literal_eval(deco.args[0])
                methods = next(
                    (
                        ast.literal_eval(named.get(k.value.id, k.value))
                        if isinstance(k.value, ast.Name)
                        else ast.literal_eval(k.value)
                        for k in deco.keywords
                        if k.arg == "methods"
                    ),
                    ["GET"],
                )
                routes.update((m.upper(), path) for m in methods if m.upper() != "HEAD")
    return routes


def _fenced_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)


def _commands(block: str) -> list[str]:
    """Shell commands of a code block: continued lines and multi-line quotes joined."""
    commands, pending = [], ""
    for line in re.sub(r"\\\n", " ", block).splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append(pending)
        pending = ""
    assert not pending, f"unterminated quote in README.md: {pending!r}"
    return commands


def readme_curls() -> list[tuple[str, str]]:
    """(method, path) of every curl command in the README's code blocks."""
    calls = []
    for block in _fenced_blocks(README.read_text(encoding="utf-8")):
        for line in _commands(block):
            if not line.lstrip().startswith("curl "):
                continue
            words = shlex.split(line, comments=True)
            method = words[words.index("-X") + 1] if "-X" in words else "GET"
            url = next(w for w in words if w.startswith(("localhost:", "http://localhost")))
            path = urlsplit(url if "://" in url else f"http://{url}").path
            calls.append((method.upper(), path))
    return calls


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)))


def test_the_route_parser_sees_app_py() -> None:
    routes = declared_routes()
    assert ("POST", "/enqueue") in routes and ("POST", "/jobs/{id}/cancel") in routes
    assert len(routes) >= 10


@pytest.mark.parametrize("route", sorted(declared_routes()), ids=" ".join)
def test_every_route_is_listed_in_the_readme_with_a_curl_example(route: tuple[str, str]) -> None:
    method, path = route
    text = README.read_text(encoding="utf-8")
    assert f"`{method} {path}`" in text, f"README.md's Routes table lacks `{method} {path}`"
    pattern = _pattern(path)
    assert any(m == method and pattern.fullmatch(p) for m, p in readme_curls()), (
        f"README.md has no curl example for {method} {path}"
    )


def test_every_curl_in_the_readme_is_a_real_route() -> None:
    routes = declared_routes()
    curls = readme_curls()
    assert curls
    stray = [
        f"{m} {p}"
        for m, p in curls
        if not any(m == rm and _pattern(rp).fullmatch(p) for rm, rp in routes)
    ]
    assert not stray, f"README.md shows curl calls app.py does not serve: {stray}"


def test_every_route_mentioned_in_the_readme_table_exists() -> None:
    routes = {f"{m} {p}" for m, p in declared_routes()}
    text = README.read_text(encoding="utf-8")
    mentioned = set(re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) /[^`\s?]*)`", text))
    assert mentioned - routes == set(), "README.md names routes app.py does not declare"


# -- the architecture map ---------------------------------------------------------


def architecture_map() -> str:
    """docs/architecture.md's map of the code: its first fenced block."""
    return _fenced_blocks((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))[0]


def unmapped_modules(map_text: str, root: Path = ROOT) -> list[str]:
    """chalicelib/ and local/ modules the map names neither by name nor by a glob
    (`*_limits.py`, `dynamodb*.py`)."""
    words = set(re.findall(r"[A-Za-z0-9_]+", map_text))
    globs = [g for g in re.findall(r"[A-Za-z0-9_*]+\.py", map_text) if "*" in g]
    missing = []
    for module in sorted([*(root / "chalicelib").rglob("*.py"), *(root / "local").rglob("*.py")]):
        if module.name == "__init__.py" or "__pycache__" in module.parts:
            continue
        named = module.stem in words or any(Path(module.name).match(g) for g in globs)
        if not named:
            missing.append(str(module.relative_to(root)))
    return missing


def test_every_module_is_on_the_architecture_map() -> None:
    missing = unmapped_modules(architecture_map())
    assert not missing, (
        f"docs/architecture.md's map (its first code block) does not name {missing}: "
        "add a line for each saying what it does"
    )


def test_the_map_check_catches_a_module_left_off(tmp_path: Path) -> None:
    (tmp_path / "chalicelib" / "storage").mkdir(parents=True)
    (tmp_path / "local").mkdir()
    for name in (
        "chalicelib/__init__.py",
        "chalicelib/retry.py",
        "chalicelib/storage/sqlite_gate.py",
        "chalicelib/storage/redis_limits.py",
        "local/cli.py",
    ):
        (tmp_path / name).write_text("", encoding="utf-8")
    text = "retry.py  backoff\n  *_limits.py  claims under limits\ncli.py  the command line\n"
    assert unmapped_modules(text, tmp_path) == ["chalicelib/storage/sqlite_gate.py"]


# -- links ------------------------------------------------------------------------


def _prose(text: str) -> str:
    """The Markdown without fenced code blocks (a link there is not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def links(text: str) -> list[str]:
    """Targets of inline links and images, reference definitions and HTML links."""
    prose = re.sub(r"`[^`\n]*`", "", _prose(text))  # nor is one in a code span
    found = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    found += re.findall(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", prose, flags=re.M)
    found += re.findall(r"""<(?:a|img)\s[^>]*?(?:href|src)\s*=\s*["']([^"']+)["']""", prose)
    return found


def mentioned_paths(text: str) -> list[str]:
    """Relative paths climbing out of the doc's folder, linked or written in code spans."""
    spans = re.findall(r"`([^`\n]+)`", _prose(text))
    return [s for s in spans if re.match(r"(\.\./)+\S", s.strip())]


def problems(doc: Path, root: Path = ROOT) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    found = []
    for target in [*links(text), *mentioned_paths(text)]:
        parts = urlsplit(target)
        if parts.scheme or target.startswith("#"):
            continue  # a web address or an anchor in this page
        base = root if parts.path.startswith("/") else doc.parent
        resolved = (base / parts.path.lstrip("/")).resolve()
        if not resolved.is_relative_to(root):
            found.append(f"{target}: outside the repository")
        elif not resolved.exists():
            found.append(f"{target}: no such file")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository_or_dangles(doc: Path) -> None:
    assert problems(doc) == [], f"{doc.relative_to(ROOT)}: {problems(doc)}"


def test_the_link_checker_catches_what_it_must(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs" / "img").mkdir(parents=True)
    (repo / "README.md").write_text("# top\n", encoding="utf-8")
    (repo / "docs" / "img" / "there.png").write_bytes(b"")
    page = repo / "docs" / "page.md"
    page.write_text(
        "See [the plan](../../shared/DESIGN.md), [gone](missing.md), ![pic](img/there.png),\n"
        "[a multi-line\nlink](../README.md#top), `../../shared/STYLE.md` (the style guide),\n"
        '<a href="../../x.md">x</a>, [web](https://example.org/a.md), [top](#top),\n'
        "[root](/README.md)\n\n[ref]: ../../elsewhere.md\n\n```sh\ncat [not](a-link.md)\n```\n",
        encoding="utf-8",
    )
    text = page.read_text(encoding="utf-8")
    targets = links(text)
    assert "../../shared/DESIGN.md" in targets and "../README.md#top" in targets
    assert "a-link.md" not in targets
    assert mentioned_paths(text) == ["../../shared/STYLE.md"]
    assert sorted(problems(page, repo)) == [
        "../../elsewhere.md: outside the repository",
        "../../shared/DESIGN.md: outside the repository",
        "../../shared/STYLE.md: outside the repository",
        "../../x.md: outside the repository",
        "missing.md: no such file",
    ]


# -- which routes need a key --------------------------------------------------------


def _keyless_sentence(text: str) -> str:
    """The README's sentence that names the routes a request needs no key for."""
    match = re.search(r"Every route except (.*?)needs the `X-API-Key` header", text, flags=re.S)
    assert match, (
        "README.md lost its sentence 'Every route except ... needs the `X-API-Key` header'"
    )
    return match.group(1)


def test_the_readme_names_every_route_that_needs_no_key() -> None:
    """The OpenAPI document marks a keyless route with `security: []`; the README said
    only `GET /health` was one, while the dashboard's page and files need none either."""
    from chalicelib.api.openapi import document
    from chalicelib.config import Settings
    from chalicelib.handlers import Registry

    spec = document(Settings(), Registry())
    keyless = {
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == []
    }
    named = set(
        re.findall(r"`(GET|POST) (/[^`\s]*)`", _keyless_sentence(README.read_text("utf-8")))
    )
    assert keyless == {f"{m} {p}" for m, p in named}


# -- the metric families --------------------------------------------------------------


def test_operations_md_lists_every_metric_family() -> None:
    """Every family a /metrics exposition carries is a row of docs/operations.md's table
    (spool_job_holds_total and spool_limit_full were exported but not listed there)."""
    from chalicelib.api.metrics import Metrics
    from chalicelib.config import Settings
    from chalicelib.storage.memory import MemoryStore

    exposition = Metrics(MemoryStore(), Settings()).exposition().decode()
    names = set(re.findall(r"^# TYPE (spool_\w+) ", exposition, flags=re.M))
    names -= {name for name in names if name.endswith("_created")}  # prometheus-client's own
    table = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| `spool_")]
    listed = set()
    for row in rows:
        first = row.split("|")[1]
        spans = re.findall(r"`([a-z_]+)`", first)
        # `spool_jobs_enqueued_total`, `_succeeded_total`, ...: a suffix shares the prefix
        prefix = spans[0].split("_enqueued")[0] if spans else ""
        listed |= {s if s.startswith("spool_") else prefix + s for s in spans}
    assert names and names <= listed, f"docs/operations.md does not list {sorted(names - listed)}"


def _table_rows() -> list[tuple[list[str], str, set[str]]]:
    """docs/operations.md's metric table: (family names, type, label names) per row."""
    table = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = []
    for line in table.splitlines():
        if not line.startswith("| `spool_"):
            continue
        first, kind, labels = (cell.strip() for cell in line.split("|")[1:4])
        spans = re.findall(r"`([a-z_]+)`", first)
        prefix = spans[0].split("_enqueued")[0]
        names = [s if s.startswith("spool_") else prefix + s for s in spans]
        rows.append((names, kind, {label.strip() for label in labels.split(",") if label.strip()}))
    return rows


def test_operations_md_gives_each_family_its_real_type_and_labels() -> None:
    """The table's Type and Labels columns are what /metrics carries: an operator writes
    `by (...)` and `{...}` from them. Every family is given a sample first (a job run,
    a worker beat, a limit hold), so each one's label names show."""
    from chalicelib.api.metrics import Metrics
    from chalicelib.config import Settings
    from chalicelib.storage.memory import MemoryStore
    from tests.factories import new_job

    store = MemoryStore()
    metrics = Metrics(store, Settings())
    job = new_job(store.clock)
    store.add([job])
    store.beat("host:1", None, store.clock.now())
    metrics.run_duration.labels("default", "echo", "succeeded").observe(0.1)
    metrics.queue_wait.labels("default", "echo").observe(0.1)
    metrics.end_to_end.labels("default", "echo", "succeeded").observe(0.1)
    metrics.observe_webhook("delivered", 0.1)
    metrics.holds.labels("queue:default", "rate").inc()
    metrics.limit_full.labels("queue:default").set(1)
    exposition = metrics.exposition().decode()
    kinds = dict(re.findall(r"^# TYPE (spool_\w+) (\w+)$", exposition, flags=re.M))
    labels: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        match = re.match(r"(spool_\w+?)(?:_bucket|_count|_sum)?(?:\{(.*)\})? ", line)
        if match and not line.startswith("#"):
            family = match.group(1)
            family = family if family in kinds else family.removesuffix("_total")
            found = set(re.findall(r'(\w+)="', match.group(2) or "")) - {"le"}
            labels.setdefault(family, set()).update(found)
    for names, kind, listed in _table_rows():
        for name in names:
            family = name.removesuffix("_total") if name not in kinds else name
            assert family in kinds, f"{name} is listed but not exported"
            assert kinds[family] == kind, f"{name}: the table says {kind}, /metrics {kinds[family]}"
            assert labels.get(family, set()) == listed, (
                f"{name}: the table says labels {sorted(listed)}, /metrics has "
                f"{sorted(labels.get(family, set()))}"
            )


# -- settings in shell blocks ---------------------------------------------------------


def shell_blocks(doc: Path) -> list[str]:
    text = doc.read_text(encoding="utf-8")
    return re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, flags=re.M | re.S)


def unexported_settings(block: str) -> list[str]:
    """SPOOL_* settings a shell block sets on a line of their own without `export`:
    pasted as written they are shell variables, and no `spool` process sees them."""
    found = []
    for command in _commands(block):
        words = shlex.split(command, comments=True)
        if words and all(re.match(r"[A-Za-z_]\w*=", w) for w in words):
            found += [w.split("=", 1)[0] for w in words if w.startswith("SPOOL_")]
    return found


def test_the_export_check_tells_a_setting_from_a_command_prefix() -> None:
    block = (
        "SPOOL_A=1   # alone: not exported\nexport SPOOL_B=2\nSPOOL_C=3 spool worker\n"
        "H=\"x\"\nSPOOL_D='[1,\n  2]'\n"
    )
    assert unexported_settings(block) == ["SPOOL_A", "SPOOL_D"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_settings_shown_in_shell_blocks_are_exported(doc: Path) -> None:
    found = [name for block in shell_blocks(doc) for name in unexported_settings(block)]
    assert found == [], f"{doc.relative_to(ROOT)} sets {found} without `export`"


def test_the_schedules_example_in_handlers_md_runs_as_written(tmp_path: Path) -> None:
    """Its block pasted into a shell, then `spool schedules`: the enabled schedule is
    listed, the disabled one is not, and nothing is refused."""
    import json
    import subprocess
    import sys

    from tests.procs import guarded_env

    [block] = [b for b in shell_blocks(ROOT / "docs" / "handlers.md") if "SPOOL_SCHEDULES" in b]
    env = guarded_env()
    for name in [n for n in env if n.startswith("SPOOL_")]:
        del env[name]  # only what the block sets
    script = f"{block}\n{shlex.quote(sys.executable)} -m local.cli schedules --json\n"
    ran = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert [s["name"] for s in json.loads(ran.stdout)] == ["cleanup"]


def test_the_readme_names_every_setting_chalice_local_takes_from_its_config() -> None:
    """Under `chalice local` the variables .chalice/config.json sets for the local stage
    replace the shell's: `SPOOL_MAX_BATCH=2 chalice local ...` took a batch of 3, with
    nothing saying the shell's 2 was never read. The README names each of them."""
    import json

    config = json.loads((ROOT / ".chalice" / "config.json").read_text(encoding="utf-8"))
    names = set(config.get("environment_variables", {}))
    names |= set(config["stages"]["local"].get("environment_variables", {}))
    text = README.read_text(encoding="utf-8")
    said = re.search(r"replace the shell's[^.]*\.", text)
    assert said, "README.md does not say which settings chalice local takes from its config"
    start = text.rfind("\n\n", 0, said.start())
    paragraph = text[start : said.end()]
    missing = sorted(name for name in names if f"`{name}`" not in paragraph)
    assert not missing, f"README.md's chalice local paragraph lacks {missing}"
