"""`chalice local --stage local` serves app.py on the SQLite store."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.procs import stop

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chalice_command() -> list[str]:
    found = Path(sys.executable).with_name("chalice")
    if found.exists():
        return [str(found)]
    which = shutil.which("chalice")
    if which is None:
        pytest.fail("the chalice command is missing (it ships with the chalice package)")
    return [which]


@contextmanager
def serving_chalice_local(tmp_path: Path, env: dict[str, str]) -> Iterator[int]:
    """`chalice local` on a free port for the block, once its /health answers: the port."""
    port = free_port()
    proc = start_chalice_local(tmp_path, port, env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            pytest.fail(proc.stderr.read().decode() if proc.stderr else "chalice local ended")
        yield port
    finally:
        stop(proc, 10)


def refused_at_start(
    tmp_path: Path, env: dict[str, str], port: int | None = None
) -> tuple[str, list[str]]:
    """Start `chalice local` with `env` (on `port`, else a free one), expecting it to
    refuse (exit 2, no traceback) before it serves: its stderr, whole and as lines."""
    proc = start_chalice_local(tmp_path, free_port() if port is None else port, env)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc, 10)
    text = err.decode()
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    return text, text.strip().splitlines()


def start_chalice_local(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`chalice local --stage local` on `port`, from a copy of the project files it
    needs: the stage's relative sqlite:///.spool/spool.db lands under the working
    directory, which must not be the checkout."""
    for name in ("app.py", "chalicelib", ".chalice"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "deployments")
            )
        else:
            shutil.copy(src, tmp_path / name)
    return subprocess.Popen(
        [*chalice_command(), "local", "--stage", "local", "--no-autoreload", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_chalice_local_answers_over_a_socket(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "SPOOL_API_KEYS": "local-key-0123456789=local"}
    proc = start_chalice_local(tmp_path, port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = requests.get(f"{base}/health", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert health is not None, proc.stderr.read().decode() if proc.stderr else ""
        assert health.status_code == 200 and health.json() == {"status": "ok", "store": "ok"}
        created = requests.post(
            f"{base}/enqueue",
            json={"type": "echo"},
            headers={"X-API-Key": "local-key-0123456789"},
            timeout=10,
        )
        assert created.status_code == 201
        assert (tmp_path / ".spool" / "spool.db").exists()  # the local stage's SQLite store
    finally:
        stop(proc, 10)


MISSPELT = "spool: SPOOL_STORE_UR (did you mean SPOOL_STORE_URL?) is not a Spool setting"


@pytest.mark.parametrize("reloader", [False, True], ids=["no-autoreload", "autoreload"])
def test_chalice_local_refuses_a_misspelt_setting_as_spool_does(
    tmp_path: Path, reloader: bool
) -> None:
    """SPOOL_STORE_UR was read by nothing under `chalice local`: it served the stage's
    default SQLite file without a word, where `spool serve` refuses to start. Now the
    same line, and nothing served or stored. With the autoreloader (chalice's default)
    the app loads in a child's server thread; the child ends, and chalice with it (its
    parent process exits 0 whatever the child's code, so only --no-autoreload's 2 is
    checked)."""
    env = {
        **os.environ,
        "SPOOL_API_KEYS": "local-key-0123456789=local",
        "SPOOL_STORE_UR": "memory://",
    }
    proc = start_chalice_local(tmp_path, free_port(), env)
    if reloader:  # the helper starts it with --no-autoreload; this one without
        stop(proc, 10)
        proc = subprocess.Popen(
            [*chalice_command(), "local", "--stage", "local", "--port", str(free_port())],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        stop(proc, 10)
    lines = err.decode().strip().splitlines()
    assert MISSPELT in lines[-1] and "docs/settings.md lists every setting" in lines[-1]
    assert "Traceback" not in err.decode()
    if not reloader:
        assert proc.returncode == 2 and len(lines) == 1
    assert not (tmp_path / ".spool").exists()


def test_chalice_local_refuses_a_setting_s_name_cut_short(tmp_path: Path) -> None:
    """SPOOL_DEMO (meant: SPOOL_DEMO_HANDLERS) was left alone on every road, being
    more than two letters from the setting it begins; refused now as `spool` does."""
    env = {**os.environ, "SPOOL_API_KEYS": "local-key-0123456789=local", "SPOOL_DEMO": "true"}
    text, lines = refused_at_start(tmp_path, env)
    assert len(lines) == 1, text
    assert lines[0].startswith(
        "spool: SPOOL_DEMO (did you mean SPOOL_DEMO_HANDLERS?) is not a Spool setting"
    )
    assert not (tmp_path / ".spool").exists()


IMPORT_APP = (
    "import json, sys; import app; print(json.dumps('chalicelib.settings_catalog' in sys.modules))"
)


@pytest.mark.parametrize(
    ("extra", "catalog_loaded"),
    [
        ({}, False),  # Lambda, or any plain import
        ({"AWS_CHALICE_CLI_MODE": "true", "AWS_LAMBDA_FUNCTION_NAME": "spool-api"}, False),
        ({"AWS_CHALICE_CLI_MODE": "true"}, True),  # `chalice package`: checked, not local
    ],
    ids=["plain", "lambda", "chalice-package"],
)
def test_importing_app_elsewhere_neither_refuses_nor_pays_for_the_check(
    extra: dict[str, str], catalog_loaded: bool
) -> None:
    """The refusal is `chalice local`'s only: a Lambda cold start imports app.py with no
    settings catalog (one environment lookup), and `chalice package`, whose shell's
    variables never reach the functions it builds, goes on."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("AWS_CHALICE_CLI_MODE", "CHALICE_WORKER")
    }
    env.update(SPOOL_STORE_UR="memory://", **extra)
    ran = subprocess.run(
        [sys.executable, "-c", IMPORT_APP], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == ("true" if catalog_loaded else "false")


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("SPOOL_API_KEYS", "no-tenant-here", "SPOOL_API_KEYS entries must be key=tenant"),
        ("SPOOL_METRICS_KEYS", "k=bad name", "SPOOL_METRICS_KEYS"),
        ("SPOOL_CACHE_BYTES", "lots", "SPOOL_CACHE_BYTES"),
        ("SPOOL_MAX_WAITS", "0", "SPOOL_MAX_WAITS"),
        ("SPOOL_TENANT_LIMITS", "{oops", "SPOOL_TENANT_LIMITS"),
    ],
    ids=["api-keys", "metrics-keys", "cache-bytes", "max-waits", "tenant-limits"],
)  # fmt: skip
def test_chalice_local_refuses_a_setting_the_api_would_refuse_as_spool_serve_does(
    tmp_path: Path, setting: str, value: str, said: str
) -> None:
    """A malformed SPOOL_API_KEYS (or any setting the HTTP edge builds from) let
    `chalice local` start, and then every request, /health too, was answered 503
    `misconfigured`. Now it refuses to start with `spool serve`'s one line, having
    served and stored nothing."""
    env = {**os.environ, "SPOOL_API_KEYS": "local-key-0123456789=local", setting: value}
    text, lines = refused_at_start(tmp_path, env)
    assert lines[-1].startswith("spool: ") and said in lines[-1], text
    assert lines[-1].endswith("Fix the variable and start again.")
    assert not (tmp_path / ".spool").exists()


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("sqlite:///x.db?synchronous=sometimes", "synchronous"),
        ("mysql://localhost/spool", "unknown store URL scheme"),
        ("postgresql://127.0.0.1/db?pool_timeout=soon", "pool_timeout"),
    ],
    ids=["sqlite-option", "scheme", "postgres-option"],
)
def test_a_store_url_the_first_request_would_refuse_is_refused_without_connecting(
    tmp_path: Path, url: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local stage sets its own SPOOL_STORE_URL (a shell's is overridden), so this
    is the check itself, as `chalice local` makes it: no store opened, no file made."""
    from chalicelib.edge_settings import value_refusal

    monkeypatch.chdir(tmp_path)
    refusal = value_refusal(
        {"SPOOL_API_KEYS": "local-key-0123456789=local", "SPOOL_STORE_URL": url}
    )
    assert refusal is not None and said in refusal[0]
    assert list(tmp_path.iterdir()) == []
    assert value_refusal({"SPOOL_API_KEYS": "local-key-0123456789=local"}) is None


LOCAL_KEY = "local-key-0123456789"
OTHER_KEY = "other-key-0123456789"
LOCAL_LIMIT = 262144  # .chalice/config.json's SPOOL_MAX_BODY_BYTES


@pytest.fixture(scope="module")
def chalice_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One `chalice local --stage local` for the request-reading tests: its port."""
    tmp_path = tmp_path_factory.mktemp("chalice-local")
    env = {**os.environ, "SPOOL_API_KEYS": f"{LOCAL_KEY}=local,{OTHER_KEY}=other"}
    with serving_chalice_local(tmp_path, env) as port:
        yield port


def local_exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send a request (the head's lines, then `body`) and read until chalice local
    closes: the status and the JSON body. A request chalice dropped fails here."""
    raw = head + b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data, "chalice local closed the connection without an answer"
    status_line, _, rest = data.partition(b"\r\n")
    answer = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(answer) if answer else {}


def local_jobs(port: int) -> list[Any]:
    listed = requests.get(
        f"http://127.0.0.1:{port}/jobs", headers={"X-API-Key": LOCAL_KEY}, timeout=10
    )
    assert listed.status_code == 200
    jobs: list[Any] = listed.json()["jobs"]
    return jobs


def test_chalice_local_refuses_two_different_api_keys_as_spool_serve_does(
    chalice_local: int,
) -> None:
    """Was: chalice's handler kept the first X-API-Key line, so two different keys
    enqueued as the first one's tenant; `spool serve` and Lambda answer 400. The same
    key twice is one key, there as here."""
    doc = b'{"type":"echo","payload":{"n":1}}'
    head = b"POST /enqueue HTTP/1.1\r\nContent-Length: %d\r\n" % len(doc)
    two = b"X-API-Key: %s\r\nX-API-Key: %s\r\n"
    status, answer = local_exchange(
        chalice_local, head + two % (LOCAL_KEY.encode(), OTHER_KEY.encode()), doc
    )
    assert status == 400, answer
    assert answer["error"]["code"] == "bad_request"
    assert "more than once, with different values" in answer["error"]["message"]
    assert local_jobs(chalice_local) == []
    status, answer = local_exchange(
        chalice_local, head + two % (LOCAL_KEY.encode(), LOCAL_KEY.encode()), doc
    )
    assert status == 201, answer
    assert [job["id"] for job in local_jobs(chalice_local)] == [answer["id"]]


@pytest.mark.parametrize(
    ("lengths", "status", "said"),
    [
        (b"Content-Length: 2, 2\r\n", 400, "Content-Length must be given once"),
        (b"Content-Length: 2\r\nContent-Length: 2\r\n", 400, "Content-Length must be given once"),
        (b"Content-Length: -1\r\n", 400, "plain digits"),
        (b"Content-Length: 99999999999999999999\r\n", 413, "the limit is 262144"),
        (b"Content-Length: %d\r\n" % (LOCAL_LIMIT + 1), 413, "the limit is 262144"),
    ],
    ids=["listed", "twice", "negative", "huge", "over-limit"],
)
def test_chalice_local_answers_a_bad_or_over_limit_content_length_before_the_body(
    chalice_local: int, lengths: bytes, status: int, said: str
) -> None:
    """Was: `int(Content-Length)` raised on `2, 2` and chalice dropped the connection
    unanswered; a huge one raised in read(); one over the limit had its whole body
    read into memory before the app refused it (here no body is sent: chalice waited
    for it). Now 400 or 413 in Spool's shape, from the head alone, as `spool serve`."""
    head = b"POST /enqueue HTTP/1.1\r\nX-API-Key: " + LOCAL_KEY.encode() + b"\r\n" + lengths
    got, answer = local_exchange(chalice_local, head)
    assert got == status, answer
    assert said in answer["error"]["message"]
    assert answer["error"]["code"] == ("bad_request" if status == 400 else "payload_too_large")


def test_chalice_local_s_413_reaches_a_client_that_sent_the_whole_body(
    chalice_local: int,
) -> None:
    """The refusal by Content-Length leaves the body unread: it is read and dropped
    before the close, so a client that sent it all reads the 413, not a reset."""
    body = b"x" * (LOCAL_LIMIT + 1)
    head = b"POST /enqueue HTTP/1.1\r\nX-API-Key: " + LOCAL_KEY.encode() + b"\r\n"
    status, answer = local_exchange(
        chalice_local, head + b"Content-Length: %d\r\n" % len(body), body
    )
    assert status == 413 and answer["error"]["details"] == {
        "limit": LOCAL_LIMIT,
        "size": LOCAL_LIMIT + 1,
    }
    health = requests.get(f"http://127.0.0.1:{chalice_local}/health", timeout=10)
    assert health.status_code == 200  # and it goes on serving


def _one_exchange_kept_alive(port: int, request: bytes) -> bytes:
    """Send `request` on a keep-alive connection and read what comes back until the
    server closes or goes quiet: every answer it gave, as bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(3)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data


@pytest.mark.parametrize(
    ("framing", "status", "said"),
    [
        (b"Transfer-Encoding: chunked\r\n", 411, "Content-Length"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n", 400, "not both"),
    ],
    ids=["chunked", "chunked-and-length"],
)
def test_chalice_local_refuses_a_chunked_body_it_cannot_read(
    chalice_local: int, framing: bytes, status: int, said: str
) -> None:
    """Was: chalice's handler read a chunked body as empty. A cancel whose body is
    refused under `spool serve` (anything but none or {}) cancelled the job with 200,
    and the unread chunks were then read as the connection's next request (an HTML
    400 from http.server: the body's first line taken for a request line), so a
    proxy framing by Transfer-Encoding and this server disagreed on where requests
    end. Now one answer in Spool's shape, the job left as it was, the connection
    closed."""
    made = requests.post(
        f"http://127.0.0.1:{chalice_local}/enqueue",
        headers={"X-API-Key": LOCAL_KEY},
        json={"type": "echo", "delay": 3600},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    body = b'{"not": "a cancel option"}'
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = b"POST /jobs/%s/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: %s\r\n" % (
        job_id.encode(),
        LOCAL_KEY.encode(),
    )
    data = _one_exchange_kept_alive(chalice_local, head + framing + b"\r\n" + chunks)
    head_part, _, after = data.partition(b"\r\n\r\n")
    status_line, *lines = head_part.split(b"\r\n")
    sized = [int(ln.split(b":")[1]) for ln in lines if ln.lower().startswith(b"content-length:")]
    # One answer: nothing after its body (no chunk read as a request and answered).
    assert sized and after[sized[0] :] == b"", data
    answer = json.loads(after)
    assert int(status_line.split()[1]) == status, answer
    assert said in answer["error"]["message"]
    job = requests.get(
        f"http://127.0.0.1:{chalice_local}/status/{job_id}",
        headers={"X-API-Key": LOCAL_KEY},
        timeout=10,
    )
    assert job.json()["state"] == "queued"


def test_chalice_local_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    """README's `chalice local` takes port 8000, as `make run` does; where that port was
    taken, chalice's server printed a traceback ending in "OSError: [Errno 98] Address
    already in use". Now it is spool's one line, naming the address and the fix, and
    nothing is stored."""
    env = {**os.environ, "SPOOL_API_KEYS": "local-key-0123456789=local"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        text, lines = refused_at_start(tmp_path, env, port)
    last = lines[-1]
    assert last.startswith(f"spool: cannot listen on 127.0.0.1:{port}: "), text
    assert "chalice local --port N" in last and "stop what is using it" in last
    assert not (tmp_path / ".spool").exists()


def test_chalice_local_refuses_server_keys_in_the_client_variable_as_spool_serve_does(
    tmp_path: Path,
) -> None:
    """`SPOOL_API_KEY=KEY=TENANT chalice local ...` (the client's variable, one S short
    of the server's, as README's Try it warns): `spool serve` refuses it in one line, but
    `chalice local` started with no keys at all and answered every request 401 "this
    server has no API keys configured", never naming the variable that held them. Now
    it refuses to start with `spool serve`'s line, the key never shown."""
    env = {k: v for k, v in os.environ.items() if k != "SPOOL_API_KEYS"}
    env["SPOOL_API_KEY"] = "dev-key-for-chalice-local=demo"
    text, lines = refused_at_start(tmp_path, env)
    assert lines[-1].startswith("spool: SPOOL_API_KEY holds a key=tenant entry"), text
    assert "SPOOL_API_KEYS=KEY=TENANT" in lines[-1]
    assert "dev-key-for-chalice-local" not in text


def test_a_plain_client_key_beside_the_server_keys_is_no_refusal() -> None:
    from chalicelib.edge_settings import value_refusal

    plain = {
        "SPOOL_API_KEYS": "local-key-0123456789=local",
        "SPOOL_API_KEY": "local-key-0123456789",
    }
    assert value_refusal(plain) is None
    both = {"SPOOL_API_KEYS": "local-key-0123456789=local", "SPOOL_API_KEY": "k-0123456789abcdef=x"}
    assert value_refusal(both) is None  # the server's keys are set: the client's is its own
    refusal = value_refusal({"SPOOL_API_KEY": "k-0123456789abcdef=x"})
    assert refusal is not None and refusal[0].startswith("SPOOL_API_KEY holds a key=tenant")
    assert "k-0123456789abcdef" not in " ".join(refusal)
