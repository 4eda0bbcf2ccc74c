"""`spool enqueue` on the local store stores only what the HTTP API would store, and a
huge --count is refused, not run until memory runs out."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from chalicelib.clock import SystemClock
from chalicelib.models import JobQuery
from chalicelib.service import Service
from chalicelib.storage.sqlite import SQLiteStore
from local import cli
from local.cli_errors import validation_problem
from tests.procs import guarded_env

SPOOL = Path(sys.executable).with_name("spool")


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool.db"
    monkeypatch.setenv("SPOOL_STORE_URL", f"sqlite:///{path}")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, out: str, err: str, db: Path) -> str:
    """A usage error: exit 2, one `spool:` line, nothing printed or stored."""
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("spool: "), err
    assert not db.exists() or SQLiteStore(str(db)).counts() == {}
    return err


def tenants(db: Path) -> list[str]:
    store = SQLiteStore(str(db), SystemClock())
    try:
        return [job.tenant for job in store.list_jobs(JobQuery(limit=100)).jobs]
    finally:
        store.close()


# -- --count has an upper bound, and a run keeps nothing it does not print ---------------
@pytest.mark.parametrize("count", [str(cli.MAX_COUNT + 1), "99999999999"])
def test_a_count_above_the_bound_is_refused_naming_it(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, count: str
) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:  # without the bound: fail, not run for hours
        raise AssertionError("the command began storing jobs")

    monkeypatch.setattr(Service, "enqueue", never)
    err = refused(*run(capsys, "enqueue", "echo", "--count", count), db)
    assert "--count" in err and f"at most {cli.MAX_COUNT}" in err and count in err


def test_the_bound_itself_is_accepted_and_named_in_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = cli.build_parser().parse_args(["enqueue", "echo", "--count", str(cli.MAX_COUNT)])
    assert args.count == cli.MAX_COUNT
    code, out, _ = run(capsys, "enqueue", "--help")
    assert code == 0 and f"1 to {cli.MAX_COUNT}" in " ".join(out.split())


@pytest.mark.parametrize("as_json", [False, True])
def test_many_copies_let_each_stored_chunk_go(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    """Each call to the service may still see the previous chunk's answers alive (the
    loop's variable), never more: a run that kept every AddResult held 14 GB at
    --count 99999999999. With --json only the ids are kept, not the jobs."""
    original = Service.enqueue
    seen: list[weakref.ref[Any]] = []
    alive_at_each_call: list[int] = []
    sizes: list[int] = []

    def watched(self: Service, requests: Any, tenant: str, admitted: bool = False) -> Any:
        alive_at_each_call.append(sum(ref() is not None for ref in seen))
        results = original(self, requests, tenant, admitted)
        sizes.append(len(results))
        seen.extend(weakref.ref(r) for r in results)
        return results

    monkeypatch.setattr(Service, "enqueue", watched)
    count = 4 * cli.ENQUEUE_CHUNK + 7
    argv = ["enqueue", "echo", "--count", str(count)] + (["--json"] if as_json else [])
    code, out, err = run(capsys, *argv)
    assert code == 0 and f"enqueued {count} jobs" in err
    assert len(sizes) == 5 and sum(sizes) == count  # sent in chunks
    assert max(alive_at_each_call) <= max(sizes), alive_at_each_call
    assert sum(ref() is not None for ref in seen) == 0  # nothing outlives the command
    assert SQLiteStore(str(db)).counts() != {}
    if as_json:
        ids = [row["id"] for row in json.loads(out)]
        assert len(set(ids)) == count
    else:
        assert out == ""


# -- --tenant: only a name an API key's tenant can have ----------------------------------
@pytest.mark.parametrize(
    "tenant",
    ["", "a\nb", "x" * 300, "x" * 65, "a b", "acmé", "a/b", "\udcff"],
    ids=["empty", "newline", "300-chars", "65-chars", "space", "non-ascii", "slash", "not-utf8"],
)
def test_a_tenant_no_api_key_can_name_is_refused(
    db: Path, capsys: pytest.CaptureFixture[str], tenant: str
) -> None:
    err = refused(*run(capsys, "enqueue", "echo", "--tenant", tenant), db)
    assert "--tenant" in err
    assert "a tenant is 1 to 64 letters" in err or "not UTF-8" in err


@pytest.mark.parametrize("tenant", ["x" * 64, "acme.eu:prod-1_A", "default"])
def test_tenant_names_keys_can_have_are_taken(
    db: Path, capsys: pytest.CaptureFixture[str], tenant: str
) -> None:
    code, _, err = run(capsys, "enqueue", "echo", "--tenant", tenant, "--count", "2")
    assert code == 0, err
    assert tenants(db) == [tenant, tenant]


# -- --priority and --max-attempts are read as the other numeric options are -----------------
@pytest.mark.parametrize(
    "option, value, bound",
    [
        ("--priority", "abc", "a whole number from -1000 to 1000"),
        ("--priority", "1.5", "a whole number from -1000 to 1000"),
        ("--priority", "1001", "a whole number from -1000 to 1000"),
        ("--priority", "-99999999999", "a whole number from -1000 to 1000"),
        ("--max-attempts", "abc", "a whole number from 1 to 100"),
        ("--max-attempts", "0", "a whole number from 1 to 100"),
        ("--max-attempts", "101", "a whole number from 1 to 100"),
    ],
)
def test_a_priority_or_attempt_count_out_of_reach_is_refused_naming_its_bound(
    db: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, bound: str
) -> None:
    """They said argparse's "invalid int value: 'abc'", or pydantic's "Input should be
    less than or equal to 1000" once parsed, where every other option names its range."""
    err = refused(*run(capsys, "enqueue", "echo", option, value), db)
    assert f"argument {option}: must be {bound}, not {value!r}" in err
    assert "invalid int value" not in err and "Input should be" not in err


@pytest.mark.parametrize("option, value", [("--priority", "-1000"), ("--max-attempts", "100")])
def test_the_bounds_of_priority_and_attempts_are_taken(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    value: str,
) -> None:
    # 100 attempts only under an operator's ceiling raised that far (stop 51: 25 by default).
    monkeypatch.setenv("SPOOL_MAX_ATTEMPTS", "100")
    code, _, err = run(capsys, "enqueue", "echo", option, value)
    assert code == 0, err


# -- a queue or type name no job can have is refused in the words `spool jobs` uses --------
@pytest.mark.parametrize(
    "argv, kind",
    [
        (["echo", "--queue", "a b"], "queue"),
        (["echo", "--queue", ""], "queue"),
        (["echo", "--queue", "q" * 65], "queue"),
        (["bad type"], "job type"),
        ([""], "job type"),
    ],
    ids=["queue-space", "queue-empty", "queue-65", "type-space", "type-empty"],
)
def test_a_queue_or_type_name_no_job_can_have_is_refused_in_words(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], kind: str
) -> None:
    """They said pydantic's "String should match pattern '^[A-Za-z0-9_.:-]{1,64}$'",
    where `spool jobs --queue 'a b'` says which characters a name may hold."""
    err = refused(*run(capsys, "enqueue", *argv), db)
    assert f"a {kind} is 1 to 64 letters, digits, '_', '.', ':' or '-'" in err
    assert "String should match pattern" not in err


# -- the payload and fields are checked as POST /enqueue checks them -----------------------
@pytest.mark.parametrize(
    "payload, message",
    [
        ('{"a": "\\ud800"}', "unpaired UTF-16 surrogate"),
        ('{"a": ["\\udfff", 1]}', "unpaired UTF-16 surrogate"),
        ('{"a": "\udcff"}', "--payload: an argument holds bytes that are not UTF-8"),
        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ('{"a": 1, "a": 2}', "appears twice"),
        ('{"a": NaN}', "not valid JSON"),
    ],
    ids=["escaped-surrogate", "escaped-low-surrogate", "raw-byte", "deep", "twice", "nan"],
)
def test_a_payload_the_api_refuses_is_refused(
    db: Path, capsys: pytest.CaptureFixture[str], payload: str, message: str
) -> None:
    err = refused(*run(capsys, "enqueue", "echo", "--payload", payload), db)
    assert message in err


def test_a_typed_payload_is_held_to_its_model_strictly(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API answers 422 for "1" where the sleep handler's model wants a number."""
    err = refused(*run(capsys, "enqueue", "sleep", "--payload", '{"seconds": "1"}'), db)
    assert "sleep" in err and "payload.seconds" in err
    assert run(capsys, "enqueue", "sleep", "--payload", '{"seconds": 1}')[0] == 0


def test_a_misspelt_field_is_named_beside_the_one_it_leaves_missing(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: only the first error, "payload.seconds: Field required", so the line never
    said which field was the typo."""
    err = refused(*run(capsys, "enqueue", "sleep", "--payload", '{"secs": 1}'), db)
    assert "payload.seconds: Field required" in err and "payload.secs: Extra inputs" in err


def test_a_long_list_of_problems_is_cut_to_the_first_few() -> None:
    errors = [{"loc": ["payload", f"f{n}"], "msg": "bad"} for n in range(7)]
    line = validation_problem("refused", {"errors": errors})
    assert line == "refused (payload.f0: bad; payload.f1: bad; payload.f2: bad; and 4 more)"
    batch = [{"index": 3, "message": "no such type"}]
    assert validation_problem("refused", batch) == "refused (job 3: no such type)"


def test_argument_bytes_that_are_not_utf8_are_refused_by_the_installed_command(
    db: Path, tmp_path: Path
) -> None:
    """As a user runs it: the shell hands over the raw byte 0xff."""
    result = subprocess.run(
        [str(SPOOL), "enqueue", "echo", "--payload", b'{"a": "\xff"}'],
        cwd=tmp_path,
        env=guarded_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    refused(result.returncode, result.stdout, result.stderr, db)
    assert "--payload" in result.stderr and "not UTF-8" in result.stderr
