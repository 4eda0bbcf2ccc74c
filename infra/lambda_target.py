"""The one place that says which Lambda runtime and architecture Spool ships for.

Two things must agree on it: the template (infra/finalize.py writes every
function's Runtime and Architectures from these constants) and the wheels in the
deployment zip (built for exactly this Python version and platform). A zip of
x86_64 wheels on an arm64 function, or cp311 wheels on python3.12, imports fine
on a laptop and fails on the first cold start; a test compares the two.

`chalice package` would otherwise write the Runtime of whatever Python ran it.
"""

from __future__ import annotations

from typing import Final

# Lambda's managed runtime (Amazon Linux 2023). python3.13 would also do; bump
# PYTHON_VERSION and the tags below with it.
RUNTIME: Final = "python3.12"
PYTHON_VERSION: Final = "3.12"  # pip --python-version
PYTHON_ABI: Final = "cp312"  # pip --abi / the wheels' interpreter tag

ARCHITECTURES: Final = ("arm64", "x86_64")
# Graviton: about 20% cheaper per GB-second than x86_64 at the same memory.
DEFAULT_ARCH: Final = "arm64"

# pip --platform for each architecture (manylinux2014 = glibc 2.17, which AL2023's
# glibc 2.34 runs; pip also accepts newer manylinux_2_x wheels when asked for them).
PLATFORM_TAGS: Final = {
    "arm64": "manylinux2014_aarch64",
    "x86_64": "manylinux2014_x86_64",
}
# The machine name a wheel's platform tag ends in, per Lambda architecture.
MACHINES: Final = {"arm64": "aarch64", "x86_64": "x86_64"}


def platform_tag(arch: str) -> str:
    """pip's --platform for a Lambda architecture; refuses one Lambda does not offer."""
    if arch not in PLATFORM_TAGS:
        choices = ", ".join(ARCHITECTURES)
        raise ValueError(f"unknown Lambda architecture {arch!r}: choose one of {choices}")
    return PLATFORM_TAGS[arch]
