"""Payloads and results too big for a DynamoDB record live in S3.

The record keeps the object key instead of the value; the store writes the
object before the record that points at it, so a reader never follows a key to
nothing. Objects whose record was never written (a refused finish, a rolled
back add) are deleted at once where possible, once a read of the record shows it
does not name them (a write whose reply was lost may have landed:
DynamoStore._drop_unreferenced); the bucket's lifecycle rule sweeps any that a
crash, or a read that failed too, leaves behind.

Everything lives under INTERNAL_PREFIX. Handler blobs (chalicelib.blobs) may share
the bucket only in a folder apart from it: tenants name keys there, and must
never be able to name these objects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger("spool.s3")

DELETE_BATCH = 1000  # DeleteObjects limit
INTERNAL_PREFIX = "spool/"  # the folder Spool's own objects live in; infra scopes roles to it


class ObjectTooLarge(ValueError):
    """An object holds more bytes than any the store writes there (S3Blobs.get)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"it is {size} bytes, more than {limit}")
        self.size = size
        self.limit = limit


class S3Blobs:
    def __init__(self, client: S3Client, bucket: str, prefix: str = INTERNAL_PREFIX) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def payload_key(self, job_id: str) -> str:
        return f"{self.prefix}payloads/{job_id}.json"

    def result_key(self, job_id: str, lease_token: str) -> str:
        # One object per attempt: a refused finish never overwrites the winner's result.
        return f"{self.prefix}results/{job_id}/{lease_token}.json"

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType="application/json"
        )

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ObjectTooLarge, reading none or no more than `max_bytes`
        + 1 of them, when it holds more than `max_bytes`."""
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            if max_bytes is None:
                return body.read()
            size = int(response.get("ContentLength") or 0)
            data = b"" if size > max_bytes else body.read(max_bytes + 1)
            if size > max_bytes or len(data) > max_bytes:
                raise ObjectTooLarge(max(size, len(data)), max_bytes)
            return data
        finally:
            body.close()

    def delete(self, keys: Sequence[str]) -> None:
        """Best effort: a leftover object costs storage until the lifecycle rule, nothing else."""
        for start in range(0, len(keys), DELETE_BATCH):
            objects: list[ObjectIdentifierTypeDef] = [
                {"Key": k} for k in keys[start : start + DELETE_BATCH]
            ]
            try:
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                )
            except Exception as exc:
                log.warning("could not delete %d S3 objects: %s", len(objects), exc)
