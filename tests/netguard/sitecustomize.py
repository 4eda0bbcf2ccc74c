"""Installs the network guard in Python processes the tests start.

tests/conftest.py puts this directory first on PYTHONPATH and sets
SPOOL_TEST_NETGUARD=1 for every child, so a `spool serve`, `spool worker`,
`chalice local` or moto_server started by a test is held to 127.0.0.0/8 too.
"""

import spool_netguard  # type: ignore[import-not-found]  # this folder is on a child's PYTHONPATH

spool_netguard.install_from_env()
