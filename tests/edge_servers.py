"""Two of the three edges, started for tests that compare their answers byte for byte:
`chalice local` (a subprocess) and `spool serve`'s server (in this process)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.apikit import API_KEYS
from tests.served import served
from tests.test_chalice_local import serving_chalice_local


@contextmanager
def chalice_local_port(folder: Path) -> Iterator[int]:
    """The port of `chalice local` serving the suite's test keys."""
    with serving_chalice_local(folder, {**os.environ, "SPOOL_API_KEYS": API_KEYS}) as port:
        yield port


@contextmanager
def spool_serve_port(folder: Path) -> Iterator[int]:
    """The port of `spool serve`'s server on a store in `folder` (tests/served.py)."""
    with served(folder) as server:
        yield server.port
