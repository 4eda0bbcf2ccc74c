"""The test suite's network guard (see spool_netguard.py)."""
