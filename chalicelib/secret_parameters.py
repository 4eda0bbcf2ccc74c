"""Secrets a setting may name in SSM instead of holding: `<SETTING>_PARAMETER`.

On AWS a Lambda function's environment is readable by anyone who may read its
configuration (lambda:GetFunctionConfiguration, the console, a CloudFormation
template's parameters), so a deployed stage keeps secrets in SSM Parameter Store as
SecureString parameters, as the API keys are (chalicelib/api/key_source.py):
SPOOL_SMTP_PASSWORD_PARAMETER=/spool/prod/smtp-password instead of
SPOOL_SMTP_PASSWORD=... . The plain setting, when set, still wins: local runs and
tests need no AWS.

A parameter is read when a secret is first needed (not at import, not at start: the
API function, which never sends mail, never reads the SMTP password), then kept for
TTL seconds, so a rotation lands within that and a busy worker calls SSM about once
per TTL. Each value read is masked in every log line from then on
(chalicelib/log_redact.py). A read that fails raises SecretUnavailable, which names
the parameter and AWS's error code, never a value: the job that needed it is
retried as for any passing outage. boto3 is imported on the first read only.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from chalicelib.config import Settings

# The settings that may come from a parameter -> the setting naming it (docs/settings.md).
PARAMETER_OF = {
    "SPOOL_SMTP_PASSWORD": "SPOOL_SMTP_PASSWORD_PARAMETER",
    "SPOOL_WEBHOOKS": "SPOOL_WEBHOOKS_PARAMETER",  # chalicelib/webhooks/source.py
}
TTL = 300.0
# SSM parameter names: letters, digits, _.-/ , or a full parameter ARN.
_NAME = re.compile(r"(arn:[a-z-]+:ssm:[a-z0-9-]+:\d{12}:parameter)?/?[A-Za-z0-9_./-]{1,2048}")


class SecretUnavailable(RuntimeError):
    """A secret's parameter could not be read (SSM unreachable, denied, missing)."""


class SsmClient(Protocol):
    def get_parameter(self, *, Name: str, WithDecryption: bool) -> Mapping[str, Any]: ...


def _boto3_client() -> SsmClient:
    import boto3

    return cast(SsmClient, boto3.client("ssm"))


def parameter_of(settings: Settings, setting: str) -> str:
    """The parameter `setting` is read from ("" when the plain setting is set, or
    no parameter is); ValueError for a name SSM could not hold."""
    where = PARAMETER_OF[setting]
    if settings.extra.get(setting, ""):
        return ""
    name = settings.text(where)
    if name and not _NAME.fullmatch(name):
        raise ValueError(
            f"{where} must be an SSM parameter name such as "
            "/spool/prod/smtp-password (letters, digits and _.-/) or a parameter ARN"
        )
    return name


class ParameterCache:
    """Parameter values of one process, each kept TTL seconds."""

    def __init__(
        self,
        client: Callable[[], SsmClient] = _boto3_client,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make_client = client
        self._client: SsmClient | None = None
        self._now = now
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def read(self, name: str, parts: Callable[[str], Iterable[str]] | None = None) -> str:
        """The value of `name`; `parts` names the secrets inside a value that holds
        several (SPOOL_WEBHOOKS' JSON), each masked in the logs with the whole."""
        with self._lock:  # one read at a time; the others wait and share it
            held = self._values.get(name)
            if held is not None and self._now() < held[1]:
                return held[0]
            try:
                if self._client is None:
                    self._client = self._make_client()
                reply = self._client.get_parameter(Name=name, WithDecryption=True)
                value = reply.get("Parameter", {}).get("Value")
            except Exception as exc:
                raise SecretUnavailable(
                    f"the SSM parameter {name} cannot be read ({_code(exc)})"
                ) from None
            if not isinstance(value, str) or not value:
                raise SecretUnavailable(f"the SSM parameter {name} holds no value")
            from chalicelib.log_redact import redactor

            redactor.add([value, *(parts(value) if parts is not None else ())])
            self._values[name] = (value, self._now() + TTL)
            return value


def _code(exc: Exception) -> str:
    """Why a read failed, without any value: botocore's error code, or the type."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error", {})
        code = error.get("Code", "") if isinstance(error, Mapping) else ""
        if code == "ParameterNotFound":
            return "ParameterNotFound: create it with `aws ssm put-parameter --type SecureString`"
        if code:
            return str(code)
    return type(exc).__name__


_cache = ParameterCache()


def reset(client: Callable[[], SsmClient] | None = None) -> None:
    """Start over with an empty cache (tests pass a client if they like)."""
    global _cache
    _cache = ParameterCache(client or _boto3_client)


def read(name: str, parts: Callable[[str], Iterable[str]] | None = None) -> str:
    """The value of parameter `name`, through the process's cache (`parts`: see
    ParameterCache.read)."""
    return _cache.read(name, parts)


def secret(settings: Settings, setting: str) -> str:
    """`setting`'s value: the plain setting when set, else its parameter's, else ""."""
    name = parameter_of(settings, setting)
    return read(name) if name else settings.extra.get(setting, "")
