"""Demo handlers for tests and the local system: echo, sleep, fail."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.handlers import JobContext, handler


class SleepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0, le=900)


class FailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    times: int = Field(default=0, ge=0)
    always: bool = False
    message: str = "planned failure"


@handler("echo", max_attempts=3)
def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@handler("sleep", payload=SleepPayload, timeout=60)
def sleep(payload: SleepPayload, ctx: JobContext) -> dict[str, float]:
    # Waiting on the cancel event lets an abandoned attempt stop promptly.
    ctx.cancelled.wait(payload.seconds)
    return {"slept": payload.seconds}


@handler("fail", payload=FailPayload, max_attempts=5, backoff=(1.0, 60.0))
def fail(payload: FailPayload, ctx: JobContext) -> dict[str, int]:
    if payload.always or ctx.attempt <= payload.times:
        raise RuntimeError(f"{payload.message} (attempt {ctx.attempt})")
    return {"succeeded_on_attempt": ctx.attempt}
