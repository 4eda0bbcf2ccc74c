"""The settings catalog (chalicelib/settings_catalog.py) against the code and the docs.

Each test names what to do when it fails: a setting the code mentions but the
catalog lacks, a catalog entry no code reads, a default that disagrees with the
code, a stale docs/settings.md.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import settings_catalog as catalog
from chalicelib.config import BOUNDS, Settings
from chalicelib.settings_catalog import BY_NAME, CATALOG, WRITE_COMMAND

ROOT = Path(__file__).resolve().parent.parent
# Where Spool's own settings are read or set (the brief of the drift test).
SCANNED = ("app.py", "chalicelib", "local", "infra", ".chalice/config.json", "Makefile")
CATALOG_FILE = ROOT / "chalicelib" / "settings_catalog.py"
# SPOOL_FOO, but not _SPOOL_FOO (an identifier) and not SPOOL_SMTP_* (a family).
NAME = re.compile(r"(?<![A-Za-z0-9_])SPOOL_[A-Z0-9_]+(?![A-Za-z0-9_*])")
# Variables of the test suite and the benchmarks, not of Spool: documented in docs/testing.md.
TEST_ONLY = {
    "SPOOL_TEST_PG_URL": ("tests", "bench"),
    "SPOOL_REQUIRE_POSTGRES": ("tests", ".ci"),
    "SPOOL_REQUIRE_CHROMIUM": ("tests", ".ci"),
    "SPOOL_TEST_PG_AHEAD": ("tests",),
    "SPOOL_TEST_REDIS_URL": ("tests",),
    "SPOOL_REQUIRE_REDIS": ("tests", ".ci"),
    "SPOOL_BENCH_PG_URL": ("bench",),
    "SPOOL_BENCH_REDIS_URL": ("bench",),
    "SPOOL_CRASH_RECORD_DIR": ("tests",),
    "SPOOL_HYPOTHESIS_PROFILE": ("tests", ".ci"),
}
HOW_TO_ADD = (
    "add a Setting(name=..., type=..., default=..., read_by=..., meaning=..., group=...) "
    "for each to CATALOG in chalicelib/settings_catalog.py, then run " + WRITE_COMMAND
)


def _files(*roots: str) -> Iterator[Path]:
    for root in roots:
        path = ROOT / root
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for file in candidates:
            if file.is_file() and "__pycache__" not in file.parts and file != CATALOG_FILE:
                yield file


def _mentions(*roots: str) -> dict[str, list[str]]:
    """Every SPOOL_* name in these files (comments and docstrings too): name -> places."""
    found: dict[str, list[str]] = {}
    for file in _files(*roots):
        text = file.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for name in NAME.findall(line):
                if not name.endswith("_"):
                    found.setdefault(name, []).append(f"{file.relative_to(ROOT)}:{number}")
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _used() -> set[str]:
    """Names the code uses: string literals that are not docstrings, and config files."""
    used: set[str] = set()
    for file in _files(*SCANNED):
        text = file.read_text(encoding="utf-8", errors="replace")
        if file.suffix != ".py":
            used.update(NAME.findall(text))
            continue
        tree = ast.parse(text)
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
            ):
                used.update(NAME.findall(node.value))
    return used


# -- (a) the code mentions nothing the catalog lacks -------------------------------------


def test_every_setting_the_code_mentions_is_in_the_catalog() -> None:
    missing = {n: places for n, places in _mentions(*SCANNED).items() if n not in BY_NAME}
    assert not missing, (
        "settings missing from the catalog:\n"
        + "\n".join(
            f"  {name}  (seen at {', '.join(places[:3])})"
            for name, places in sorted(missing.items())
        )
        + f"\n{HOW_TO_ADD}"
    )


# -- (b) every entry is still read somewhere ----------------------------------------------


def test_every_catalog_entry_is_still_used() -> None:
    unused = sorted(set(BY_NAME) - _used())
    assert not unused, (
        f"no code reads {', '.join(unused)} (only comments or docstrings mention it, if "
        "anything): remove it from CATALOG in chalicelib/settings_catalog.py and from those "
        f"docstrings, then run {WRITE_COMMAND}"
    )


def _constants() -> dict[str, str]:
    """Module-level NAME = "SPOOL_..." constants of the code: name -> setting."""
    found: dict[str, str] = {}
    for file in _files("app.py", "chalicelib", "local"):
        if file.suffix != ".py":
            continue
        for node in ast.parse(file.read_text(encoding="utf-8")).body:
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                for target in targets:
                    if isinstance(target, ast.Name) and NAME.fullmatch(value.value):
                        found[target.id] = value.value
    return found


def _read_in(text: str, name: str, field: str | None, constants: dict[str, str]) -> bool:
    """Whether this Python source reads the setting: its name in a string that is not
    a docstring, a constant holding it (`ssrf.HTTP_ALLOWLIST`), or settings.<field>."""
    tree = ast.parse(text)
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        literal = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if literal and id(node) not in docs and name in getattr(node, "value", ""):
            return True
        label = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if isinstance(node, ast.Name | ast.Attribute) and constants.get(str(label)) == name:
            return True
    return bool(field and re.search(rf"\.{field}\b", text))


def test_each_entry_names_a_file_that_reads_it() -> None:
    """Named in code, not only in a docstring or a comment: images.py's docstring lists
    the SPOOL_IMAGE_* limits, and the catalog named it for two that image_limits.py reads."""
    constants = _constants()
    wrong = []
    for s in CATALOG:
        path = ROOT / s.read_by
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if not _read_in(text, s.name, s.field, constants):
            wrong.append(
                f"{s.name}: {s.read_by} neither names it in code nor reads settings.{s.field}"
            )
    assert not wrong, "\n".join(wrong)


def test_the_reader_check_ignores_docstrings_and_comments() -> None:
    constants = {"HTTP_ALLOWLIST": "SPOOL_HTTP_ALLOWLIST"}
    docstring = '"""Settings: SPOOL_X."""\n# SPOOL_X too\nx = 1\n'
    assert not _read_in(docstring, "SPOOL_X", None, constants)
    assert _read_in('env.get("SPOOL_X")\n', "SPOOL_X", None, constants)
    assert _read_in("items(ssrf.HTTP_ALLOWLIST)\n", "SPOOL_HTTP_ALLOWLIST", None, constants)
    assert _read_in("settings.lease_seconds\n", "SPOOL_LEASE_SECONDS", "lease_seconds", {})


def test_entries_are_well_formed() -> None:
    assert len(BY_NAME) == len(CATALOG), "a name is listed twice"
    types = {catalog.TEXT, catalog.INTEGER, catalog.NUMBER, catalog.FLAG, catalog.LIST}
    for s in CATALOG:
        assert NAME.fullmatch(s.name), s.name
        assert s.group in catalog.GROUPS, s
        assert s.type in types | {catalog.JSON}, s
        assert s.meaning.strip() and "\n" not in s.meaning, s


# -- (c) defaults agree with the code ---------------------------------------------------------


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


FIELDS = [f.name for f in dataclasses.fields(Settings) if f.name != "extra"]


@pytest.mark.parametrize("field", FIELDS)
def test_each_settings_field_has_one_entry_with_its_default(field: str) -> None:
    entries = [s for s in CATALOG if s.field == field]
    assert len(entries) == 1, f"Settings.{field} needs exactly one catalog entry: {HOW_TO_ADD}"
    [entry] = entries
    assert _same(getattr(Settings(), field), entry.default), (
        f"{entry.name}: Settings.{field} defaults to {getattr(Settings(), field)!r}, "
        f"the catalog says {entry.default!r}: fix one, then run {WRITE_COMMAND}"
    )
    assert _same(getattr(Settings.from_env({}), field), entry.default), (
        f"{entry.name}: Settings.from_env() falls back to "
        f"{getattr(Settings.from_env({}), field)!r}, the catalog says {entry.default!r}"
    )


SAMPLES = {"text": "x", "integer": "7", "number": "7.5", "flag": "true", "list": "a,b"}


@pytest.mark.parametrize("entry", [s for s in CATALOG if s.field], ids=lambda s: s.name)
def test_the_variable_fills_the_field_the_catalog_names(entry: catalog.Setting) -> None:
    # A bounded number gets a sample inside the range config.py accepts (7 bytes is no
    # body limit): just above its minimum, never its default.
    bounds = BOUNDS.get(entry.name)
    sample = str(int(bounds[0]) + 1) if bounds else SAMPLES[entry.type]
    settings = Settings.from_env({entry.name: sample})
    assert not _same(getattr(settings, entry.field or ""), entry.default)


def _literal(node: ast.expr, module: str) -> Any:
    """The value of a default written in code: a literal, arithmetic on literals, or a
    module constant. NotImplemented when it is computed at run time."""
    if isinstance(node, ast.Name):
        import importlib

        value = getattr(importlib.import_module(module), node.id, NotImplemented)
        return value if isinstance(value, str | int | float | bool | tuple) else NotImplemented
    allowed = (ast.Constant, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Tuple)
    if all(isinstance(n, (*allowed, ast.expr_context)) for n in ast.walk(node)):
        return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})
    return NotImplemented


READERS = {"get", "getenv", "text", "flag", "number", "integer", "items"}


def _read(node: ast.AST) -> tuple[str, ast.expr | None] | None:
    """The SPOOL_* name a reader call takes and the default it passes, if any:
    settings.integer("SPOOL_X", 5), env.get("SPOOL_X", ""), _int(env, "SPOOL_X", 5)."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    reader = (isinstance(func, ast.Attribute) and func.attr in READERS) or (
        isinstance(func, ast.Name) and func.id.startswith("_")  # config.py's _int, _float
    )
    for index, arg in enumerate(node.args if reader else []):
        if (
            isinstance(arg, ast.Constant)
            and isinstance(arg.value, str)
            and NAME.fullmatch(arg.value)
        ):
            default = node.args[index + 1] if len(node.args) > index + 1 else None
            default = next((k.value for k in node.keywords if k.arg == "default"), default)
            return arg.value, default
    return None


def _code_defaults() -> list[tuple[str, object, str]]:
    """(name, default, place) for every read whose default the code spells out."""
    found = []
    for file in _files("app.py", "chalicelib", "local"):
        if file.suffix != ".py":
            continue
        rel = file.relative_to(ROOT)
        module = ".".join(rel.with_suffix("").parts)
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            read = _read(node)  # settings.integer("SPOOL_X", 5)
            if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
                first = _read(node.values[0])  # env.get("SPOOL_X") or 5
                read = (first[0], node.values[-1]) if first and first[1] is None else None
            name, default = read or (None, None)
            if name and default is not None:
                value = _literal(default, module)
                if value is not NotImplemented:
                    found.append((name, value, f"{rel}:{getattr(node, 'lineno', 0)}"))
    return found


def test_defaults_written_in_the_code_match_the_catalog() -> None:
    found = _code_defaults()
    # The finder must see the usual shapes, or this test would pass by finding nothing.
    assert {"SPOOL_MAX_BODY_BYTES", "SPOOL_SMTP_HOST", "SPOOL_IMAGE_MAX_BYTES"} <= {
        n for n, _, _ in found
    }
    wrong = [
        f"{place}: {name} defaults to {value!r} in the code, {BY_NAME[name].default!r} in the "
        "catalog"
        for name, value, place in found
        if name in BY_NAME
        and not _same(value, BY_NAME[name].default)
        # A raw "" is "unset": a text read as `text(...) or None`, a flag or list parsed later.
        and not (value == "" and BY_NAME[name].default in (None, "", (), False))
    ]
    assert not wrong, "\n".join(wrong) + f"\nfix one side, then run {WRITE_COMMAND}"


def test_send_email_defaults_match_the_catalog() -> None:
    """Defaults computed at run time (the SMTP port depends on the TLS mode)."""
    from chalicelib.builtin.email import SmtpSettings

    smtp = SmtpSettings.from_settings(Settings())
    assert (smtp.host, smtp.port, smtp.timeout) == (
        BY_NAME["SPOOL_SMTP_HOST"].default,
        BY_NAME["SPOOL_SMTP_PORT"].default,
        BY_NAME["SPOOL_SMTP_TIMEOUT"].default,
    )
    assert (smtp.starttls, smtp.ssl, smtp.ca_file, smtp.local_hostname) == (
        BY_NAME["SPOOL_SMTP_STARTTLS"].default,
        BY_NAME["SPOOL_SMTP_SSL"].default,
        BY_NAME["SPOOL_SMTP_CA_FILE"].default,
        BY_NAME["SPOOL_SMTP_LOCAL_HOSTNAME"].default,
    )


# -- (d) the page is what the generator writes now ------------------------------------------


def test_settings_page_is_generated_from_the_catalog() -> None:
    page = ROOT / "docs" / "settings.md"
    assert page.is_file(), f"docs/settings.md is missing: run {WRITE_COMMAND}"
    assert page.read_text(encoding="utf-8") == catalog.render(), (
        f"docs/settings.md differs from the catalog: run {WRITE_COMMAND}"
    )


def test_page_lists_every_setting_with_its_default() -> None:
    page = catalog.render()
    for s in CATALOG:
        row = next(line for line in page.splitlines() if line.startswith(f"| `{s.name}` |"))
        assert f"| {catalog.shown(s.default)} |" in row and s.read_by in row


def test_check_mode_reports_a_stale_page(tmp_path: Path, monkeypatch, capsys) -> None:
    stale = tmp_path / "settings.md"
    stale.write_text("# Settings\n\nold\n", encoding="utf-8")
    monkeypatch.setattr(catalog, "DOC_PATH", stale)
    assert catalog.main(["--check"]) == 1
    assert WRITE_COMMAND in capsys.readouterr().err
    monkeypatch.setattr(catalog, "ROOT", tmp_path)
    assert catalog.main(["--write"]) == 0
    assert catalog.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == catalog.render()


# -- the docs mention only real settings ---------------------------------------------------


def test_docs_mention_only_settings_that_exist() -> None:
    docs = [
        str(p.relative_to(ROOT))
        for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        if p.name != "settings.md"
    ]
    unknown = {n: p for n, p in _mentions(*docs).items() if n not in BY_NAME and n not in TEST_ONLY}
    assert not unknown, (
        "the docs mention settings nobody reads:\n"
        + "\n".join(f"  {n} at {', '.join(p[:3])}" for n, p in sorted(unknown.items()))
        + f"\nfix the docs, or (if the code reads it) {HOW_TO_ADD}"
    )


@pytest.mark.parametrize("name", sorted(TEST_ONLY))
def test_test_only_variables_are_used_and_documented(name: str) -> None:
    assert name in _mentions(*TEST_ONLY[name]), f"{name} is no longer used: drop it"
    assert name in (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")


# -- the Lambda path never loads the catalog --------------------------------------------------


def test_the_lambda_path_does_not_import_the_catalog(tmp_path: Path) -> None:
    """Run from tmp_path, not the checkout: importing app.py opens the default store,
    sqlite:///.spool/spool.db under the working directory, and a file there is shared
    by every test (and every parallel worker) that does the same."""
    probe = (
        "import sys, app, chalicelib.runtime, chalicelib.api.routes, chalicelib.events, "
        "chalicelib.worker; print('chalicelib.settings_catalog' in sys.modules)"
    )
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert out.stdout.strip() == "False"


def test_no_variable_of_the_suite_or_the_benchmarks_reads_as_a_misspelt_setting() -> None:
    """`spool` refuses a SPOOL_* name a letter or two from a setting (misspelt): a
    variable of the tests, the benchmarks or CI that close to one would stop every
    `spool` the suite starts with it set."""
    assert catalog.misspelt(TEST_ONLY) == []
    on_purpose = (
        "tests/test_settings_catalog.py:",
        "tests/test_cli_newuser.py:",
        "tests/test_aws_offline_docs.py:",
        "tests/test_chalice_local.py:",
        "tests/test_newuser_s50c_unread_settings.py:",
        "tests/test_docs.py:",  # SPOOL_A, SPOOL_B, SPOOL_D: text of a shell block, never set
    )
    near = catalog.misspelt(
        name
        for name, places in _mentions("tests", "bench", "deploy", ".ci").items()
        if name not in BY_NAME and not all(p.startswith(on_purpose) for p in places)
    )
    assert near == [], f"rename these, or they stop `spool`: {near}"


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("SPOOL_CONCURENCY", "SPOOL_CONCURRENCY"),  # a letter dropped
        ("SPOOL_STORE_URLL", "SPOOL_STORE_URL"),  # one added
        ("SPOOL_LAESE_SECONDS", "SPOOL_LEASE_SECONDS"),  # two swapped
        ("SPOOL_CACHE_TTI", "SPOOL_CACHE_TTL"),  # one changed
        ("SPOOL_DEMO_HANDLER", "SPOOL_DEMO_HANDLERS"),
        ("spool_api_keys", "SPOOL_API_KEYS"),  # the wrong case
    ],
)
def test_a_name_a_letter_or_two_from_a_setting_is_taken_for_it(name: str, meant: str) -> None:
    assert catalog.misspelt([name, *BY_NAME]) == [(name, meant)]


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("SPOOL_STORE", "SPOOL_STORE_URL"),  # four letters short: the distance missed it
        ("SPOOL_DEMO", "SPOOL_DEMO_HANDLERS"),
        ("SPOOL_LEASE", "SPOOL_LEASE_SECONDS"),
        ("spool_store", "SPOOL_STORE_URL"),  # cut short and in the wrong case
        ("SPOOL_STOR", "SPOOL_STORE_URL"),  # cut mid-word
        # Several settings begin so: the three shortest are named.
        ("SPOOL_CACHE", "SPOOL_CACHE_TTL, SPOOL_CACHE_SIZE or SPOOL_CACHE_BYTES"),
    ],
)
def test_a_setting_s_name_cut_short_is_taken_for_it(name: str, meant: str) -> None:
    """SPOOL_STORE and SPOOL_DEMO were left alone, read by nothing, because a name
    cut short is more than two letters from the setting it begins: the store meant
    stayed the default SQLite file without a word."""
    assert catalog.misspelt([name, *BY_NAME]) == [(name, meant)]


def test_names_that_begin_no_setting_are_still_left_alone() -> None:
    """Other programs' and handlers' own names, and the suite's (TEST_ONLY)."""
    others = ["SPOOL_DIR", "SPOOL_PARTNER_TOKEN", "SPOOL_STORE_URL_BACKUP", "SPOOL_", *TEST_ONLY]
    assert catalog.misspelt(others) == []


def _nearest_of_all(upper: str) -> str:
    """What misspelt took for a name's setting before: the nearest of every setting
    (then the first by name), if within MISSPELT_DISTANCE."""
    best = min(CATALOG, key=lambda s: (catalog._distance(upper, s.name), s.name)).name
    return best if catalog._distance(upper, best) <= catalog.MISSPELT_DISTANCE else ""


# Settings' names with a few letters changed, dropped, added or swapped, and others.
_SETTING_NAMES = st.sampled_from(sorted(BY_NAME))
_EDITED = st.builds(
    lambda name, cuts, text: name[: len(name) - cuts] + text,
    _SETTING_NAMES,
    st.integers(0, 4),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", max_size=4),
)
_OTHER = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", max_size=30).map("SPOOL_".__add__)


@given(st.one_of(_EDITED, _OTHER))
def test_a_near_setting_is_the_one_the_nearest_of_all_would_be(name: str) -> None:
    """misspelt measures only the settings whose length could be near (_near): the
    answer must be the one measuring every setting gave."""
    assert catalog._near(name) == _nearest_of_all(name)


def test_a_variable_that_is_no_setting_is_not_measured_against_every_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each SPOOL_* variable that is no setting was measured against all ~100 settings,
    twice, at every start of `spool serve`, `spool worker` and the CLI: 0.13 s for the
    suite's four, in every process a test starts. Only settings whose length is within
    MISSPELT_DISTANCE of the name's can be that near; the others are not measured."""
    measured: list[str] = []
    real = catalog._distance

    def counted(a: str, b: str) -> int:
        measured.append(b)
        return real(a, b)

    monkeypatch.setattr(catalog, "_distance", counted)
    name = "SPOOL_TEST_PG_URL"
    assert catalog.misspelt([name]) == []
    could_be_near = [
        s.name for s in CATALOG if abs(len(s.name) - len(name)) <= catalog.MISSPELT_DISTANCE
    ]
    assert sorted(measured) == sorted(could_be_near)
