"""docs/handlers.md's Python samples, used as the page tells a reader to use them: put
in a module named on SPOOL_HANDLERS, then `spool enqueue`, `spool worker --burst`,
`spool status` and `spool schedules` in that folder.

The page's blocks marked `<!-- handler module -->` (tests/doc_samples.py) are that
module, in page order. The one thing they leave to the reader is a billing client,
which the first sample imports from `myapp.billing`; BILLING supplies it, and nothing
else, so a sample whose import, decorator argument or context attribute rots fails
here. tests/test_doc_samples.py checks that every type they declare is registered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spool_client import Client, ValidationFailed
from tests import doc_samples
from tests.procs import ROOT, guarded_env, serving_url

PAGE = ROOT / "docs" / "handlers.md"
SCRIPT_START = "from chalicelib import periodic, runtime"

BILLING = '''\
import os
from types import SimpleNamespace


class _Billing:
    """What the first sample calls: a provider's client, answering BILLING_STATUS."""

    def charge(self, customer_id, amount_cents, idempotency_key):
        return SimpleNamespace(
            status=int(os.environ.get("BILLING_STATUS", "200")), retry_after="120",
            id="ch_" + idempotency_key, raise_for_status=lambda: None,
        )


billing = _Billing()
'''


def python_blocks() -> list[str]:
    return [block.code for block in doc_samples.page_blocks(PAGE)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    module = doc_samples.handler_module(PAGE)  # the page's handler-module blocks
    (tmp_path / "docs_handlers.py").write_text(module, encoding="utf-8")
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "myapp" / "billing.py").write_text(BILLING, encoding="utf-8")
    return tmp_path


def spool(folder: Path, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = guarded_env(SPOOL_HANDLERS="docs_handlers", SPOOL_STORE_URL="sqlite:///spool.db", **extra)
    for name in ("SPOOL_URL", "SPOOL_API_KEY", "SPOOL_SCHEDULES", "SPOOL_LIMITS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "local.cli", *argv],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_page_has_the_samples_this_test_runs() -> None:
    blocks = python_blocks()
    assert any('@handler("charge_invoice"' in b for b in blocks)
    assert any(b.startswith(SCRIPT_START) for b in blocks)
    assert any("@periodic(" in b for b in blocks)


def test_the_first_handler_runs_as_the_page_says(folder: Path) -> None:
    added = spool(folder, "enqueue", "charge_invoice", "--payload",
                  '{"customer_id": "c-1", "amount_cents": 1250}', "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    job = json.loads(added.stdout)["id"]
    ran = spool(folder, "worker", "--burst", "--quiet")  # --quiet: its log lines stay
    assert ran.returncode == 0, ran.stderr
    shown = spool(folder, "status", job, "--json")
    assert shown.returncode == 0, shown.stderr
    seen = json.loads(shown.stdout)
    assert seen["state"] == "succeeded" and seen["max_attempts"] == 6  # max_attempts=6
    assert seen["result"] == {"charge_id": f"ch_{job}"}  # ctx.job.id as the key
    [attempt] = seen["attempt_history"]
    assert attempt["log_tail"] == []  # kept for a failing attempt only, as the page says
    # ctx.log.info: a line carrying the job's id
    assert re.search(rf"charging c-1 job_id={job}\b", ran.stderr), ran.stderr


def test_a_declined_card_is_dead_at_once_and_a_429_waits_its_retry_after(folder: Path) -> None:
    """PermanentError: dead now, its log_tail kept; RetryAfter: retrying, not dead."""
    payload = '{"customer_id": "c-2", "amount_cents": 99}'
    ids = {}
    for status in ("402", "429"):
        added = spool(folder, "enqueue", "charge_invoice", "--payload", payload, "--json")
        assert added.returncode == 0, added.stderr
        ids[status] = json.loads(added.stdout)["id"]
        ran = spool(folder, "worker", "--burst", "--quiet", BILLING_STATUS=status)
        assert ran.returncode == 0, ran.stderr
    dead = json.loads(spool(folder, "status", ids["402"], "--json").stdout)
    assert dead["state"] == "dead" and "card declined" in dead["last_error"]
    assert dead["attempts"] == 1  # not the 6 max_attempts allows
    [attempt] = dead["attempt_history"]
    assert any("charging c-2" in line for line in attempt["log_tail"])
    waiting = json.loads(spool(folder, "status", ids["429"], "--json").stdout)
    assert waiting["state"] == "retrying"
    assert waiting["attempt_history"][0]["next_delay"] == pytest.approx(120, abs=1)  # retry_after


def test_a_payload_the_model_refuses_is_not_stored(folder: Path) -> None:
    """'at enqueue time: a payload that does not fit is refused ... nothing is stored'."""
    refused = spool(folder, "enqueue", "charge_invoice", "--payload",
                    '{"customer_id": "c-1", "amount_cents": 0}')  # fmt: skip
    assert refused.returncode == 2 and "amount_cents" in refused.stderr
    assert not (folder / "spool.db").exists()  # nor a store made to hold nothing


def test_the_periodic_declaration_is_a_schedule(folder: Path) -> None:
    shown = spool(folder, "schedules", "--json")
    assert shown.returncode == 0, shown.stderr
    [nightly] = [s for s in json.loads(shown.stdout) if s["name"] == "nightly_report"]
    assert nightly["type"] == "report" and nightly["tz"] == "Europe/Paris"


def test_the_fire_due_entry_point_runs(folder: Path) -> None:
    [script] = [b for b in python_blocks() if b.startswith(SCRIPT_START)]
    env = guarded_env(SPOOL_HANDLERS="docs_handlers", SPOOL_STORE_URL="sqlite:///spool.db")
    probe = f"{script}\nprint(sorted(periodic.next_runs(rt.store.clock, settings=rt.settings)))"
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=folder, env={**env, "PYTHONPATH": str(folder)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "nightly_report" in ran.stdout


def test_the_admit_check_refuses_another_tenants_domain_over_http(folder: Path) -> None:
    """own_domain_only, as `spool serve` runs it for a request with acme's key: a sender
    outside @acme.example is a 422 with the check's message and nothing stored."""
    key = "acme-docs-key-0123456789"
    env = guarded_env(
        SPOOL_HANDLERS="docs_handlers", SPOOL_STORE_URL=f"sqlite:///{folder}/served.db",
        SPOOL_API_KEYS=f"{key}=acme",
    )  # fmt: skip
    env["PYTHONPATH"] = f"{folder}{os.pathsep}{env.get('PYTHONPATH', '')}"  # the guard's kept
    with serving_url(env=env) as url, Client(url, key) as spool:
        with pytest.raises(ValidationFailed, match=r"tenant acme sends from @acme\.example only"):
            spool.enqueue("welcome_email", {"sender": "ops@elsewhere.example"})
        admitted = spool.enqueue("welcome_email", {"sender": "ops@acme.example"})
        assert admitted.created
        assert [job.id for job in spool.list(type="welcome_email")] == [admitted.id]


LIMITS = """
import json
from chalicelib import runtime
specs = runtime.current().registry.loaded_specs()
rates = {s.type: s.limit.rate and [s.limit.rate.count, s.limit.rate.per] for s in specs if s.limit}
print(json.dumps({s.type: [s.limit.concurrency, rates[s.type]] for s in specs if s.limit}))
"""


def test_the_declared_limits_are_the_ones_a_worker_holds(folder: Path) -> None:
    env = guarded_env(SPOOL_HANDLERS="docs_handlers", SPOOL_STORE_URL="sqlite:///spool.db")
    ran = subprocess.run(
        [sys.executable, "-c", LIMITS],
        cwd=folder, env={**env, "PYTHONPATH": f"{folder}:{env.get('PYTHONPATH', '')}"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {
        "resize_image": [4, None],  # concurrency=4
        "partner_sync": [None, [10, 1]],  # rate="10/s"
        "send_report": [2, [100, 3600]],  # concurrency=2, rate="100/h"
    }


def test_every_declared_handler_runs_its_job(folder: Path) -> None:
    """The limits and periodic samples' handlers (bodies of `...`) run under their
    limits in a real worker: each job succeeds, its result the None they return."""
    payloads = {
        "resize_image": {"key": "k"},
        "partner_sync": {},
        "send_report": {},
        "report": {"kind": "daily"},
    }
    ids = {}
    for job_type, payload in payloads.items():
        added = spool(folder, "enqueue", job_type, "--payload", json.dumps(payload), "--json")
        assert added.returncode == 0, added.stderr
        ids[job_type] = json.loads(added.stdout)["id"]
    ran = spool(folder, "worker", "--burst", "--quiet")
    assert ran.returncode == 0, ran.stderr
    for job_type, job in ids.items():
        seen = json.loads(spool(folder, "status", job, "--json").stdout)
        assert (seen["state"], seen["result"]) == ("succeeded", None), (job_type, seen)
