"""Signed completion webhooks (docs/webhooks.md).

A job that carries a callback URL gets one delivery in the store's outbox,
written in the same transaction as its terminal transition (outbox.py says what
a delivery is); workers deliver them (deliver.py), signed per the Standard
Webhooks specification (signing.py), through the SSRF guard (guard.py), with
the tenant's endpoint and secrets (config.py). Nothing here is imported on the
API's cold path except what enqueue needs to check a callback URL.
"""
