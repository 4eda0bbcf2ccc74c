"""A handler's payload model or admit check that raises something other than a refusal.

They are the handler author's code, run inside the HTTP edge at enqueue. What they
raise beyond ValueError (a 422) is the handler's fault: 503 misconfigured naming the
handler and the exception, nothing stored, and the server goes on. Before, a
SystemExit or KeyboardInterrupt from one ended `spool serve` (the loop thread that
answered the request died, and the server with it: one tenant's request stopped
every tenant's API), and a TypeError or RecursionError answered a bare 500.
"""

from __future__ import annotations

import subprocess
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from chalicelib.errors import Misconfigured, ValidationFailed
from chalicelib.handlers import Registry
from tests.procs import ROOT, guarded_env, spool_serve, stop

HANDLERS = textwrap.dedent(
    """
    import sys

    from pydantic import BaseModel, field_validator

    from chalicelib.handlers import handler


    class Unreadable(Exception):
        def __str__(self):
            raise RuntimeError("no message")


    class Payload(BaseModel):
        mode: str = ""

        @field_validator("mode")
        @classmethod
        def _check(cls, mode):
            if mode == "model-exit":
                sys.exit(2)
            if mode == "model-interrupt":
                raise KeyboardInterrupt
            if mode == "model-unreadable":
                raise Unreadable()
            return mode


    def admit(payload, tenant):
        if payload.mode == "admit-exit":
            raise SystemExit(3)
        if payload.mode == "admit-type-error":
            raise TypeError("admit met a None")
        if payload.mode == "admit-recursion":
            def down(n):
                return down(n + 1)
            down(0)
        if payload.mode == "admit-refuses":
            raise ValueError("not for you")


    @handler("checked", payload=Payload, admit=admit)
    def checked(payload):
        return None
    """
)

FAULTS = {
    "model-exit": "SystemExit: 2",
    "model-interrupt": "KeyboardInterrupt",
    "model-unreadable": "Unreadable: <the exception's message could not be read>",
    "admit-exit": "SystemExit: 3",
    "admit-type-error": "TypeError: admit met a None",
    "admit-recursion": "RecursionError: maximum recursion depth exceeded",
}
KEY = "k-payload-check-0123"


def job(mode: str) -> dict[str, object]:
    return {"type": "checked", "payload": {"mode": mode}}


@pytest.mark.timeout(120)
def test_spool_serve_answers_a_payload_check_that_raises_and_lives_on(tmp_path: Path) -> None:
    (tmp_path / "checked_jobs.py").write_text(HANDLERS)
    env = guarded_env(
        PYTHONPATH=f"{tmp_path}:{ROOT}",
        SPOOL_HANDLERS="checked_jobs",
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS=f"{KEY}=acme",
    )
    served = spool_serve(env=env, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=served.url, headers={"X-API-Key": KEY}, timeout=30) as http:
            for mode, said in FAULTS.items():
                answer = http.post("/enqueue", json=job(mode))
                assert answer.status_code == 503, (mode, answer.text)
                error = answer.json()["error"]
                assert error["code"] == "misconfigured"
                assert f"the 'checked' handler's payload check failed ({said})" in error["message"]
                assert "nothing was stored" in error["message"]
                assert http.get("/health").status_code == 200, mode  # still serving
            refused = http.post("/enqueue", json=job("admit-refuses"))
            assert refused.status_code == 422 and "not for you" in refused.text
            batch = http.post("/enqueue", json={"jobs": [job("fine"), job("admit-exit")]})
            assert batch.status_code == 503
            assert http.get("/jobs").json()["jobs"] == []  # nothing of either was stored
            assert http.post("/enqueue", json=job("fine")).status_code == 201
        assert served.proc.poll() is None
    finally:
        stop(served.proc)
    assert served.proc.returncode == 0  # a graceful stop, not the exit a handler asked for


def _registry() -> Registry:
    reg = Registry()

    def admit(payload: object, tenant: str) -> None:
        raise SystemExit(4)

    reg.handler("exits", admit=admit)(lambda payload: None)
    return reg


def test_a_base_exception_from_admit_is_the_handlers_fault_off_the_main_thread() -> None:
    """Off the main thread (a server's request threads) even KeyboardInterrupt and
    SystemExit are the handler's own doing: signals reach the main thread only."""
    reg = _registry()
    caught: list[BaseException] = []

    def enqueue() -> None:
        try:
            reg.get("exits").validate({}, tenant="acme")
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=enqueue)
    thread.start()
    thread.join()
    [refused] = caught
    assert isinstance(refused, Misconfigured) and refused.status == 503
    assert "the 'exits' handler's payload check failed (SystemExit: 4)" in str(refused)


def test_ctrl_c_on_the_main_thread_still_interrupts_a_payload_check() -> None:
    reg = Registry()

    def admit(payload: object, tenant: str) -> None:
        raise KeyboardInterrupt

    reg.handler("slow", admit=admit)(lambda payload: None)
    with pytest.raises(KeyboardInterrupt):
        reg.get("slow").validate({}, tenant="acme")


def test_a_refusal_whose_message_cannot_be_read_is_still_a_422() -> None:
    class Unreadable(ValueError):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    reg = Registry()

    def admit(payload: object, tenant: str) -> None:
        raise Unreadable()

    reg.handler("vague", admit=admit)(lambda payload: None)
    with pytest.raises(ValidationFailed, match="message could not be read"):
        reg.get("vague").validate({}, tenant="acme")


def test_a_long_message_is_shortened_in_the_answer() -> None:
    reg = Registry()

    def admit(payload: object, tenant: str) -> None:
        raise TypeError("x" * 100_000)

    reg.handler("loud", admit=admit)(lambda payload: None)
    with pytest.raises(Misconfigured) as refused:
        reg.get("loud").validate({}, tenant="acme")
    assert len(str(refused.value)) < 1000
    assert "characters trimmed" in str(refused.value)
