"""Which callback URL a new job gets, decided at enqueue (service.build calls this).

The job's own `callback_url` wins; without one, its tenant's default endpoint
(SPOOL_WEBHOOKS, or its parameter: source.py) is used. Either way the URL is
remembered with the job, so a later change of the tenant's default does not
redirect jobs already queued (the secrets, by contrast, are read at delivery time,
so a rotation applies to every delivery from then on). A URL the guard can never
allow, or a tenant with no secret to sign with, is refused here: a 422 now instead
of a webhook that can never be delivered.

From SPOOL_WEBHOOKS_PARAMETER the settings are first read here, at an enqueue (any
enqueue: the tenant's default endpoint is in them), before anything is stored: a
parameter SSM will not give is a 503 naming it (source.WebhooksUnavailable), and a
malformed value a 503 misconfigured whose log line names the rule it breaks, as a
malformed SPOOL_WEBHOOKS is at start. Neither stores any job of the request.
"""

from __future__ import annotations

import logging

from chalicelib.config import ConfigError, Settings
from chalicelib.errors import Misconfigured, ValidationFailed
from chalicelib.webhooks import config, guard, source

log = logging.getLogger("spool.webhooks")


def callback_for(requested: str | None, tenant: str, settings: Settings) -> str | None:
    if requested is None and not source.configured(settings):
        return None  # the common case: no webhooks anywhere, nothing parsed
    try:
        hooks = config.from_settings(settings)
    except ConfigError as exc:
        if not source.parameter(settings):
            raise  # SPOOL_WEBHOOKS is checked at start; a caller's own settings, its own
        # Not the message: it names other tenants. The operator reads it in the log.
        log.error("an enqueue was refused, the webhook settings are malformed: %s", exc)
        raise Misconfigured() from None
    entry = hooks.tenant(tenant)
    url = requested if requested is not None else (entry.url if entry else None)
    if url is None:
        return None
    if entry is None or not entry.keys:
        raise ValidationFailed(
            "callback_url needs a webhook secret for this tenant, and none is configured "
            f"({source.SETTING}); ask the operator to add one",
            {"field": "callback_url"},
        )
    if requested is not None:  # the operator's own default is checked at delivery
        try:
            guard.check_callback_url(url, hooks)
        except guard.CallbackRefused as exc:
            raise ValidationFailed(str(exc), {"field": "callback_url"}) from None
    return url
