"""The test suite's network guard (see spool_netguard.py).

A Python process started with the guard on (a child of a test, or a pytest-xdist
worker, which inherits the environment of the pytest that started it) has already
imported the guard as the top-level module `spool_netguard`, through
sitecustomize.py. Importing `tests.netguard.spool_netguard` then would load the
same file a second time as another module, with its own refusal log and record:
the socket patches (the first copy's) would write where the second copy never
reads, and `network_guard` in tests/conftest.py would see no refusal at all. So
that copy, when there is one, is the module under both names.
"""

import os
import sys

_started_guarded = sys.modules.get("spool_netguard")
if _started_guarded is not None and getattr(_started_guarded, "HERE", None) == os.path.dirname(
    os.path.abspath(__file__)
):
    sys.modules[f"{__name__}.spool_netguard"] = _started_guarded
