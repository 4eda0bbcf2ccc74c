"""The SSRF guard for callback URLs: refused at enqueue when they can never be
allowed, checked again (with a fresh DNS answer) before every delivery.

Whoever may enqueue a job chooses its callback URL, and the worker that
delivers it runs inside the network, so a callback URL is held to the same
guard as an `http_request` job (chalicelib/ssrf.py): http or https only, no
credentials, canonical hosts, no metadata, no private, loopback or link-local
address unless the operator opens them. What can be decided without DNS is
decided at enqueue (422); names are resolved and every address checked when
the delivery is made, and the connection goes to a checked address.
"""

from __future__ import annotations

from chalicelib import ssrf
from chalicelib.webhooks.config import MAX_URL_LENGTH, WebhookSettings

# Names that always resolve to this host or to a cloud metadata service: no DNS
# answer can make them allowed, so they are refused at enqueue.
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
LOCAL_SUFFIXES = (".localhost",)
METADATA_NAMES = (
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
)


class CallbackRefused(ValueError):
    """A callback URL the guard can never let out; the message says which rule."""


def check_callback_url(url: str, hooks: WebhookSettings) -> ssrf.Target:
    """Everything decidable without DNS; CallbackRefused (a ValueError) when refused."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    try:
        target = ssrf.check_static(url, hooks.policy)
    except ssrf.Refused as exc:
        raise CallbackRefused(f"callback_url refused: {exc}") from None
    if target.ip is None:
        host = target.host
        if host in METADATA_NAMES:
            raise CallbackRefused(f"callback_url refused: {host!r} is a cloud metadata service")
        local = host in LOCAL_NAMES or host.endswith(LOCAL_SUFFIXES)
        if local and not hooks.policy.allow_private:
            raise CallbackRefused(
                f"callback_url refused: {host!r} is this host (loopback); "
                "SPOOL_WEBHOOK_ALLOW_PRIVATE opens it"
            )
    return target
