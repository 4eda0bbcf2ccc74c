"""Where the tenants' webhook settings come from: SPOOL_WEBHOOKS, or the SSM
SecureString SPOOL_WEBHOOKS_PARAMETER names.

SPOOL_WEBHOOKS holds every tenant's signing secrets, and on AWS a function's
environment is readable by anyone who may read its configuration. A deployed stage
keeps the same JSON in a SecureString parameter instead
(SPOOL_WEBHOOKS_PARAMETER=/spool/prod/webhooks), read through
chalicelib/secret_parameters.py: on first need (an enqueue, a delivery; never at
import or start), kept TTL seconds, each signing secret in it masked in every log
line once read. SPOOL_WEBHOOKS, when set, wins: local runs and tests need no AWS.

Every reader goes through here: whether webhooks are on (`configured`, which reads
nothing), the text to parse (`text`), and the name messages give it (`label`). A
read that fails is WebhooksUnavailable, a 503 on the API naming the parameter (the
enqueue stores nothing) and, on a worker, a pause before claiming deliveries
(chalicelib/webhooks/deliver.py), so none spends an attempt while SSM is away.
"""

from __future__ import annotations

from chalicelib import secret_parameters
from chalicelib.config import ConfigError, Settings
from chalicelib.errors import StoreUnavailable

SETTING = "SPOOL_WEBHOOKS"
PARAMETER = "SPOOL_WEBHOOKS_PARAMETER"  # as secret_parameters.PARAMETER_OF[SETTING]
RETRY_AFTER = 5


class WebhooksUnavailable(StoreUnavailable):
    """The webhook settings' parameter cannot be read (SSM unreachable, denied,
    missing): answer 503 and let the client retry; a worker waits it out."""

    code = "webhooks_unavailable"

    def __init__(self, name: str, why: str) -> None:
        # The client reads which parameter (its operator's to fix), not AWS's error
        # code; the log line (routes._failure) and a worker's say both.
        super().__init__(
            f"the webhook settings cannot be read: {why} ({PARAMETER})",
            retry_after=RETRY_AFTER,
            public=f"the webhook settings cannot be read right now (the SSM parameter "
            f"{name}, {PARAMETER}): nothing was stored; retry shortly",
        )


def configured(settings: Settings) -> bool:
    """Whether webhooks are on: SPOOL_WEBHOOKS set, or a parameter named. Reads nothing."""
    return bool(settings.extra.get(SETTING, "").strip() or settings.text(PARAMETER))


def parameter(settings: Settings) -> str:
    """The parameter the settings come from: "" when SPOOL_WEBHOOKS is set or none is
    named; ConfigError for a name SSM could not hold."""
    try:
        return secret_parameters.parameter_of(settings, SETTING)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def label(name: str) -> str:
    """What messages call the value read from parameter `name` (parameter()'s answer,
    "" for none): the parameter's value, or SPOOL_WEBHOOKS."""
    return f"{PARAMETER}'s value" if name else SETTING


def text(settings: Settings, name: str) -> str:
    """The SPOOL_WEBHOOKS JSON in force, given parameter()'s answer `name`: the plain
    setting, else the parameter's value (read through the cache; WebhooksUnavailable
    when it cannot be), else ""."""
    if not name:
        return settings.extra.get(SETTING, "")
    from chalicelib.log_redact import webhook_secrets

    try:
        return secret_parameters.read(name, webhook_secrets)
    except secret_parameters.SecretUnavailable as exc:
        raise WebhooksUnavailable(name, str(exc)) from None
