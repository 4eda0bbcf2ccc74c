"""Finish the template `chalice package` wrote: what depends on the build, not the app.

    .venv/bin/python infra/finalize.py --stage prod --arch arm64 out/sam.json

`make package` runs it after `chalice package`. It sets, in place:

- every function's Runtime to infra/lambda_target.py's RUNTIME, and its
  Architectures to the one asked for. Chalice writes the Runtime of the Python
  that ran it (3.11 on this machine, on Amazon Linux 2) and always x86_64; the
  zip's wheels are built for lambda_target's runtime and architecture, and the
  template must say the same.
- SPOOL_WORKER_TIMEOUT, in every function's environment, to the SQS worker
  function's Timeout: a runtime refuses at start-up a handler whose timeout
  would not fit (chalicelib/handler_check.py), the API included, so a job it
  could never finish is not accepted.
- the default of the ApiKeysParameter stack parameter to the stage's
  /spool/<stage>/api-keys (infra/generate.py: api_keys_parameter), the name
  .chalice/config.json gives `chalice deploy` too.

A template with no functions or without infra/resources.json merged in is
refused: better a failed build than a stack that deploys the wrong thing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.generate import STAGES, api_keys_parameter  # noqa: E402
from infra.lambda_target import ARCHITECTURES, DEFAULT_ARCH, RUNTIME  # noqa: E402

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
WORKER_FUNCTION = "RunJobs"  # app.py's run_jobs, the SQS worker


def finalize(template: dict[str, Any], stage: str, arch: str = DEFAULT_ARCH) -> dict[str, Any]:
    """The template with the runtime, architecture and stage's parameter name set."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    functions = [
        resource
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") in FUNCTION_TYPES
    ]
    if not functions:
        raise ValueError("the template has no Lambda functions: is it chalice package's?")
    worker = template["Resources"].get(WORKER_FUNCTION)
    if worker is None or "Timeout" not in worker.get("Properties", {}):
        raise ValueError(f"no {WORKER_FUNCTION} function with a Timeout: is it Spool's app?")
    worker_timeout = str(worker["Properties"]["Timeout"])
    for resource in functions:
        properties = resource.setdefault("Properties", {})
        properties["Runtime"] = RUNTIME
        properties["Architectures"] = [arch]
        variables = properties.setdefault("Environment", {}).setdefault("Variables", {})
        variables["SPOOL_WORKER_TIMEOUT"] = worker_timeout
    parameter = template.get("Parameters", {}).get("ApiKeysParameter")
    if parameter is None:
        raise ValueError("no ApiKeysParameter: was infra/resources.json merged in?")
    parameter["Default"] = api_keys_parameter(stage)
    return template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", type=Path, help="the sam.json chalice package wrote")
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--arch", default=DEFAULT_ARCH, choices=ARCHITECTURES)
    args = parser.parse_args(argv)
    try:
        template = json.loads(args.template.read_text())
        finalize(template, args.stage, args.arch)
    except (OSError, ValueError) as exc:
        print(f"infra/finalize.py: {exc}", file=sys.stderr)
        return 1
    args.template.write_text(json.dumps(template, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
