"""SSM clients for tests of secrets kept in Parameter Store
(chalicelib/secret_parameters.py): one that counts moto's reads, one that is denied."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


class Counting:
    """An SSM client (moto's, wrapped) that counts its reads: a secret is read on
    first need and then from the cache, never once per use."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.reads = inner, 0

    def get_parameter(self, *, Name: str, WithDecryption: bool) -> Any:
        self.reads += 1
        return self.inner.get_parameter(Name=Name, WithDecryption=WithDecryption)


class Denied:
    """An SSM client whose every read is refused, as for a role without the grant."""

    def get_parameter(self, *, Name: str, WithDecryption: bool) -> Any:
        raise ClientError({"Error": {"Code": "AccessDeniedException"}}, "GetParameter")
