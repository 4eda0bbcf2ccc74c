"""Limits as an operator writes them in the environment, checked into typed values.

- SPOOL_LIMITS: {"type:send_email": {"concurrency": 2}, "queue:images":
  {"concurrency": 4, "rate": "10/s"}}. Replaces, per queue or type, what the
  handler declared in code; `null` lifts a declared limit.
- SPOOL_FAIR_TENANTS: take due jobs in fair turns by tenant; SPOOL_TENANT_WEIGHTS:
  {"acme": 3} gives a tenant that many turns per round.
- SPOOL_TENANT_LIMITS: {"*": {"rate": "50/s", "burst": 100, "backlog": 100000},
  "acme": {"rate": "500/s", "burst": 1000}}: enqueues per tenant (a token
  bucket: refilled at `rate`, holding at most `burst`) and the most jobs a
  tenant may have waiting. "*" applies to every tenant without its own entry;
  an entry names only what it changes.
- SPOOL_AUTH_FAILURES: failed authentications one client may make, as a rate
  ("20/m", the default; "off" turns it off).

Every mistake is a ValueError naming the variable and what is wrong, so start-up
(and the API's `misconfigured` answer) can say it in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from chalicelib.config import QUEUE_NAME, Settings, not_a_tenant
from chalicelib.jsonstrict import loads_strict
from chalicelib.limits import MAX_CONCURRENCY, ClaimPolicy, Limit, Rate

LIMITS = "SPOOL_LIMITS"
FAIR = "SPOOL_FAIR_TENANTS"
WEIGHTS = "SPOOL_TENANT_WEIGHTS"
TENANT_LIMITS = "SPOOL_TENANT_LIMITS"
AUTH_FAILURES = "SPOOL_AUTH_FAILURES"
DEFAULT_AUTH_FAILURES = "20/m"
MAX_BURST = 1_000_000
MAX_BACKLOG = 10**12


def _object(settings: Settings, name: str) -> dict[str, Any]:
    raw = settings.extra.get(name, "").strip()
    if not raw:
        return {}
    try:
        # Strict: a key given twice (json.loads kept the last, silently dropping the
        # operator's first limit) is refused, as SPOOL_WEBHOOKS refuses it.
        data = loads_strict(raw)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} must be a JSON object, not {type(data).__name__}")
    return data


def _rate(name: str, where: str, value: Any) -> Rate:
    try:
        return Rate.parse(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {where}: {exc}") from None


def _whole(name: str, where: str, field: str, value: Any, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise ValueError(f"{name}: {where}: {field} must be a whole number from 1 to {top}")
    return value


def _limit(key: str, body: Any) -> Limit:
    scope, sep, target = key.partition(":")
    if not sep or scope not in ("queue", "type") or not target:
        raise ValueError(
            f"{LIMITS}: {key!r} must name a queue or a type, as 'queue:NAME' or 'type:NAME'"
        )
    if not QUEUE_NAME.fullmatch(target):
        # No job is in a queue (or of a type) so named: the limit would hold nothing,
        # and the one meant ("queue:images " with a space) none of its jobs.
        raise ValueError(
            f"{LIMITS}: {key!r}: {target!r} is no {scope} name (1-64 of A-Z a-z 0-9 _ . : -)"
        )
    if not isinstance(body, dict):
        raise ValueError(f'{LIMITS}: {key}: give an object such as {{"concurrency": 2}}')
    unknown = set(body) - {"concurrency", "rate"}
    if unknown:
        raise ValueError(
            f"{LIMITS}: {key}: unknown field(s) {sorted(unknown)}; use concurrency, rate"
        )
    concurrency = body.get("concurrency")
    if concurrency is not None:
        concurrency = _whole(LIMITS, key, "concurrency", concurrency, MAX_CONCURRENCY)
    rate = None if body.get("rate") is None else _rate(LIMITS, key, body["rate"])
    if concurrency is None and rate is None:
        raise ValueError(f"{LIMITS}: {key}: set concurrency, rate or both (null lifts a limit)")
    return Limit(scope, target, concurrency, rate)  # type: ignore[arg-type]


def claim_policy(settings: Settings, declared: tuple[Limit, ...] = ()) -> ClaimPolicy | None:
    """The policy workers claim under: declared limits, settings' overrides, fairness."""
    table = {limit.key: limit for limit in declared}
    for key, body in _object(settings, LIMITS).items():
        if body is None:
            table.pop(key, None)
            _limit(key, {"concurrency": 1})  # the key itself must still be well formed
        else:
            table[key] = _limit(key, body)
    weights: dict[str, int] = {}
    for tenant, weight in _object(settings, WEIGHTS).items():
        weights[_tenant(WEIGHTS, tenant)] = _whole(
            WEIGHTS, repr(tenant), "the weight", weight, 1000
        )
    policy = ClaimPolicy(tuple(table.values()), settings.flag(FAIR), weights)
    return policy if policy.active else None


@dataclass(frozen=True)
class TenantLimit:
    """What one tenant may enqueue: a token bucket and a cap on waiting jobs."""

    rate: Rate | None = None
    burst: int | None = None
    backlog: int | None = None

    @property
    def bucket(self) -> tuple[float, int] | None:
        """(tokens per second, capacity), or None when enqueues are not rate limited."""
        if self.rate is None:
            return None
        per_second = self.rate.count / self.rate.per
        return per_second, self.burst if self.burst is not None else self.rate.count


@dataclass(frozen=True)
class TenantLimits:
    default: TenantLimit
    tenants: Mapping[str, TenantLimit]

    def of(self, tenant: str) -> TenantLimit:
        return self.tenants.get(tenant, self.default)

    @property
    def active(self) -> bool:
        return any(
            t.rate is not None or t.backlog is not None
            for t in (self.default, *self.tenants.values())
        )


def _tenant_limit(where: str, body: Any, base: TenantLimit) -> TenantLimit:
    if not isinstance(body, dict):
        raise ValueError(f'{TENANT_LIMITS}: {where}: give an object such as {{"rate": "50/s"}}')
    unknown = set(body) - {"rate", "burst", "backlog"}
    if unknown:
        raise ValueError(
            f"{TENANT_LIMITS}: {where}: unknown field(s) {sorted(unknown)}; "
            "use rate, burst, backlog"
        )
    parsers: dict[str, Callable[[Any], Any]] = {
        "rate": lambda v: _rate(TENANT_LIMITS, where, v),
        "burst": lambda v: _whole(TENANT_LIMITS, where, "burst", v, MAX_BURST),
        "backlog": lambda v: _whole(TENANT_LIMITS, where, "backlog", v, MAX_BACKLOG),
    }
    out = base
    for name, parse in parsers.items():
        if name in body:  # null lifts what "*" set
            out = replace(out, **{name: None if body[name] is None else parse(body[name])})
    if out.burst is not None and out.rate is None:
        raise ValueError(f"{TENANT_LIMITS}: {where}: a burst needs a rate")
    return out


def _tenant(name: str, tenant: str) -> str:
    """An entry's tenant, which must be a name SPOOL_API_KEYS could give a key (the
    queue names' alphabet): "acme " with a stray space was taken, never matched, and
    left the tenant it meant without its limit or weight."""
    if not QUEUE_NAME.fullmatch(tenant):
        raise ValueError(f"{name}: {not_a_tenant(repr(tenant))}")
    return tenant


def tenant_limits(settings: Settings) -> TenantLimits:
    data = _object(settings, TENANT_LIMITS)
    default = _tenant_limit('"*"', data.pop("*", {}), TenantLimit())
    return TenantLimits(
        default,
        {
            _tenant(TENANT_LIMITS, tenant): _tenant_limit(repr(tenant), body, default)
            for tenant, body in data.items()
        },
    )


def auth_failures(settings: Settings) -> Rate | None:
    raw = settings.extra.get(AUTH_FAILURES, "").strip() or DEFAULT_AUTH_FAILURES
    if raw.lower() in ("off", "0", "none"):
        return None
    return _rate(AUTH_FAILURES, "failed authentications per client", raw)


def validate(settings: Settings) -> None:
    """Check every limit setting at start-up (`spool serve`, `spool worker`), so a typo
    stops the command with one line instead of surfacing per request or per claim."""
    from chalicelib.config import ConfigError

    try:
        claim_policy(settings)
        tenant_limits(settings)
        auth_failures(settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
