"""`chalice local` runs no request whose head the client's close cut off.

Found from outside (stop 62, a real `chalice local --stage local`): a client that sent
`POST /jobs/ID/cancel HTTP/1.1`, its Host, X-API-Key and Content-Length lines but not
the blank line that ends a head, then closed, had the job cancelled (200, the job
`cancelled`): http.server reads the end of the stream as the end of the head and
dispatched what it had. `spool serve` dispatches nothing for such a head and closes.
Now neither does `chalice local`: the connection ends without an answer, the job
untouched. A whole head followed by the client's close is served as before.

The same for a body cut off by the client's close: `{"type": "echo"}` sent under a
Content-Length of 100, then the close, enqueued a job (201). Now nothing is run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import requests

from tests.apikit import KEY_A
from tests.test_chalice_local import serving_chalice_local

BOUND = 20.0


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    env = {**os.environ, "SPOOL_API_KEYS": f"{KEY_A}=acme"}
    with serving_chalice_local(tmp_path_factory.mktemp("chalice_local_half_head"), env) as served:
        yield served


def _send_then_close(port: int, data: bytes) -> bytes:
    """Send `data`, close the sending side, and read all the server sends back."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _delayed_job(port: int) -> str:
    created = requests.post(
        f"http://127.0.0.1:{port}/enqueue",
        json={"type": "echo", "delay": 3600},
        headers={"X-API-Key": KEY_A},
        timeout=BOUND,
    )
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    return job_id


def _state(port: int, job_id: str) -> str:
    answer = requests.get(
        f"http://127.0.0.1:{port}/status/{job_id}", headers={"X-API-Key": KEY_A}, timeout=BOUND
    )
    assert answer.status_code == 200, answer.text
    state: str = answer.json()["state"]
    return state


def _cancel_head(job_id: str) -> bytes:
    return (
        f"POST /jobs/{job_id}/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-API-Key: {KEY_A}\r\nContent-Length: 0\r\n"
    ).encode()


def test_a_head_without_its_blank_line_is_not_run(port: int) -> None:
    job_id = _delayed_job(port)
    assert _send_then_close(port, _cancel_head(job_id)) == b""
    assert _state(port, job_id) == "queued"


def test_a_request_line_without_its_end_is_not_run(port: int) -> None:
    job_id = _delayed_job(port)
    assert _send_then_close(port, f"POST /jobs/{job_id}/cancel HTTP/1.1".encode()) == b""
    assert _state(port, job_id) == "queued"


def test_a_whole_head_then_the_clients_close_is_served(port: int) -> None:
    job_id = _delayed_job(port)
    answer = _send_then_close(port, _cancel_head(job_id) + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert _state(port, job_id) == "cancelled"


def test_a_body_shorter_than_its_length_then_the_clients_close_is_not_run(port: int) -> None:
    body = b'{"type": "echo", "idempotency_key": "s62J-half-body"}'
    head = (
        f"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY_A}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 50}\r\n\r\n"
    ).encode()
    assert _send_then_close(port, head + body) == b""
    # The same key sent whole now creates the job: the half request made none.
    again = requests.post(
        f"http://127.0.0.1:{port}/enqueue",
        data=body,
        headers={"X-API-Key": KEY_A, "Content-Type": "application/json"},
        timeout=BOUND,
    )
    assert again.status_code == 201 and again.json()["created"] is True, again.text


def test_a_whole_body_then_the_clients_close_is_served(port: int) -> None:
    body = b'{"type": "echo"}'
    head = (
        f"POST /enqueue HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY_A}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert _send_then_close(port, head + body).startswith(b"HTTP/1.1 201 ")
