"""README.md's Python sample, pasted as written, against a real `spool serve`.

tests/test_docs.py checks the README's curl lines against app.py's routes but ran none
of its Python: a renamed client method or a changed default would leave the first
sample a newcomer pastes broken, unseen (stop 56, a new user's pass: it worked).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.procs import guarded_env, serving_url

ROOT = Path(__file__).resolve().parent.parent
KEY = "readme-key-0123456789"


def readme_python() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    [block] = re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)
    return str(block)


def test_the_readme_python_sample_runs_as_written(tmp_path: Path) -> None:
    sample = readme_python()
    assert "Client()" in sample  # it reads SPOOL_URL and SPOOL_API_KEY, as README says
    env = guarded_env(
        SPOOL_STORE_URL=f"sqlite:///{tmp_path}/spool.db",
        SPOOL_API_KEYS=f"{KEY}=readme",
        SPOOL_DEMO_HANDLERS="true",
        SPOOL_LOG_LEVEL="WARNING",
    )
    with serving_url(env=env) as url:
        run = subprocess.run(
            [sys.executable, "-c", sample],
            env={**env, "SPOOL_URL": url, "SPOOL_API_KEY": KEY},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "succeeded"  # the sample's comment says what it prints
