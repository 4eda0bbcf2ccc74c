"""KEDA's scaler reads the store URL as it is, without Spool's options.

docs/self-hosting.md (section 1) gives SPOOL_STORE_URL Spool's own options,
`?schema=spool&pool_max=10`, and deploy/k8s's ScaledObject reads that same variable
(`connectionFromEnv: SPOOL_STORE_URL`) for its query `SELECT count(*) FROM jobs ...`.
KEDA is not Spool: it knows none of those options and sets no search_path, so on a
store in a schema of its own the query finds no table, and the workers are never
scaled on the backlog. tests/test_deploy.py ran the query through Spool's own
connection, which sets the search path, so it passed. The page (and the manifest's
comment) now say to give KEDA a plain URL and the table with its schema; this test
checks both halves: the query as shipped misses the schema's jobs, the documented
one counts them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests import pg_support
from tests.procs import run_spool
from tests.test_deploy import BASE, _docs

pytestmark = pytest.mark.postgres


@pytest.fixture
def store_url() -> Iterator[str]:
    with pg_support.fresh_schema() as url:
        yield url


def _query() -> str:
    (scaled,) = _docs(BASE / "worker-scaledobject.yaml")
    return str(scaled["spec"]["triggers"][0]["metadata"]["query"])


def _plain(url: str) -> str:
    """The URL without Spool's options: what a client that is not Spool can open."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def test_the_scaler_query_needs_the_schema_named_when_the_store_has_its_own(
    store_url: str, tmp_path: Path
) -> None:
    import psycopg

    schema = dict(p.split("=", 1) for p in urlsplit(store_url).query.split("&"))["schema"]
    made = run_spool(tmp_path, "enqueue", "echo", "--count", "3", SPOOL_STORE_URL=store_url)
    assert made.returncode == 0, made.stderr
    with psycopg.connect(_plain(store_url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute(_query())
        qualified = _query().replace("FROM jobs", f"FROM {schema}.jobs")
        (count,) = conn.execute(qualified).fetchone() or (None,)
    assert count == 3
