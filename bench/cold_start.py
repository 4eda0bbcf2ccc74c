"""Cold start of the API function, from the unzipped Lambda package.

    .venv/bin/python -m bench.cold_start [--runs 25] [--zip out-host/deployment.zip]

What a fresh Lambda container does before its first answer, measured the way
Lambda runs it: the host-target package (`make package LAMBDA_TARGET=host`,
built here unless --zip names one) unzipped into a temporary folder and run by
a Python that has nothing but boto3 (.tools/lambda-venv, `make lambda-venv`),
with no bytecode written (/var/task is read-only), against a memory:// store.

Each run is a fresh `python -c` process that times, separately:
- import: `import app` (Chalice and the route table);
- build: the engine the first request needs: chalicelib.api.routes and the
  runtime (settings, handlers, store, service, the HTTP edge);
- answer: the request itself, an API Gateway proxy event for POST /enqueue
  handed to `app.app(event, context)` as Lambda's bootstrap does, then GET /status.
The first request's work is the sum. The baseline, timed in the same run on the
same interpreter, is `python -c pass`: the interpreter's own start, which no
change to Spool can remove. Median and p90 over the runs are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_PYTHON = ROOT / ".tools" / "lambda-venv" / "bin" / "python"

CHILD = r"""
import time
t0 = time.perf_counter()
import json
import app
t1 = time.perf_counter()
from chalicelib import runtime
from chalicelib.api import routes
routes.current()
t2 = time.perf_counter()

class Context:
    aws_request_id = "bench"
    function_name = "spool-api_handler"
    memory_limit_in_mb = 128
    def get_remaining_time_in_millis(self):
        return 30000

KEY = "bench-key-0123456789abcdef"

def event(method, path, resource, params=None, body=None):
    return {
        "resource": resource, "path": path, "httpMethod": method,
        "headers": {"content-type": "application/json", "host": "bench", "x-api-key": KEY},
        "multiValueHeaders": {"content-type": ["application/json"], "host": ["bench"],
                              "x-api-key": [KEY]},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": params, "stageVariables": None,
        "requestContext": {
            "resourcePath": resource, "httpMethod": method, "path": "/api" + path,
            "stage": "api", "requestId": "bench", "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body, "isBase64Encoded": False,
    }

mail = {"to": ["a@example.com"], "subject": "s", "text": "t"}
body = json.dumps({"type": "send_email", "payload": mail})
answer = app.app(event("POST", "/enqueue", "/enqueue", body=body), Context())
t3 = time.perf_counter()
job = json.loads(answer["body"]).get("id")
status = app.app(event("GET", "/status/" + str(job), "/status/{id}", {"id": str(job)}), Context())
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "build": t2 - t1, "answer": t3 - t2, "second": t4 - t3,
                  "codes": [answer["statusCode"], status["statusCode"]]}))
"""


def build_host_package(out: Path) -> Path:
    """`make package LAMBDA_TARGET=host`: the zip Lambda gets, with this machine's wheels."""
    subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "package", "LAMBDA_TARGET=host",
         f"PACKAGE_DIR={out}"],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return out / "deployment.zip"


def deployed_env(stage: str = "dev") -> dict[str, str]:
    """The functions' environment as .chalice/config.json gives it for a stage."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


EXTRA_ENV: dict[str, str] = {}


def child_env(task: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "PATH", "HOME", "LANG"))}
    env.update(deployed_env())
    env.update(
        PYTHONPATH=str(task),
        PYTHONDONTWRITEBYTECODE="1",  # /var/task is read-only on Lambda
        SPOOL_STORE_URL="memory://",
        SPOOL_API_KEYS="bench-key-0123456789abcdef=bench",
        SPOOL_SMTP_FROM="spool@example.com",
        AWS_EC2_METADATA_DISABLED="true",
        **EXTRA_ENV,
    )
    return env


def run_once(python: Path, task: Path, code: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(python), "-c", code], cwd=task, env=child_env(task),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"cold start run failed:\n{result.stderr}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def wall(python: Path, task: Path, code: str) -> float:
    import time

    start = time.perf_counter()
    subprocess.run(
        [str(python), "-c", code], cwd=task, env=child_env(task), check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def table(rows: dict[str, list[float]], baseline: list[float]) -> str:
    base = statistics.median(baseline)
    lines = [
        "| phase | median | p90 | median / `python -c pass` |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, values in rows.items():
        med = statistics.median(values)
        lines.append(
            f"| {name} | {med * 1000:.0f} ms | {p90(values) * 1000:.0f} ms | {med / base:.1f}x |"
        )
    lines.append(
        f"| `python -c pass` (baseline) | {base * 1000:.0f} ms | {p90(baseline) * 1000:.0f} ms "
        "| 1.0x |"
    )
    return "\n".join(lines)


def unpack(zip_path: Path, task: Path, bytecode: bool) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(task)
    if not bytecode:
        for pyc in task.rglob("*.pyc"):
            pyc.unlink()
    return task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--zip", type=Path, help="a host-target deployment.zip (default: build)")
    parser.add_argument(
        "--before",
        type=Path,
        help="another host-target zip (the code before a change), timed in the same runs "
        "without bytecode, as `chalice package` shipped it",
    )
    parser.add_argument("--python", type=Path, default=LAMBDA_PYTHON)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the runs")
    parser.add_argument("--no-bytecode", action="store_true", help="drop the zip's .pyc")
    args = parser.parse_args(argv)
    EXTRA_ENV.update(item.split("=", 1) for item in args.env)
    if not args.python.exists():
        raise SystemExit(f"{args.python} is missing: run `make lambda-venv`")
    with tempfile.TemporaryDirectory(prefix="spool-cold-") as tmp:
        zip_path = args.zip or build_host_package(Path(tmp) / "out")
        task = unpack(zip_path, Path(tmp) / "task", not args.no_bytecode)
        old = unpack(args.before, Path(tmp) / "before", False) if args.before else None
        for folder in (task, old):
            if folder is not None:
                run_once(args.python, folder, CHILD)  # warm the page cache, as a reused host
        phases: dict[str, list[float]] = {"import": [], "build": [], "answer": [], "first": []}
        second: list[float] = []
        walls: list[float] = []
        baseline: list[float] = []
        before: list[float] = []
        for _ in range(args.runs):
            baseline.append(wall(args.python, task, "pass"))
            data = run_once(args.python, task, CHILD)
            if data["codes"][1] != 200:
                raise SystemExit(f"the requests were refused: {data}")
            for name in ("import", "build", "answer"):
                phases[name].append(data[name])
            phases["first"].append(data["import"] + data["build"] + data["answer"])
            second.append(data["second"])
            walls.append(wall(args.python, task, CHILD))
            if old is not None:
                was = run_once(args.python, old, CHILD)
                before.append(was["import"] + was["build"] + was["answer"])
    rows = {
        "import (`import app`)": phases["import"],
        "build (routes + runtime)": phases["build"],
        "answer (POST /enqueue)": phases["answer"],
        "**first request: import + build + answer**": phases["first"],
        "next request (GET /status)": second,
        "whole process, start to exit": walls,
    }
    if before:
        rows["first request, code and package before (`--before`)"] = before
    print(f"{args.runs} runs, CPython {sys.version.split()[0]} ({args.python})\n")
    print(table(rows, baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
