"""Blob storage for handlers that work on files: a local folder, or an S3 bucket.

Keys are relative, slash-separated names. They come from job payloads, so
they are checked before any store sees them: no absolute paths, no `..` or
`.` segments, no backslashes, control or line-separator characters. A key must
stay safe however a later layer reads it, so the same checks apply to it
percent-decoded (as often as decoding changes it) and Unicode-normalised (NFKC
turns U+2025 TWO DOT LEADER into `..` and U+FF0F FULLWIDTH SOLIDUS into `/`).
The local store also refuses a key whose resolved path leaves its folder (a
symlink inside it), so a payload can never read or write outside the folder.

Which tenant may use which key is chalicelib.blob_tenancy's concern; handlers
reach blobs through its tenant view, never through a bare store.

Settings: SPOOL_BLOB_BUCKET selects S3 (with SPOOL_BLOB_PREFIX, a folder inside
the bucket, and, for moto or a local S3, SPOOL_BLOB_ENDPOINT_URL); otherwise
SPOOL_BLOB_DIR (default .spool/blobs) is used. boto3 is imported only when the
S3 store is built.
"""

from __future__ import annotations

import os
import tempfile
import threading
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from chalicelib import shell_paths
from chalicelib.aws_proxies import endpoint_proxies
from chalicelib.config import STARTED_IN, Settings
from chalicelib.storage.s3_blobs import INTERNAL_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_BLOB_DIR = ".spool/blobs"
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255  # a file name's limit on common filesystems, so keys work on both stores


class BlobError(Exception):
    """Base class for blob store refusals."""


class InvalidKey(BlobError, ValueError):
    """The key is malformed or would reach outside the store."""


class BlobNotFound(BlobError, KeyError):
    def __str__(self) -> str:
        return f"blob {self.args[0]!r} not found"


class BlobTooLarge(BlobError):
    """The blob is bigger than the caller is willing to read."""


class BlobConfigError(BlobError, ValueError):
    """The blob store settings are unusable (a bad prefix, a bucket shared unsafely)."""


# Control characters (C0 and C1), lone surrogates, and line/paragraph separators:
# none belongs in a name, and each confuses some log, shell or HTTP layer.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def check_key(key: str) -> str:
    """Return the key unchanged if it is safe everywhere, else raise InvalidKey.

    "Everywhere" includes layers that percent-decode or Unicode-normalise names
    (URL handlers, some filesystems and S3 gateways): the key is checked as
    written and as each of them would read it.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("blob key must be a non-empty string")
    _check_shape(key)
    for view, how in _readings(key):
        try:
            _check_shape(view)
        except InvalidKey as exc:
            raise InvalidKey(f"blob key {key!r} {how} reads as {view!r}: {exc}") from None
    return key


def _check_shape(key: str) -> None:
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in key) or "\\" in key:
        raise InvalidKey("blob key contains control characters, line separators or backslashes")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"blob key is longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey("blob key must be relative (no leading '/')")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey("blob key has an empty, '.' or '..' segment")
    if any(len(part.encode("utf-8")) > MAX_SEGMENT_BYTES for part in parts):
        raise InvalidKey(f"blob key has a segment longer than {MAX_SEGMENT_BYTES} bytes")


def _readings(key: str) -> list[tuple[str, str]]:
    """The other ways a later layer may read the key: percent-decoded, NFKC-normalised."""
    decoded = key
    while "%" in decoded:  # each pass that changes it makes it shorter, so this ends
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    views = [
        (decoded, "percent-decoded"),
        (unicodedata.normalize("NFKC", key), "Unicode-normalised (NFKC)"),
        (unicodedata.normalize("NFKC", decoded), "percent-decoded and normalised"),
    ]
    return [(view, how) for view, how in views if view != key]


def check_folder(prefix: str) -> str:
    """A key prefix meant as a folder: empty, or a valid key with at most one trailing '/'.

    Returned with its trailing '/', so `prefix + key` can never run into a sibling
    (`media` + `x/a` would be `mediax/a`, beside `media/`).
    """
    if prefix == "":
        return ""
    check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix if prefix.endswith("/") else prefix + "/"


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
    """Blobs as files under one folder: the laptop and test stand-in for S3.

    confine_to names a folder inside root (a tenant's namespace) that every
    resolved path must stay in, so a symlink inside one namespace cannot lead
    into another's even though both are inside root.
    """

    def __init__(self, root: str | os.PathLike[str], confine_to: str = "") -> None:
        self.root = Path(root)
        self.confine_to = check_folder(confine_to)

    def confined(self, folder: str) -> LocalBlobStore:
        """The same folder, with every path also kept inside `folder`."""
        return LocalBlobStore(self.root, folder)

    def _path(self, key: str) -> Path:
        check_key(key)
        root = self.root.resolve()
        jail = root / self.confine_to if self.confine_to else root
        path = (root / key).resolve()
        if path == jail or not path.is_relative_to(jail):
            where = f"folder {self.confine_to!r}" if self.confine_to else "blob folder"
            raise InvalidKey(f"blob key {key!r} resolves outside the {where}")
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
    """Blobs as objects in one bucket, under an optional key prefix.

    The prefix is a folder: "media" is kept as "media/", so no key can reach a
    sibling such as "media-archive/". A prefix that is not a valid folder is
    refused (BlobConfigError) rather than used.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        try:
            self.prefix = check_folder(prefix)
        except InvalidKey as exc:
            raise BlobConfigError(f"blob prefix {prefix!r} is not a usable folder: {exc}") from None

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

            config = Config(
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=5,
                proxies=endpoint_proxies(endpoint),  # a MinIO on loopback: direct
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name=region, config=config
            )
            _clients[(endpoint, region)] = client
        return client  # type: ignore[no-any-return]


def location(store: object) -> str | None:
    """Where `store` keeps its blobs, in the settings' terms, for the operator's log
    (never a tenant's error: it names the server's folder or bucket). A missing source
    said only "not found in the blob store", and a worker started in another folder
    looked in that folder's relative SPOOL_BLOB_DIR without a word. A wrapper (a
    tenant's view) is described by what it wraps; a store of one's own, by nothing."""
    inner = getattr(store, "inner", None)
    if inner is not None and inner is not store:
        return location(inner)
    if isinstance(store, LocalBlobStore):
        return (
            f"the folder {os.path.abspath(store.root)} (SPOOL_BLOB_DIR, "
            f"{DEFAULT_BLOB_DIR!r} unless set, from the folder the process started in)"
        )
    if isinstance(store, S3BlobStore):
        return f"s3://{store.bucket}/{store.prefix} (SPOOL_BLOB_BUCKET, SPOOL_BLOB_PREFIX)"
    return None


def open_blob_store(settings: Settings | None = None) -> BlobStore:
    """The store the settings choose: S3 when SPOOL_BLOB_BUCKET is set, else a folder.

    Raises BlobConfigError when the settings would put handler blobs where
    Spool keeps its own objects (see _check_apart).
    """
    settings = settings or Settings.from_env()
    bucket = settings.text("SPOOL_BLOB_BUCKET")
    if bucket:
        prefix = _bucket_prefix(settings, bucket)
        client = _s3_client(
            settings.text("SPOOL_BLOB_ENDPOINT_URL") or None,
            settings.text("SPOOL_BLOB_REGION") or None,
        )
        return S3BlobStore(client, bucket, prefix)
    # Anchored where the process started (os.path.join keeps an absolute one as it is).
    return LocalBlobStore(os.path.join(STARTED_IN, _blob_dir(settings)))


def check_settings(settings: Settings) -> None:
    """BlobConfigError for blob settings no store could open with, checked without
    opening one (no boto3 client): a worker's start runs it (local/builtin_check.py),
    as a bad SPOOL_BLOB_PREFIX otherwise showed only as every resize_image job dead."""
    bucket = settings.text("SPOOL_BLOB_BUCKET")
    if bucket:
        _bucket_prefix(settings, bucket)
    else:
        _blob_dir(settings)


def _bucket_prefix(settings: Settings, bucket: str) -> str:
    raw_prefix = settings.text("SPOOL_BLOB_PREFIX")
    try:
        prefix = check_folder(raw_prefix)
    except InvalidKey as exc:
        raise BlobConfigError(f"SPOOL_BLOB_PREFIX {raw_prefix!r} is not a folder: {exc}") from None
    _check_apart(settings, bucket, prefix)
    return prefix


def _blob_dir(settings: Settings) -> str:
    """SPOOL_BLOB_DIR; `~/blobs` (no shell expands it) wrote under a folder named `~`."""
    folder = settings.text("SPOOL_BLOB_DIR", DEFAULT_BLOB_DIR)
    unexpanded = shell_paths.refusal(folder)
    if unexpanded is not None:
        raise BlobConfigError(f"SPOOL_BLOB_DIR: {unexpanded}")
    return folder


def _check_apart(settings: Settings, bucket: str, prefix: str) -> None:
    """Refuse a blob area that overlaps the DynamoDB store's payload/result objects.

    With the same bucket and no prefix, a tenant whose namespace is "spool" would
    name other tenants' offloaded payloads; with a prefix inside "spool/", a tenant
    named "payloads" would. Either prefix containing the other is an overlap.
    """
    url = urlsplit(settings.store_url)
    if url.scheme != "dynamodb":
        return
    buckets = parse_qs(url.query).get("bucket")
    if not buckets or buckets[-1] != bucket:
        return
    if prefix.startswith(INTERNAL_PREFIX) or INTERNAL_PREFIX.startswith(prefix):
        raise BlobConfigError(
            f"SPOOL_BLOB_BUCKET is the job store's bucket, so SPOOL_BLOB_PREFIX must be a "
            f"folder apart from Spool's own {INTERNAL_PREFIX!r} (for example 'blobs/'), "
            f"not {prefix!r}"
        )
