"""Where the tenant API keys come from: SPOOL_API_KEYS, or an SSM parameter.

A deployed stage keeps its keys out of the Lambda configuration: the API
function gets SPOOL_API_KEYS_PARAMETER (e.g. /spool/prod/api-keys), a
SecureString parameter holding the same text SPOOL_API_KEYS would
(`sha256:<hex>=tenant,...`, see chalicelib/api/auth.py). Reading it on every
request would cost an SSM call per request and hit its throughput limit, so
each process keeps the value for SPOOL_API_KEYS_TTL seconds (60 by default):
a rotated key takes effect within a minute or so, and a warm container calls
SSM about once a minute.

SPOOL_API_KEYS, when set, wins: local runs and tests need no AWS.

Failure is a 503 (KeysUnavailable), never a 500 and never an open door: a
request whose keys cannot be read is refused with "retry later". A refresh
that fails after a good read keeps serving the last good keys for a while
(an SSM blip must not take the API down), up to STALE_LIMIT seconds past
their TTL. A value that is read but malformed is no blip: only the last good
keys it still lists are kept (_still_listed), so a key taken out stops within
the TTL. The parameter's value is never logged; a malformed value is reported
by the rule it breaks, which Keyring.parse words without the key.

boto3 is imported on the first read, so `import app` stays light.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from chalicelib.api.auth import API_KEYS, HASH_PREFIX, Keyring
from chalicelib.errors import StoreUnavailable

if TYPE_CHECKING:
    from chalicelib.clock import Clock
    from chalicelib.config import Settings

log = logging.getLogger("spool.api.keys")

PARAMETER = "SPOOL_API_KEYS_PARAMETER"
TTL = "SPOOL_API_KEYS_TTL"
REGION = "SPOOL_API_KEYS_REGION"
DEFAULT_TTL = 60.0
MAX_TTL = 3600.0
# After a failed refresh, try again this soon (not a full TTL later)...
RETRY_AFTER = 5.0
# ...and keep answering with the last good keys for at most this long past their TTL.
STALE_LIMIT = 900.0
# SSM parameter names: letters, digits, _.-/ , or a full parameter ARN.
_NAME = re.compile(r"(arn:[a-z-]+:ssm:[a-z0-9-]+:\d{12}:parameter)?/?[A-Za-z0-9_./-]{1,2048}")


class KeysUnavailable(StoreUnavailable):
    """The API keys could not be read (SSM unreachable, denied, or the parameter
    missing or malformed): answer 503 and let the client retry."""

    code = "keys_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "the API keys cannot be read right now; retry shortly", retry_after=int(RETRY_AFTER)
        )


class SsmClient(Protocol):
    def get_parameter(self, *, Name: str, WithDecryption: bool) -> Mapping[str, Any]: ...


def _boto3_client(settings: Settings) -> SsmClient:
    import boto3

    region = settings.text(REGION) or None
    return cast(SsmClient, boto3.client("ssm", region_name=region))


def parameter_name(settings: Settings) -> str | None:
    """The SSM parameter to read, or None when SPOOL_API_KEYS is set or no parameter is."""
    if settings.api_keys.strip():
        return None
    name = settings.text(PARAMETER)
    if not name:
        return None
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{PARAMETER} must be an SSM parameter name such as /spool/prod/api-keys "
            "(letters, digits and _.-/) or a parameter ARN"
        )
    return name


def ttl(settings: Settings) -> float:
    return settings.number(TTL, DEFAULT_TTL, 0, MAX_TTL)


@dataclass
class _Entry:
    text: str
    keys: Keyring
    fresh_until: float  # read again after this
    good_until: float  # refuse (503) after this if every read since has failed


class KeySource:
    """The keys of one process, read through a TTL cache.

    `clock` is for tests (FakeClock); by default time.monotonic() measures the
    TTL. `client` builds the SSM client (boto3 on first use by default).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        client: Callable[[Settings], SsmClient] = _boto3_client,
    ) -> None:
        self._now: Callable[[], float] = time.monotonic
        if clock is not None:
            self._now = lambda: clock.now().timestamp()
        self._make_client = client
        self._client: SsmClient | None = None
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def text(self, settings: Settings) -> str:
        """The SPOOL_API_KEYS-format text in force now."""
        name = parameter_name(settings)
        if name is None:
            return settings.api_keys
        return self._entry(settings, name).text

    def keyring(self, settings: Settings) -> Keyring:
        """The parsed keys in force now (parsed once per distinct value)."""
        name = parameter_name(settings)
        if name is None:
            return _parse(settings.api_keys)
        return self._entry(settings, name).keys

    def cached_keyring(self, settings: Settings) -> Keyring | None:
        """The parsed keys as this process holds them now, without reading SSM (and
        without waiting on a read under way): for `spool serve`'s loop thread, which
        names a request's tenant to give it its turn (local/fair_queue.py). None
        before the parameter was first read."""
        name = parameter_name(settings)
        if name is None:
            return _parse(settings.api_keys)
        entry = self._entries.get(name)  # one dict read: no lock needed to look
        return None if entry is None else entry.keys

    def _entry(self, settings: Settings, name: str) -> _Entry:
        with self._lock:  # one read at a time; the others wait and share it
            entry = self._entries.get(name)
            now = self._now()
            if entry is not None and now < entry.fresh_until:
                return entry
            lifetime = ttl(settings)
            try:
                text = self._read(settings, name)
            except Exception as exc:
                return self._keep(name, entry, now, exc)
            try:
                keys = _parse(text)
            except Exception as exc:
                # The read worked, so the value says which keys are still wanted: keep
                # only those (a key the operator took out stops within the TTL, whatever
                # the typo beside it), and none at all when it lists none of them.
                entry = _still_listed(entry, text)
                if entry is None:
                    self._entries.pop(name, None)
                else:
                    self._entries[name] = entry
                return self._keep(name, entry, now, exc, " it still lists")
            entry = _Entry(text, keys, now + lifetime, now + lifetime + STALE_LIMIT)
            self._entries[name] = entry
            return entry

    def _read(self, settings: Settings, name: str) -> str:
        if self._client is None:
            self._client = self._make_client(settings)
        reply = self._client.get_parameter(Name=name, WithDecryption=True)
        value = reply.get("Parameter", {}).get("Value")
        if not isinstance(value, str):
            raise ValueError("the parameter has no string value")
        from chalicelib.log_redact import key_entries, redactor

        redactor.add(key_entries(value))  # keys from SSM are masked in logs by value too
        return value

    def _keep(
        self, name: str, entry: _Entry | None, now: float, exc: Exception, which: str = ""
    ) -> _Entry:
        """A read failed: keep the last good keys for a while, else refuse with a 503."""
        reason = _describe(exc)
        if entry is not None and now < entry.good_until:
            log.warning("reading API keys from %s failed (%s); keeping the last good keys%s",
                        name, reason, which)  # fmt: skip
            entry.fresh_until = now + RETRY_AFTER
            return entry
        log.error("reading API keys from %s failed (%s): refusing requests with 503", name, reason)
        raise KeysUnavailable() from None

    def forget(self) -> None:
        """Drop what was read (tests; a process that must re-read at once)."""
        with self._lock:
            self._entries.clear()
            self._client = None


def _still_listed(entry: _Entry | None, text: str) -> _Entry | None:
    """Of the last good keys, those a malformed value still lists as a well-formed entry
    (the same key, plain or as its digest, for the same tenant); None when it lists none.

    A malformed value used to keep the last good keys whole for up to STALE_LIMIT, as an
    SSM blip does: the leaked key an operator took out, beside a new key one character
    short, went on working for 15 minutes in every warm container (a cold one answered
    503). Read whole, the value is still the operator's word on which keys are wanted."""
    if entry is None:
        return None
    listed: set[tuple[bytes, str]] = set()
    for item in text.split(","):
        try:
            listed.update(Keyring.parse(item, API_KEYS).entries)
        except ValueError:
            continue  # the malformed entry itself: it names no key to keep
    kept = tuple(pair for pair in entry.keys.entries if pair in listed)
    if not kept:
        return None
    if len(kept) == len(entry.keys.entries):
        return entry
    text = ",".join(f"{HASH_PREFIX}{stored.hex()}={tenant}" for stored, tenant in kept)
    return _Entry(text, Keyring(kept), entry.fresh_until, entry.good_until)


@functools.lru_cache(maxsize=8)
def _parse(text: str) -> Keyring:
    """Parse a key list once per distinct value, not once per request."""
    return Keyring.parse(text, API_KEYS)


def _describe(exc: Exception) -> str:
    """Why a read failed, without the value: botocore's error code, or the parse
    rule that was broken (Keyring.parse never quotes a key)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error", {})
        code = error.get("Code", "") if isinstance(error, Mapping) else ""
        if code == "ParameterNotFound":
            return (
                "ParameterNotFound: create it with `aws ssm put-parameter --type SecureString` "
                "(docs/aws.md)"
            )
        if code:
            return str(code)
    if isinstance(exc, ValueError):
        return f"malformed value: {exc}"
    return type(exc).__name__


# -- the process-wide source -------------------------------------------------------------

_source = KeySource()
_source_lock = threading.Lock()


def source() -> KeySource:
    """The source in force. Read without the lock: reset() replaces it in one
    assignment (the new source built first), so a reader sees the old source or the
    new one, as one that queued for the lock did; every keyed request reads it."""
    return _source


def reset(
    clock: Clock | None = None, client: Callable[[Settings], SsmClient] | None = None
) -> None:
    """Start over with a fresh cache (tests pass a FakeClock and, if they like, a client)."""
    global _source
    with _source_lock:
        _source = KeySource(clock, client or _boto3_client)


def load_api_keys(settings: Settings) -> str:
    """The SPOOL_API_KEYS-format text in force: SPOOL_API_KEYS when set, else the SSM
    parameter SPOOL_API_KEYS_PARAMETER names (cached SPOOL_API_KEYS_TTL seconds).
    Raises KeysUnavailable (503) when the parameter cannot be read."""
    return source().text(settings)


def keyring(settings: Settings) -> Keyring:
    """load_api_keys, parsed: what the HTTP edge checks a request's key against."""
    return source().keyring(settings)


# The region names the AWS SDK takes (botocore's own check): anything else it refuses
# before sending a request, so every read of the keys failed, and every request was
# 503 "retry shortly" though no retry could succeed.
_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")


def validate(settings: Settings) -> None:
    """Check the key settings without reading SSM (at start-up, so a malformed
    SPOOL_API_KEYS, parameter name or region fails the deployment loudly)."""
    if parameter_name(settings) is None:
        _parse(settings.api_keys)
    region = settings.text(REGION)
    if region and not _REGION.fullmatch(region):
        raise ValueError(
            f"{REGION} must be an AWS region name such as us-east-1 (letters, digits and "
            f"-), not {region!r}; leave it unset for the SDK's own region"
        )
    ttl(settings)
