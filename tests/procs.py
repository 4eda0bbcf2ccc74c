"""Child processes in tests: the environment they get, and how they are stopped."""

from __future__ import annotations

import os
import subprocess
from typing import Any


def guarded_env(**extra: str) -> dict[str, str]:
    """This process's environment plus the AWS guard: a child never reaches real AWS
    or the metadata address, whatever the developer's shell holds."""
    env = dict(os.environ)
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)
    return env


def stop(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM (a graceful stop is part of what is tested), SIGKILL if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
