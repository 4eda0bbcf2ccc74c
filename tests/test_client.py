"""spool_client against a real `spool serve` over a socket (SQLite file, emulated worker).

One server for the module (started once: ~2 s); each test uses its own job
types, queues or keys so the tests do not see each other's jobs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from chalicelib.builtin.demo import SleepPayload
from spool_client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    IdempotencyConflict,
    JobSpec,
    NotFound,
    RetryPolicy,
    TooManyRequests,
    TransportError,
    Unauthorized,
    UnknownJobType,
    ValidationFailed,
    WaitTimeout,
    calls,
)
from tests.apikit import KEY_A, KEY_B
from tests.client_servers import serve
from tests.procs import ROOT, Served, stop

BATCH_LIMIT = 40  # the server's SPOOL_MAX_BATCH here; the client starts at 100


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("client")
    server = serve(
        f"sqlite:///{folder}/spool.db",
        folder / "serve.log",
        SPOOL_MAX_BATCH=str(BATCH_LIMIT),
        SPOOL_MAX_WAITS_PER_TENANT="1",
    )
    try:
        yield server
    finally:
        stop(server.proc)


@pytest.fixture
def spool(served: Served) -> Iterator[Client]:
    with Client(served.url, KEY_A, retry=RetryPolicy(attempts=4, cap=1)) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- importing it -----------------------------------------------------------------


def test_importing_the_client_pulls_in_nothing_of_the_server() -> None:
    probe = (
        "import sys, json, spool_client, spool_client.aio, spool_client.client;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert "httpx" in loaded and "spool_client" in loaded
    server_side = {"chalice", "chalicelib", "boto3", "botocore", "pydantic", "psycopg", "app"}
    assert loaded & server_side == set()
    assert "local" not in loaded


# -- every route ------------------------------------------------------------------------


def test_enqueue_then_wait_returns_the_result(spool: Client) -> None:
    job = spool.enqueue("echo", {"hello": "world"}, queue=unique("q"))
    assert job.created and job.state == "queued" and job.id.startswith("j_")
    assert job.idempotency_key.startswith("spool-client-")  # generated, as promised
    done = spool.wait(job.id, timeout=20)
    assert done.state == "succeeded" and done.terminal
    assert done.result == {"hello": "world"}
    assert done.idempotency_key == job.idempotency_key
    assert done.finished_at is not None and done.created_at is not None


def test_a_handlers_pydantic_model_is_a_payload(spool: Client) -> None:
    job = spool.enqueue("sleep", SleepPayload(seconds=0))
    done = spool.wait(job.id, timeout=20)
    assert done.payload == {"seconds": 0.0}
    assert done.result == {"slept": 0.0}
    with_history = spool.get(job.id, attempts=True)
    assert with_history.attempt_history and with_history.attempt_history[0]["number"] == 1


def test_the_same_key_gives_the_same_job_and_a_different_body_a_conflict(spool: Client) -> None:
    key = unique("order")
    first = spool.enqueue("echo", {"n": 1}, delay=60, idempotency_key=key)
    again = spool.enqueue("echo", {"n": 1}, delay=60, idempotency_key=key)
    assert first.created and not again.created and again.id == first.id
    with pytest.raises(IdempotencyConflict) as caught:
        spool.enqueue("echo", {"n": 2}, delay=60, idempotency_key=key)
    assert caught.value.status == 409 and isinstance(caught.value, Conflict)


def test_enqueue_many_splits_at_the_servers_batch_limit(spool: Client) -> None:
    queue = unique("many")
    specs = [JobSpec("echo", {"i": i}, queue=queue, delay=300) for i in range(95)]
    specs.append({"type": "echo", "payload": {"i": 95}, "queue": queue, "delay": 300})  # type: ignore[arg-type]
    results = spool.enqueue_many(specs)
    assert len(results) == 96 and all(r.created for r in results)
    assert spool.batch_size == BATCH_LIMIT  # learned from the server's 413
    assert len({r.id for r in results}) == 96
    stored = {job.id: job.payload["i"] for job in spool.list(queue=queue, page_size=1000)}
    # Order kept: the n-th result is the n-th job given.
    assert [stored[r.id] for r in results] == list(range(96))


def test_list_follows_cursors_and_filters(spool: Client) -> None:
    queue = unique("page")
    ids = [spool.enqueue("echo", {"i": i}, queue=queue, delay=300).id for i in range(23)]
    pages = list(spool.pages(queue=queue, page_size=5))
    assert [len(p.jobs) for p in pages] == [5, 5, 5, 5, 3]
    assert pages[-1].next_cursor is None
    assert [j.id for j in spool.list(queue=queue, page_size=5)] == ids  # oldest first
    assert list(spool.list(queue=queue, state="succeeded")) == []
    assert len(list(spool.list(queue=queue, state="queued", type="echo", page_size=7))) == 23


def test_cancel_a_waiting_job_then_a_second_cancel_is_a_conflict(spool: Client) -> None:
    job = spool.enqueue("echo", {}, delay=300)
    cancelled = spool.cancel(job.id)
    assert cancelled.state == "cancelled" and cancelled.id == job.id
    with pytest.raises(Conflict):
        spool.cancel(job.id)


def test_dead_letters_and_redrive(spool: Client) -> None:
    queue = unique("dlq")
    dead = [
        spool.enqueue("fail", {"always": True}, queue=queue, max_attempts=1).id for _ in range(3)
    ]
    for job_id in dead:
        assert spool.wait(job_id, timeout=20).state == "dead"
    listed = [j.id for j in spool.dead_letters(queue=queue, page_size=2)]
    assert listed == dead
    again = spool.redrive(dead[0])
    assert again.state in ("queued", "running", "dead") and again.attempts in (0, 1)
    assert spool.wait(dead[0], timeout=20).state == "dead"  # it fails again, as it always does
    moved = spool.redrive_all(queue=queue, type="fail")
    assert moved.redriven == 3 and sorted(moved.ids) == sorted(dead)


def test_wait_gives_up_with_the_jobs_last_state(spool: Client) -> None:
    job = spool.enqueue("echo", {}, delay=300)
    with pytest.raises(WaitTimeout) as caught:
        spool.wait(job.id, timeout=0.5)
    assert caught.value.job.id == job.id and caught.value.job.state == "queued"


def test_errors_are_typed_by_code(served: Served, spool: Client) -> None:
    with pytest.raises(UnknownJobType) as unknown:
        spool.enqueue("no_such_type", {})
    assert unknown.value.status == 422 and isinstance(unknown.value, ValidationFailed)
    with pytest.raises(ValidationFailed) as invalid:
        spool.enqueue("sleep", {"seconds": -1})
    assert invalid.value.code == "validation_error" and invalid.value.details
    with pytest.raises(NotFound):
        spool.get("j_" + "0" * 32)
    with pytest.raises(NotFound):  # quoted into the path: names no other route
        spool.get("../dlq")
    with pytest.raises(BadRequest):
        next(spool.pages(cursor="not-a-cursor"))
    with Client(served.url, "not-a-key") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.enqueue("echo", {})
    assert denied.value.status == 401 and "key" in denied.value.message


def test_a_callback_url_is_sent_and_one_never_allowed_is_refused(spool: Client) -> None:
    # The metadata address can never receive a webhook: the server refuses the job (422),
    # which shows the client sent the field; nothing is stored under its key.
    with pytest.raises(ValidationFailed) as refused:
        spool.enqueue(
            "echo", {}, callback_url="http://169.254.169.254/hook", idempotency_key="cb-1"
        )
    assert "callback_url" in str(refused.value.details) or "callback" in refused.value.message
    job = spool.enqueue("echo", {}, idempotency_key="cb-1")  # the key was never taken
    assert job.created


def test_another_tenants_job_is_not_found(served: Served, spool: Client) -> None:
    job = spool.enqueue("echo", {}, delay=300)
    with Client(served.url, KEY_B) as other:
        with pytest.raises(NotFound):
            other.get(job.id)
        with pytest.raises(NotFound):
            other.cancel(job.id)
        assert job.id not in {j.id for j in other.list(state="queued")}


def test_a_refused_long_poll_is_retried_after_retry_after(served: Served) -> None:
    """Tenant B may hold one long-poll at a time here: the second is refused (429,
    Retry-After: 1) and the client tries again until the slot is free."""
    statuses: list[int] = []
    hooks = {"response": [lambda r: statuses.append(r.status_code)]}
    with (
        httpx.Client(event_hooks=hooks) as http,
        Client(served.url, KEY_B, http=http, retry=RetryPolicy(attempts=10)) as spool,
    ):
        job = spool.enqueue("sleep", {"seconds": 1.5})
        results: list[str] = []
        threads = [
            threading.Thread(target=lambda: results.append(spool.wait(job.id, 20).state))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert results == ["succeeded", "succeeded"]
    assert 429 in statuses


def test_a_429_past_the_retry_budget_is_raised_typed(served: Served) -> None:
    """A long-poll refused past the retry budget is TooManyRequests, with its Retry-After
    (sent as wait() sends it). wait() itself looks without ?wait instead and ends with
    the job (tests/test_chaos_s60h_wait_throttled.py)."""
    with Client(served.url, KEY_B, retry=RetryPolicy(attempts=1)) as spool:
        job = spool.enqueue("sleep", {"seconds": 1})
        errors: list[TooManyRequests] = []
        waited: list[str] = []

        def second() -> None:
            try:
                spool._send(calls.status(job.id, wait=20))
            except TooManyRequests as exc:
                errors.append(exc)
            waited.append(spool.wait(job.id, 20).state)

        holder = threading.Thread(target=lambda: spool.wait(job.id, 20))
        holder.start()
        threading.Event().wait(0.3)
        second()
        holder.join(30)
    assert errors and errors[0].retry_after == 1.0 and errors[0].code == "too_many_waits"
    assert waited == ["succeeded"]


def test_an_unreachable_server_is_a_transport_error_after_the_retries() -> None:
    with socket_free_port() as port:
        spool = Client(f"http://127.0.0.1:{port}", KEY_A, retry=RetryPolicy(attempts=3, base=0.01))
        with pytest.raises(TransportError) as caught:
            spool.enqueue("echo", {})
        spool.close()
    assert caught.value.attempts == 3


def test_a_password_in_the_server_url_is_masked_in_errors() -> None:
    with socket_free_port() as port:
        url = f"http://ops:hunter2-secret@127.0.0.1:{port}"
        spool = Client(url, KEY_A, retry=RetryPolicy(attempts=1, base=0.01))
        with pytest.raises(TransportError) as caught:
            spool.enqueue("echo", {})
        spool.close()
    assert "hunter2-secret" not in str(caught.value)
    assert f"http://ops:***@127.0.0.1:{port}" in str(caught.value)


def test_the_url_and_key_come_from_the_environment(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOOL_URL", served.url + "/")
    monkeypatch.setenv("SPOOL_API_KEY", KEY_A)
    with Client() as spool:
        assert spool.url == served.url
        assert spool.health() == {"status": "ok", "store": "ok"}
        assert spool.enqueue("echo", {}, delay=60).created


# -- asyncio ---------------------------------------------------------------------------


def test_the_async_client_does_the_same(served: Served) -> None:
    queue = unique("aio")

    async def scenario() -> None:
        async with AsyncClient(served.url, KEY_A) as spool:
            job = await spool.enqueue("echo", {"a": 1}, queue=queue)
            again = await spool.enqueue(
                "echo", {"a": 1}, queue=queue, idempotency_key=job.idempotency_key
            )
            assert again.id == job.id and not again.created
            assert (await spool.wait(job.id, timeout=20)).result == {"a": 1}
            many = await spool.enqueue_many(
                [JobSpec("echo", {"i": i}, queue=queue, delay=300) for i in range(45)]
            )
            assert len(many) == 45 and spool.batch_size == BATCH_LIMIT
            seen = [j.id async for j in spool.list(queue=queue, page_size=10)]
            # Oldest first; one batch shares a created_at, so its order is by id.
            assert seen[0] == job.id and sorted(seen[1:]) == sorted(m.id for m in many)
            cancelled = await spool.cancel(many[0].id)
            assert cancelled.state == "cancelled"
            with pytest.raises(Conflict):
                await spool.cancel(many[0].id)
            dead = await spool.enqueue("fail", {"always": True}, queue=queue, max_attempts=1)
            assert (await spool.wait(dead.id, timeout=20)).state == "dead"
            assert [j.id async for j in spool.dead_letters(queue=queue)] == [dead.id]
            assert (await spool.redrive(dead.id)).id == dead.id
            with pytest.raises(NotFound):
                await spool.get("j_missing")

    asyncio.run(scenario())


# -- pieces without a server -------------------------------------------------------------


class socket_free_port:
    """A port nothing listens on (bound, then released) for the length of a block."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


def test_payloads_must_be_objects() -> None:
    with Client("http://127.0.0.1:9", "k") as spool, pytest.raises(TypeError):
        spool.enqueue("echo", [1, 2])


def test_a_validation_failure_says_what_was_invalid_in_its_message() -> None:
    from spool_client.errors import ValidationFailed

    one = ValidationFailed(
        422,
        "validation_error",
        "the job is invalid",
        [{"loc": ["priority"], "msg": "Input should be less than or equal to 1000", "type": "x"}],
    )
    assert str(one) == (
        "422 validation_error: the job is invalid "
        "(priority: Input should be less than or equal to 1000)"
    )
    batch = ValidationFailed(
        422,
        "validation_error",
        "some jobs in the batch are invalid; none were stored",
        [
            {"index": 1, "message": "m", "details": [{"loc": ["jobs", 1, "type"], "msg": "bad"}]},
            {"index": 4, "message": "m", "details": []},
        ],
    )
    assert str(batch).endswith("(job 1: type: bad; job 4: m)")
    unknown = ValidationFailed(422, "unknown_job_type", "unknown job type 'x'", {"type": "x"})
    assert str(unknown) == "422 unknown_job_type: unknown job type 'x'"
