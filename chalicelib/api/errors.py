"""One error shape for every refusal: {"error": {"code", "message", "details"}}.

chalicelib.errors gives each engine error its status; this module renders
them, turns pydantic validation failures into 422s and anything unexpected
into a logged 500 that reveals nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError

from chalicelib.api.http import ApiResponse, json_response
from chalicelib.errors import SpoolError, StoreUnavailable, ValidationFailed
from chalicelib.store_outage import describe, is_store_error

# Re-exported: the edge's callers (routes, query) read it here.
from chalicelib.validation_text import validation_details as validation_details

log = logging.getLogger("spool.api")

# A store error no store mapped (a driver's error of a kind not named, a reset socket):
# still the store's failure, not a bug to answer 500. Whether a write it cut short was
# applied is unknown, so the client is told how to retry safely.
STORE_FAILED = (
    "the job store failed while answering this request; try again shortly (check a "
    "change's state before retrying it; an enqueue is safe to retry with the same "
    "idempotency_key)"
)

# Sent with every 401 so clients learn where the key goes (RFC 9110 requires a challenge).
AUTH_CHALLENGE = 'ApiKey header="X-API-Key"'


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> ApiResponse:
    return json_response(status, error_body(code, message, details), headers)


def from_validation(exc: ValidationError, message: str = "request is invalid") -> ValidationFailed:
    return ValidationFailed(message, validation_details(exc))


def from_exception(exc: BaseException) -> ApiResponse:
    if isinstance(exc, ValidationError):
        exc = from_validation(exc)
    if isinstance(exc, SpoolError):
        headers: dict[str, str] = {}
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(exc, StoreUnavailable) or (exc.status == 429 and retry_after is not None):
            headers["Retry-After"] = str(max(1, int(retry_after or 1)))
        elif exc.status == 401:
            headers["WWW-Authenticate"] = AUTH_CHALLENGE
        elif exc.status == 503:
            headers["Retry-After"] = "30"
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)
    if is_store_error(exc):
        log.warning("the job store failed a request, answered 503: %s", describe(exc))
        return error_response(
            503, StoreUnavailable.code, STORE_FAILED, headers={"Retry-After": "5"}
        )
    log.error("unhandled error in the HTTP edge", exc_info=exc)
    return error_response(500, "internal_error", "an internal error occurred")


def answered_error(response: ApiResponse) -> dict[str, str]:
    """A 5xx answer's error code and message, for its request's log line; {} otherwise.

    Store errors Spool maps (a locked SQLite file, a lost DynamoDB table, a refused
    Redis write) are answered without a line of their own, so an API-only process's
    log said "POST /enqueue 503" and never why. The message is what the client read:
    nothing in it is secret."""
    if response.status < 500:
        return {}
    try:
        error = json.loads(response.body)["error"]
        code, message = error["code"], error["message"]
    except (ValueError, TypeError, KeyError):
        return {}
    if not isinstance(code, str) or not isinstance(message, str):
        return {}
    return {"error_code": code, "reason": message}


# Chalice answers a few requests itself (405 for a method a route lacks, 500 when
# a view crashes); these codes rename its errors into ours.
_GATEWAY_CODES = {
    "MethodNotAllowedError": "method_not_allowed",
    "UnsupportedMediaType": "unsupported_media_type",
    "BadRequest": "bad_request",
    "BadRequestError": "bad_request",
    "NotFoundError": "not_found",
    "InternalServerError": "internal_error",
}


def reshape_gateway_error(status: int, body: Any) -> dict[str, Any] | None:
    """Chalice's {"Code", "Message"} error bodies in Spool's shape; None if not one."""
    if not isinstance(body, dict) or set(body) != {"Code", "Message"}:
        return None
    code = _GATEWAY_CODES.get(str(body["Code"]), "internal_error" if status >= 500 else "error")
    message = str(body["Message"]) if status < 500 else "an internal error occurred"
    return error_body(code, message)
