"""The Lambda zip runs every built-in handler, and its wheels fit the template's runtime.

Lambda gives a function the zip and a runtime with boto3, nothing else: a
handler whose dependency is missing from the zip (Pillow, once) fails there
only after the API accepted its jobs. So the package is built as `make
package` builds it, for this machine's Python (LAMBDA_TARGET=host: same
requirements, wheels for CPython 3.11 on x86_64 instead of the Lambda
runtime's), unzipped, and every handler the runtime registers is run from it
in .tools/lambda-venv, a Python with only boto3 (`make lambda-venv`), through
the API function's and the worker function's handlers.

The deployed package (LAMBDA_TARGET=lambda) is checked without running it:
its wheels' tags against the template's Runtime and Architectures.

Nothing here reaches the registry: `make lambda-wheels` fetched the wheels
before pytest started, and `make package` installs them with --no-index.
"""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from infra import lambda_target, lambda_zip
from tests.procs import guarded_env
from tests.test_email import Mailbox, smtp_server

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_PYTHON = ROOT / ".tools" / "lambda-venv" / "bin" / "python"
WHEELS = ROOT / ".tools" / "lambda-wheels"
RUNNER = Path(__file__).resolve().parent / "lambda_runner.py"

# Packages a Chalice app on Lambda must not carry or need: the local tooling.
LOCAL_ONLY = {
    "moto",
    "waitress",
    "tests",
    "local",
    "psycopg",
    "aiosmtpd",
    "pytest",
    "chalice_local",
}


def make_package(out: Path, target: str) -> Path:
    """`make package` for a target, into out/; the wheel folder is used as it is."""
    result = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "-o", f"{WHEELS}/{target}/.fetched",
         "package", f"LAMBDA_TARGET={target}", f"PACKAGE_DIR={out}"],
        cwd=ROOT, env=guarded_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    return out


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host-target package, unzipped as Lambda unzips it into /var/task."""
    assert LAMBDA_PYTHON.exists(), f"{LAMBDA_PYTHON} is missing: run `make lambda-venv`"
    out = make_package(tmp_path_factory.mktemp("host-package"), "host")
    folder = out / "task"
    with zipfile.ZipFile(out / "deployment.zip") as archive:
        archive.extractall(folder)
    return folder


@dataclass
class Lambda:
    """Runs lambda_runner.py from the unzipped package in the boto3-only Python."""

    task: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str) -> Any:
        env = guarded_env(**self.env)
        env["PYTHONPATH"] = f"{self.task}:{env.get('PYTHONPATH', '')}"
        result = subprocess.run(
            [str(LAMBDA_PYTHON), str(RUNNER), *args],
            cwd=self.task, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def run_lambda(task: Path, tmp_path: Path) -> Lambda:
    return Lambda(
        task,
        {
            "SPOOL_STORE_URL": f"sqlite:///{tmp_path}/spool.db",
            "SPOOL_API_KEYS": "lambda-runner-key-0123456789=lambda",
            "SPOOL_DEMO_HANDLERS": "true",
            "SPOOL_BLOB_DIR": str(tmp_path / "blobs"),
        },
    )


# -- one real job per built-in handler ----------------------------------------------------

Scenario = Callable[[Lambda, Path], None]


def succeeded(record: dict[str, Any]) -> dict[str, Any]:
    assert "status" in record, record
    status = record["status"]
    assert status["state"] == "succeeded", json.dumps(status)
    assert record["batch"] == {"batchItemFailures": []}
    assert not LOCAL_ONLY & set(record["modules"]), record["modules"]
    result: dict[str, Any] = status["result"]
    return result


def echo(run: Lambda, tmp: Path) -> None:
    assert succeeded(run("run", "echo", '{"from": "lambda"}')) == {"from": "lambda"}


def sleep(run: Lambda, tmp: Path) -> None:
    assert succeeded(run("run", "sleep", '{"seconds": 0}')) == {"slept": 0}


def fail(run: Lambda, tmp: Path) -> None:
    assert succeeded(run("run", "fail", '{"times": 0}')) == {"succeeded_on_attempt": 1}


def resize_image(run: Lambda, tmp: Path) -> None:
    source = tmp / "blobs" / "lambda" / "in" / "p.png"
    source.parent.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(source, "PNG")
    result = succeeded(run("run", "resize_image", '{"key": "lambda/in/p.png", "widths": [8]}'))
    (output,) = result["outputs"]
    with Image.open(tmp / "blobs" / output["key"]) as made:
        assert (made.format, made.size) == ("PNG", (8, 6))


def send_email(run: Lambda, tmp: Path) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as smtp:
        run.env.update(
            SPOOL_SMTP_HOST="127.0.0.1",
            SPOOL_SMTP_PORT=str(smtp.port),
            SPOOL_SMTP_FROM="spool@example.com",
            SPOOL_SMTP_LOCAL_HOSTNAME="lambda.example.com",
        )
        payload = '{"to": ["ops@example.com"], "subject": "from the zip", "text": "hello"}'
        succeeded(run("run", "send_email", payload))
    (received,) = mailbox.received
    assert received.rcpt_tos == ["ops@example.com"]
    assert received.message["Subject"] == "from the zip"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"hello": "from 127.0.0.1"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def http_request(run: Lambda, tmp: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run.env.update(SPOOL_HTTP_ALLOWLIST="127.0.0.1", SPOOL_HTTP_ALLOW_PRIVATE="true")
        url = f"http://127.0.0.1:{server.server_port}/hello"
        result = succeeded(run("run", "http_request", json.dumps({"url": url})))
    finally:
        server.shutdown()
        server.server_close()
    assert result["status"] == 200
    assert "from 127.0.0.1" in json.dumps(result)


SCENARIOS: dict[str, Scenario] = {
    "echo": echo,
    "sleep": sleep,
    "fail": fail,
    "resize_image": resize_image,
    "send_email": send_email,
    "http_request": http_request,
}


def test_the_lambda_python_has_boto3_and_nothing_of_the_project(tmp_path: Path) -> None:
    probe = "import boto3, importlib.util as u; print([m for m in ('pydantic', 'PIL', 'chalice', 'chalicelib') if u.find_spec(m)])"  # noqa: E501
    result = subprocess.run(
        [str(LAMBDA_PYTHON), "-c", probe], cwd=tmp_path, env=guarded_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_registered_handler_has_a_scenario(run_lambda: Lambda) -> None:
    # The runtime from the zip says which handlers it offers; each must be run below.
    assert sorted(run_lambda("types")) == sorted(SCENARIOS)


@pytest.mark.parametrize("type_", sorted(SCENARIOS))
def test_each_handler_runs_from_the_zip(run_lambda: Lambda, tmp_path: Path, type_: str) -> None:
    SCENARIOS[type_](run_lambda, tmp_path)


# -- the deployed package: wheels for the template's runtime ----------------------------


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("lambda-package"), "lambda")


def test_the_deployed_zips_wheels_fit_the_templates_runtime(deployed: Path) -> None:
    template = json.loads((deployed / "sam.json").read_text())
    functions = lambda_zip.declared(template)
    assert {runtime for runtime, _ in functions.values()} <= {"python3.12", "python3.13"}
    with zipfile.ZipFile(deployed / "deployment.zip") as archive:
        assert lambda_zip.problems(template, archive) == []
        tags = lambda_zip.wheel_tags(archive)
    compiled = {dist: t for dist, t in tags.items() if not t[0].endswith("-none-any")}
    assert any(d.startswith("pydantic_core-") for d in compiled)
    assert any(d.startswith("pillow-") for d in compiled)


def _retagged(deployed: Path, old: str, new: str) -> zipfile.ZipFile:
    """The deployed zip with every WHEEL Tag line's `old` replaced by `new`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(deployed / "deployment.zip") as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".dist-info/WHEEL"):
                data = data.replace(old.encode(), new.encode())
            dst.writestr(info, data)
    return zipfile.ZipFile(buffer)


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("runtime", lambda props: props.update(Runtime="python3.13")),
        ("architecture", lambda props: props.update(Architectures=["x86_64"])),
    ],
)
def test_the_check_fails_when_the_template_disagrees(
    deployed: Path, what: str, change: Callable[[dict[str, Any]], None]
) -> None:
    template = json.loads((deployed / "sam.json").read_text())
    props = template["Resources"]["RunJobs"]["Properties"]
    change(props)
    with zipfile.ZipFile(deployed / "deployment.zip") as archive:
        found = lambda_zip.problems(template, archive)
    assert found and all(line.startswith("RunJobs ") for line in found), found
    assert any("pydantic_core" in line for line in found)


def test_the_check_fails_on_wheels_for_another_machine(deployed: Path) -> None:
    template = json.loads((deployed / "sam.json").read_text())
    _runtime, (arch,) = lambda_zip.declared(template)["RunJobs"]
    machine = lambda_zip.MACHINE_OF[arch]
    other = "x86_64" if machine == "aarch64" else "aarch64"
    with _retagged(deployed, f"_{machine}", f"_{other}") as archive:
        found = lambda_zip.problems(template, archive)
    assert any("pydantic_core" in line and other in line for line in found), found


def test_the_host_package_is_refused_for_lambda(task: Path, deployed: Path) -> None:
    # Wheels for this machine's CPython 3.11 must never pass as the Lambda runtime's.
    template = json.loads((deployed / "sam.json").read_text())
    zipped = task.parent / "deployment.zip"
    with zipfile.ZipFile(zipped) as archive:
        found = lambda_zip.problems(template, archive)
    assert any("cp311" in line for line in found), found


def test_bytecode_matches_the_python_that_runs_it(task: Path, deployed: Path) -> None:
    host = sys.implementation.cache_tag
    pycs = list(task.rglob("*.pyc"))
    assert pycs and all(p.name.endswith(f".{host}.pyc") for p in pycs)
    assert (task / "chalicelib" / "__pycache__" / f"runtime.{host}.pyc").exists()
    with zipfile.ZipFile(deployed / "deployment.zip") as archive:
        shipped = {n.rsplit(".", 2)[-2] for n in archive.namelist() if n.endswith(".pyc")}
    # Only the runtime's own bytecode, or none (no matching Python was at hand).
    assert shipped <= {"cpython-" + lambda_target.PYTHON_ABI[2:]}
