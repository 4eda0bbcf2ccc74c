"""How long `spool` takes for commands that open no store: --help, --version, and
`spool status ID` against a running server.

    .venv/bin/python -m bench.cli_start --url http://127.0.0.1:PORT --key KEY \
        [--runs 10] [--before DIR]

Each run is a fresh process of the real `spool` script, timed from this process
(time.perf_counter around subprocess.run: Python's start, the imports, the command
and its exit). The job asked about is enqueued through the server first. With
--before DIR (a checkout of an older commit), each command also runs with DIR first
on PYTHONPATH, alternating run by run with this tree, so both are measured under the
same load. The floor is `python -c pass`: the interpreter's own start. Medians are
reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SPOOL = Path(sys.executable).with_name("spool")
HERE = Path(__file__).resolve().parent.parent


def env_for(tree: Path) -> dict[str, str]:
    """This environment with `tree` where Spool is imported from."""
    env = dict(os.environ)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p) != HERE]
    env["PYTHONPATH"] = os.pathsep.join([*rest, str(tree)])
    return env


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds one run of `argv` took, start to exit; a failed run stops the bench."""
    began = time.perf_counter()
    ran = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    took = time.perf_counter() - began
    if ran.returncode != 0:
        raise SystemExit(f"{argv} failed ({ran.returncode}): {ran.stderr[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="a running `spool serve`")
    parser.add_argument("--key", required=True, help="its API key")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--before", type=Path, help="a checkout to compare with")
    args = parser.parse_args()

    trees = {"now": HERE} | ({"before": args.before.resolve()} if args.before else {})
    remote = ["--url", args.url, "--key", args.key]
    made = subprocess.run(
        [str(SPOOL), "enqueue", "echo", "--json", *remote],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    job = json.loads(made.stdout)["id"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "spool --help": [str(SPOOL), "--help"],
        "spool --version": [str(SPOOL), "--version"],
        "spool status ID (remote, table)": [str(SPOOL), "status", job, *remote],
        "spool status ID --json (remote)": [str(SPOOL), "status", job, "--json", *remote],
    }
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for name, argv in commands.items():
            for label, tree in trees.items():
                times.setdefault((name, label), []).append(timed(argv, env_for(tree)))
    print("| command | " + " | ".join(trees) + (" | now / before |" if args.before else " |"))
    print("|---|" + "---:|" * (len(trees) + (1 if args.before else 0)))
    for name in commands:
        medians = [statistics.median(times[(name, label)]) for label in trees]
        cells = [f"{m * 1000:.0f} ms" for m in medians]
        if args.before:
            cells.append(f"{medians[0] / medians[1]:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
