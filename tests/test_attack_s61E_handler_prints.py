"""What a handler prints cannot forge the worker's log lines (stop 61, helper E).

Was (a real `spool worker --burst` and a handler module): `print(payload["text"])`
and `sys.stderr.write(...)` reached the worker's stdout and stderr as they were, so a
payload holding "\\n2026-12-07 02:30:00,000 ERROR spool.jobs: job dead ..." put a
line of Spool's own shape in the operator's log. Now, while an attempt runs, each line
its thread writes to sys.stdout or sys.stderr is a log line of the job's
(spool.handler: stdout's at INFO, stderr's at WARNING, `stream=`, the job's id),
escaped like every line and kept in a failing attempt's `log_tail`; a last line
without its newline is logged when the attempt ends. The command line's own output
(the `done:` summary) is written as before. SPOOL_CAPTURE_OUTPUT=false writes a
handler's output as it is, as before.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.procs import ROOT, run_spool

pytestmark = pytest.mark.timeout(120)

FORGED = "2026-12-07T02:30:00.000Z ERROR spool.jobs: job dead event=dead job_id=j_forged"
HANDLERS = (
    "import sys\n"
    "from chalicelib.handlers import handler\n\n\n"
    "@handler('printer', max_attempts=1)\n"
    "def printer(payload: dict) -> dict:\n"
    "    print(payload['text'])\n"
    "    sys.stderr.write('err: ' + payload['text'] + '\\n')\n"
    "    sys.stdout.write('no newline at the end')\n"
    "    if payload.get('fail'):\n"
    "        raise RuntimeError('printer failed')\n"
    "    return {}\n"
)
# A line of Spool's text format: its time, level and logger, then the message.
SPOOLS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ spool\.[a-z_.]+: ")


def _module(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "myapp").mkdir(exist_ok=True)
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(HANDLERS)
    return {"SPOOL_HANDLERS": "myapp.jobs", "PYTHONPATH": f"{tmp_path}:{ROOT}"}


def _run(tmp_path: Path, payload: dict[str, object], **env: str) -> tuple[str, str, str]:
    env = {**_module(tmp_path), **env}
    added = run_spool(tmp_path, "enqueue", "printer", "--payload", json.dumps(payload), **env)
    assert added.returncode == 0, added.stderr
    job_id = added.stdout.split()[0]
    ran = run_spool(tmp_path, "worker", "--burst", "--concurrency", "1", **env)
    assert ran.returncode == 0, ran.stderr
    return job_id, ran.stdout, ran.stderr


def test_a_printed_newline_forges_no_line(tmp_path: Path) -> None:
    job_id, out, err = _run(tmp_path, {"text": f"hello\n{FORGED}"})
    assert out == ""  # nothing of the handler's reaches stdout raw
    lines = err.splitlines()
    assert not any(line.startswith(FORGED) or line.startswith(f"err: {FORGED}") for line in lines)
    said = [line for line in lines if "spool.handler:" in line]
    for line in said:
        assert SPOOLS.match(line) and f"job_id={job_id}" in line and "event=output" in line, line
    texts = [(line.split(": ", 1)[1].rsplit(" job_id=", 1)[0], line) for line in said]
    assert [t for t, _ in texts] == [
        "hello",
        FORGED,
        "err: hello",
        FORGED,
        "no newline at the end",
    ]
    levels = [(" INFO " in line, "stream=stdout" in line) for _, line in texts]
    assert levels == [(True, True), (True, True), (False, False), (False, False), (True, True)]
    assert any("job succeeded" in line and SPOOLS.match(line) for line in lines), err
    assert any(line.startswith("done: 1 succeeded") for line in lines), err  # the CLI's own


def test_a_failing_attempt_keeps_what_it_printed_in_its_log_tail(tmp_path: Path) -> None:
    job_id, _, err = _run(tmp_path, {"text": "step 1 done", "fail": True})
    assert "printer failed" in err
    shown = run_spool(tmp_path, "status", job_id, "--json", **_module(tmp_path))
    assert shown.returncode == 0, shown.stderr
    [attempt] = json.loads(shown.stdout)["attempt_history"]
    tail = "\n".join(attempt["log_tail"])
    assert "step 1 done" in tail and "no newline at the end" in tail, tail


def test_json_lines_stay_one_object_each(tmp_path: Path) -> None:
    _, out, err = _run(tmp_path, {"text": 'a\n{"level": "ERROR"}'}, SPOOL_LOG_FORMAT="json")
    assert out == ""
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    printed = [r for r in records if r.get("event") == "output"]
    assert [r["message"] for r in printed][:2] == ["a", '{"level": "ERROR"}']
    assert all(r["type"] == "printer" and r["stream"] in ("stdout", "stderr") for r in printed)


def test_capture_off_writes_the_output_as_it_is(tmp_path: Path) -> None:
    _, out, err = _run(tmp_path, {"text": f"hello\n{FORGED}"}, SPOOL_CAPTURE_OUTPUT="false")
    assert out.splitlines() == ["hello", FORGED, "no newline at the end"]
    assert f"err: hello\n{FORGED}\n" in err
    assert "spool.handler:" not in err
