"""Which callback URL a new job gets, decided at enqueue (service.build calls this).

The job's own `callback_url` wins; without one, its tenant's default endpoint
(SPOOL_WEBHOOKS) is used. Either way the URL is remembered with the job, so a
later change of the tenant's default does not redirect jobs already queued
(the secrets, by contrast, are read at delivery time, so a rotation applies to
every delivery from then on). A URL the guard can never allow, or a tenant with
no secret to sign with, is refused here: a 422 now instead of a webhook that
can never be delivered.
"""

from __future__ import annotations

from chalicelib.config import Settings
from chalicelib.errors import ValidationFailed
from chalicelib.webhooks import config, guard


def callback_for(requested: str | None, tenant: str, settings: Settings) -> str | None:
    raw = settings.extra.get("SPOOL_WEBHOOKS", "")
    if requested is None and not raw.strip():
        return None  # the common case: no webhooks anywhere, nothing parsed
    hooks = config.from_settings(settings)
    entry = hooks.tenant(tenant)
    url = requested if requested is not None else (entry.url if entry else None)
    if url is None:
        return None
    if entry is None or not entry.keys:
        raise ValidationFailed(
            "callback_url needs a webhook secret for this tenant, and none is configured "
            "(SPOOL_WEBHOOKS); ask the operator to add one",
            {"field": "callback_url"},
        )
    if requested is not None:  # the operator's own default is checked at delivery
        try:
            guard.check_callback_url(url, hooks)
        except guard.CallbackRefused as exc:
            raise ValidationFailed(str(exc), {"field": "callback_url"}) from None
    return url
