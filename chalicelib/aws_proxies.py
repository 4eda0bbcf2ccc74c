"""An AWS endpoint on this machine's loopback is reached directly, never through a proxy.

botocore reads HTTP_PROXY and HTTPS_PROXY (NO_PROXY aside) for every endpoint. With
one set, as on many company machines, a store URL's `endpoint=http://127.0.0.1:5000`
(moto_server, DynamoDB Local) or a SPOOL_BLOB_ENDPOINT_URL of a MinIO on this
machine went to that proxy: `spool serve` stopped at start with "unexpected error:
ClientError: An error occurred (502) when calling the DescribeTable operation", each
request and the jobs' payloads handed to the proxy first. A proxy elsewhere cannot
reach this machine's loopback. AWS's own endpoints, and any other endpoint, keep the
environment's proxy.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from chalicelib.local_hosts import local_host_only


def endpoint_proxies(endpoint: str | None) -> dict[str, str] | None:
    """botocore's Config(proxies=...) for a client of `endpoint`: {} (no proxy,
    whatever the environment says) for a loopback address or localhost; None
    otherwise, which lets botocore read the environment as it does by default."""
    if not endpoint:
        return None
    try:
        host = urlsplit(endpoint).hostname
    except ValueError:  # botocore refuses the endpoint itself, in its own words
        return None
    return {} if host and local_host_only(host) else None
