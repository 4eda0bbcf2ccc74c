"""`spool serve`'s banner names where its keys come from: the SSM parameter, when it is.

Found from outside (stop 62): `spool serve` with SPOOL_API_KEYS unset and
SPOOL_API_KEYS_PARAMETER=/spool/b/keys (the keys in SSM, moto_server) printed
"API keys from SPOOL_API_KEYS (not shown)". The operator rotating a key read that
the server took its keys from a variable it did not have, and went looking in the
wrong place.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_banner import serving

PARAM = "/spool/s62b/keys"


def test_keys_from_a_parameter_are_said_to_come_from_it(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/local.db"
    with serving(
        "--no-worker",
        drop=("SPOOL_API_KEYS",),
        SPOOL_STORE_URL=store,
        SPOOL_API_KEYS_PARAMETER=PARAM,
    ) as (banner, _):
        line = next(text for text in banner.splitlines() if "API keys from" in text)
        assert PARAM in line and "SPOOL_API_KEYS_PARAMETER" in line, line
        assert "from SPOOL_API_KEYS " not in line, line
