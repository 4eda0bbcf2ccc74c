"""Which blobs a tenant's jobs may touch: only those under the tenant's namespace.

The rule is one line: every key a job reads or writes begins with
`<namespace>/`, where the namespace is the tenant's name, written so it is
always one safe, lowercase path segment. Handlers check their payload's keys
with `check_tenant_key` at enqueue (their `admit` hook: 422) and again when the
job runs (jobs stored before the rule, or by another path), and do their I/O
through `TenantBlobStore`, which refuses any other key at the store itself.

The namespace. Tenant names come from SPOOL_API_KEYS ([A-Za-z0-9_.:-], so "."
and ".." are valid names) or the CLI's --tenant (anything). Lowercase letters,
digits, "-", "_" and any "." but a leading one are kept; every other character
(uppercase, ":", a leading ".", anything else) becomes "~" and the two hex digits
of each of its UTF-8 bytes. So:

- "tenant-a" -> "tenant-a", "Acme" -> "~41cme", ".." -> "~2e.", "a:b" -> "a~3ab";
- no namespace is "", ".", ".." or contains "/", so none escapes the store;
- "~" never occurs in a tenant name, so two tenants never share a namespace;
- namespaces are lowercase ASCII, so they stay distinct on a case-insensitive
  or Unicode-normalising filesystem (a macOS laptop, MinIO on one), where
  "Acme/" and "acme/" would be the same folder.

The "/" after the namespace is part of the rule: "tenant-ab/x" is not in
"tenant-a"'s namespace. Keys compare exactly (case-sensitive), and check_key
has already refused keys that percent-decoding or NFKC normalisation would turn
into something else structurally, so what is checked is what every layer reads.
"""

from __future__ import annotations

from chalicelib.blobs import BlobStore, InvalidKey, LocalBlobStore, check_folder, check_key

_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def tenant_namespace(tenant: str) -> str:
    """The tenant's folder name: injective, lowercase ASCII, never '.', '..' or empty."""
    if not tenant:
        raise InvalidKey("a job without a tenant cannot use the blob store")
    out: list[str] = []
    for index, char in enumerate(tenant):
        if char in _KEPT and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"~{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def check_tenant_key(key: str, tenant: str) -> str:
    """Return the key if it is safe and in the tenant's namespace, else raise InvalidKey."""
    check_key(key)
    namespace = tenant_namespace(tenant)
    if not key.startswith(namespace + "/"):
        raise InvalidKey(
            f"blob key {key!r} is outside this tenant's namespace: "
            f"keys must begin with {namespace + '/'!r}"
        )
    return key


def check_tenant_prefix(prefix: str, tenant: str) -> str:
    """Check a key prefix (an output folder, or a name stem) the same way as a key.

    A prefix need not end in '/', but it must already be inside the namespace:
    "tenant-a/thumbs" gives "tenant-a/thumbs320x240.jpg", still tenant-a's, while
    "tenant-a" alone would give "tenant-a320x240.jpg", nobody's.
    """
    try:
        check_folder(prefix)
    except InvalidKey as exc:
        raise InvalidKey(f"key prefix {prefix!r} is invalid: {exc}") from None
    namespace = tenant_namespace(tenant)
    if not prefix.startswith(namespace + "/"):
        raise InvalidKey(
            f"key prefix {prefix!r} is outside this tenant's namespace: "
            f"it must begin with {namespace + '/'!r}"
        )
    return prefix


class TenantBlobStore:
    """A tenant's view of a blob store: the same keys, but only the tenant's.

    Every operation checks its key first, so a handler bug or a payload stored
    before admission existed still cannot reach another tenant's blobs. On a local
    folder, paths are also confined to the namespace's folder (symlinks included).
    """

    def __init__(self, inner: BlobStore, tenant: str) -> None:
        self.tenant = tenant
        self.namespace = tenant_namespace(tenant)
        if isinstance(inner, LocalBlobStore):
            inner = inner.confined(self.namespace)
        self.inner = inner

    def _check(self, key: str) -> str:
        return check_tenant_key(key, self.tenant)

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        return self.inner.get(self._check(key), max_bytes)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.inner.put(self._check(key), data, content_type)

    def exists(self, key: str) -> bool:
        return self.inner.exists(self._check(key))

    def delete(self, key: str) -> None:
        self.inner.delete(self._check(key))
