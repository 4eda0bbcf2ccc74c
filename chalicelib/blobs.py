"""Blob storage for handlers that work on files: a local folder, or an S3 bucket.

Keys are relative, slash-separated names. They come from job payloads, so
they are checked before any store sees them: no absolute paths, no `..` or
`.` segments, no backslashes or control characters. The local store also
refuses a key whose resolved path leaves its folder (a symlink inside it), so
a payload can never read or write outside the blob folder.

Settings: SPOOL_BLOB_BUCKET selects S3 (with SPOOL_BLOB_PREFIX and, for moto or
a local S3, SPOOL_BLOB_ENDPOINT_URL); otherwise SPOOL_BLOB_DIR (default
.spool/blobs) is used. boto3 is imported only when the S3 store is built.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.config import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_BLOB_DIR = ".spool/blobs"
MAX_KEY_BYTES = 1024


class BlobError(Exception):
    """Base class for blob store refusals."""


class InvalidKey(BlobError, ValueError):
    """The key is malformed or would reach outside the store."""


class BlobNotFound(BlobError, KeyError):
    def __str__(self) -> str:
        return f"blob {self.args[0]!r} not found"


class BlobTooLarge(BlobError):
    """The blob is bigger than the caller is willing to read."""


def check_key(key: str) -> str:
    """Return the key unchanged if it is safe everywhere, else raise InvalidKey."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("blob key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"blob key is longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key) or "\\" in key:
        raise InvalidKey("blob key contains control characters or backslashes")
    if key.startswith("/"):
        raise InvalidKey("blob key must be relative (no leading '/')")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKey("blob key has an empty, '.' or '..' segment")
    return key


class BlobStore(Protocol):
    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The blob's bytes; BlobNotFound if absent, BlobTooLarge past max_bytes."""
        ...

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Create or replace a blob; readers see the old or the new bytes, never a mix."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove a blob; deleting a missing blob is not an error."""
        ...


class LocalBlobStore:
    """Blobs as files under one folder: the laptop and test stand-in for S3."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        check_key(key)
        root = self.root.resolve()
        path = (root / key).resolve()
        if path == root or not path.is_relative_to(root):
            raise InvalidKey(f"blob key {key!r} resolves outside the blob folder")
        return path

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None
        if max_bytes is not None and len(data) > max_bytes:
            raise BlobTooLarge(f"blob {key!r} is larger than {max_bytes} bytes")
        return data

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3BlobStore:
    """Blobs as objects in one bucket, under an optional key prefix."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            raise BlobNotFound(key) from None
        body = response["Body"]
        try:
            if max_bytes is not None and response.get("ContentLength", 0) > max_bytes:
                raise BlobTooLarge(f"blob {key!r} is larger than {max_bytes} bytes")
            data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
        finally:
            body.close()
        if max_bytes is not None and len(data) > max_bytes:
            raise BlobTooLarge(f"blob {key!r} is larger than {max_bytes} bytes")
        return data

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


_clients: dict[tuple[str | None, str | None], Any] = {}
_clients_lock = threading.Lock()


def _s3_client(endpoint: str | None, region: str | None) -> S3Client:
    """One client per endpoint and region per process: Lambda reuses it across invocations."""
    with _clients_lock:
        client = _clients.get((endpoint, region))
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5)
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name=region, config=config
            )
            _clients[(endpoint, region)] = client
        return client  # type: ignore[no-any-return]


def open_blob_store(settings: Settings | None = None) -> BlobStore:
    """The store the settings choose: S3 when SPOOL_BLOB_BUCKET is set, else a folder."""
    settings = settings or Settings.from_env()
    bucket = settings.text("SPOOL_BLOB_BUCKET")
    if bucket:
        client = _s3_client(
            settings.text("SPOOL_BLOB_ENDPOINT_URL") or None,
            settings.text("SPOOL_BLOB_REGION") or None,
        )
        return S3BlobStore(client, bucket, settings.text("SPOOL_BLOB_PREFIX"))
    return LocalBlobStore(settings.text("SPOOL_BLOB_DIR", DEFAULT_BLOB_DIR))
