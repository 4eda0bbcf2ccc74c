"""What webhooks read from the settings: per-tenant endpoints and secrets, the
guard's allowlist, and the delivery knobs.

SPOOL_WEBHOOKS (or the SSM parameter SPOOL_WEBHOOKS_PARAMETER names: source.py) is a
JSON object keyed by tenant:

    {"acme": {"url": "https://acme.example/hooks/spool",
              "secrets": ["whsec_NEW...", "whsec_OLD..."]}}

`url` (optional) is the tenant's default endpoint: jobs enqueued without a
`callback_url` are delivered there. `secrets` (one or two: two while rotating;
"secret" is accepted for one) sign every delivery of that tenant's jobs. A
tenant without a secret cannot ask for webhooks (422 at enqueue): Spool never
sends an unsigned one.

Parsed once per distinct value (cached), so enqueue and every delivery pass pay
for the JSON once per process.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib import ssrf
from chalicelib.builtin import setting_values
from chalicelib.config import QUEUE_NAME, ConfigError, Settings, not_a_tenant
from chalicelib.ports import WEB_PORTS, PortSet
from chalicelib.webhooks import source
from chalicelib.webhooks.signing import SECRET_PREFIX, decode_secret

ALLOWLIST = "SPOOL_WEBHOOK_ALLOWLIST"
PORTS = "SPOOL_WEBHOOK_PORTS"

MAX_SECRETS = 2
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class TenantHooks:
    url: str | None
    keys: tuple[bytes, ...]  # decoded secrets: the first is the newest


@dataclass(frozen=True)
class WebhookSettings:
    tenants: Mapping[str, TenantHooks]
    policy: ssrf.Policy
    ca_file: str | None
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    timeout: float
    concurrency: int
    poll: float
    max_result_bytes: int
    # What messages call the tenants' setting (source.label).
    source: str = source.SETTING

    @property
    def lease_seconds(self) -> float:
        """Longer than any one attempt can take, so a live attempt never loses its lease."""
        return self.timeout * 2 + 5

    def tenant(self, tenant: str) -> TenantHooks | None:
        return self.tenants.get(tenant)


CA_FILE = "SPOOL_WEBHOOK_CA_FILE"


def from_settings(settings: Settings, tenants: bool = True) -> WebhookSettings:
    """Every webhook setting, checked; a malformed one is a ConfigError naming it.

    The tenants come from SPOOL_WEBHOOKS or its parameter (source.text: an SSM read,
    cached; WebhooksUnavailable when it fails). `tenants=False` leaves them out (an
    empty map) and reads nothing: what `validate` checks at start."""
    try:
        hooks = WebhookSettings(
            tenants={},
            policy=_policy(
                settings.extra.get(ALLOWLIST, ""),
                settings.flag("SPOOL_WEBHOOK_ALLOW_PRIVATE"),
                settings.text(PORTS) or WEB_PORTS,
            ),
            # Checked as SPOOL_HTTP_CA_FILE is: one naming no file started the worker
            # without a word, and every https delivery then failed.
            ca_file=setting_values.named(CA_FILE, setting_values.ca_file, settings.text(CA_FILE)),
            max_attempts=settings.integer("SPOOL_WEBHOOK_MAX_ATTEMPTS", 10, 1, 100),
            backoff_base=settings.number("SPOOL_WEBHOOK_BACKOFF", 5.0, 0.0, 3600.0),
            backoff_cap=settings.number("SPOOL_WEBHOOK_BACKOFF_MAX", 3600.0, 0.0, 86400.0),
            timeout=settings.number("SPOOL_WEBHOOK_TIMEOUT", 10.0, 0.1, 50.0),
            concurrency=settings.integer("SPOOL_WEBHOOK_CONCURRENCY", 4, 1, 64),
            poll=settings.number("SPOOL_WEBHOOK_POLL", 1.0, 0.01, 60.0),
            max_result_bytes=settings.integer("SPOOL_WEBHOOK_MAX_RESULT_BYTES", 65536, 0, 100_000),
        )
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_default_ports(hooks)
    given = bool(settings.text("SPOOL_WEBHOOK_BACKOFF"))
    if given and hooks.backoff_base > hooks.backoff_cap:
        # As a handler's backoff=(600, 5): every retry waited the cap, the base meant
        # nothing. (SPOOL_WEBHOOK_BACKOFF_MAX alone below the default base is a plain
        # ceiling, and works as one: every step is at most the cap.)
        raise ConfigError(
            f"SPOOL_WEBHOOK_BACKOFF ({hooks.backoff_base:g}) is more than "
            f"SPOOL_WEBHOOK_BACKOFF_MAX ({hooks.backoff_cap:g}): the first is the first "
            "retry's wait, the second the most any retry waits; lower the first or raise "
            "the second"
        )
    if tenants:
        hooks = _with_tenants(hooks, settings)
    return hooks


def validate(settings: Settings) -> WebhookSettings:
    """What can be checked without reading SSM, for a process that starts (the API's
    edge, `spool serve`, a worker's deliverer): every knob, the parameter's name, and
    the tenants when SPOOL_WEBHOOKS holds them. From the parameter, the tenants are
    left out (empty) and read when first needed."""
    return from_settings(settings, tenants=not source.parameter(settings))


def _with_tenants(hooks: WebhookSettings, settings: Settings) -> WebhookSettings:
    """`hooks` with the tenants in force, checked (their default endpoints' ports too)."""
    name = source.parameter(settings)
    label = source.label(name)
    raw = source.text(settings, name)
    try:
        hooks = dataclasses.replace(hooks, tenants=parse_tenants(raw, label), source=label)
        _check_default_ports(hooks)
    except ConfigError as exc:
        if not name:
            raise
        raise ConfigError(f"{exc} (the SSM parameter {name})") from None
    return hooks


@functools.lru_cache(maxsize=8)
def parse_tenants(raw: str, label: str = source.SETTING) -> Mapping[str, TenantHooks]:
    """SPOOL_WEBHOOKS as {tenant: TenantHooks}; ConfigError saying what is wrong, under
    `label` (source.label: the parameter's value, when it comes from there).

    Secrets never appear in the message: only which tenant's entry is bad."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, object_pairs_hook=_unique)
    except _Repeated as exc:  # two entries for one tenant: which one was meant?
        name = _shown(exc.name)
        raise ConfigError(f"{label} gives {name} twice in one object; keep one") from None
    except ValueError:
        raise ConfigError(
            f'{label} must be a JSON object: {{"tenant": {{"url": "https://...", '
            '"secrets": ["whsec_..."]}}'
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label} must be a JSON object keyed by tenant")
    out: dict[str, TenantHooks] = {}
    signs_for: dict[bytes, str] = {}  # each key, decoded, and the tenant it signs for
    for tenant, entry in data.items():
        if not QUEUE_NAME.fullmatch(tenant):  # "acme " was taken and matched no key's tenant
            raise ConfigError(f"{label}: {not_a_tenant(_shown(tenant))}")
        where = f"{label}[{_shown(tenant)}]"
        if not isinstance(entry, dict):
            raise ConfigError(f'{where} must be an object with "url" and "secrets"')
        _refuse_unknown_fields(where, entry)
        secrets = _secrets(where, entry)
        if not isinstance(secrets, list) or not 1 <= len(secrets) <= MAX_SECRETS:
            raise ConfigError(f"{where}: give 1 or {MAX_SECRETS} secrets (two while rotating)")
        keys = []
        for position, secret in enumerate(secrets):
            if not isinstance(secret, str):
                raise ConfigError(f"{where}: secret {position + 1} must be a string")
            try:
                key = decode_secret(secret)
            except ValueError as exc:
                raise ConfigError(f"{where}: secret {position + 1}: {exc}") from None
            _refuse_shared(signs_for, key, tenant, label)
            keys.append(key)
        url = entry.get("url")
        if url is not None and (not isinstance(url, str) or not url):
            raise ConfigError(f"{where}: url must be a non-empty string")
        if url is not None:  # its shape now; its addresses at each delivery (guard.py)
            try:
                ssrf.parse_url(url)  # messages name the rule, never a password in the URL
            except ssrf.Refused as exc:
                raise ConfigError(f"{where}: url: {exc}") from None
        out[tenant] = TenantHooks(url, tuple(keys))
    return out


def _refuse_shared(signs_for: dict[bytes, str], key: bytes, tenant: str, label: str) -> None:
    """Refuse a key that already signs for another tenant.

    The signature is all that tells a receiver which tenant a delivery is for: the body
    names no tenant, and a tenant picks any callback_url its jobs are delivered to.
    Two tenants with one key could each have Spool send the other's receiver deliveries
    it verifies as its own (a job.succeeded, with a result, for a job it never made).
    Compared decoded: two spellings of one key in base64 ("AA==" and "AB==") are one
    key. One tenant giving one key twice is only redundant, and is let be."""
    other = signs_for.setdefault(key, tenant)
    if other != tenant:
        raise ConfigError(
            f"{label}: {_shown(other)} and {_shown(tenant)} have the same webhook "
            "secret, so either could send deliveries the other's receiver takes as its "
            "own; give each tenant a secret of its own"
        )


class _Repeated(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose names are all different (json.loads keeps the last silently)."""
    out: dict[str, object] = {}
    for name, value in pairs:
        if name in out:
            raise _Repeated(name)
        out[name] = value
    return out


ENTRY_FIELDS = ("url", "secrets", "secret")


def _secrets(where: str, entry: Mapping[str, object]) -> object:
    """An entry's secrets: "secrets" (a list), or "secret" (one, a string). A list
    given as "secret" was refused as "secret 1 must be a string" (it was, inside the
    list), and "secret" beside "secrets" was dropped without a word."""
    if "secret" not in entry:
        return entry.get("secrets", [])
    if "secrets" in entry:
        raise ConfigError(
            f'{where}: give "secrets" (a list) or "secret" (one), not both: '
            'put every secret in "secrets"'
        )
    if isinstance(entry["secret"], list):
        raise ConfigError(
            f'{where}: "secret" takes one secret, as a string; '
            'give a list as "secrets": ["whsec_..."]'
        )
    return [entry["secret"]]


def _refuse_unknown_fields(where: str, entry: Mapping[str, object]) -> None:
    """A misspelt field (`urll`) named, as SPOOL_LIMITS names one: "must be an object
    with url and secrets" left the newcomer to find the letter."""
    unknown = [name for name in entry if name not in ENTRY_FIELDS]
    if unknown:
        shown = ", ".join(_shown(name) for name in unknown)
        raise ConfigError(f"{where}: unknown field(s) {shown}; use url, secrets")


def _shown(name: str) -> str:
    """A tenant name for an error message: a secret pasted where the tenant goes is not shown."""
    return repr(SECRET_PREFIX + "...") if name.startswith(SECRET_PREFIX) else repr(name)


def _check_default_ports(hooks: WebhookSettings) -> None:
    """A tenant's default endpoint on a port the guard refuses would fail every
    delivery: refused at start, as a malformed one is (its URL is not shown)."""
    ports = hooks.policy.ports
    for tenant, entry in hooks.tenants.items():
        if entry.url is None or ports is None:
            continue
        port = ssrf.parse_url(entry.url).port
        if port not in ports:
            raise ConfigError(
                f"{hooks.source}[{_shown(tenant)}]: url: port {port} is not one "
                f"{PORTS} allows ({ports.text})"
            )


@functools.lru_cache(maxsize=8)
def _ports(raw: str) -> PortSet:
    try:
        return PortSet.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{PORTS}: {exc}") from None


@functools.lru_cache(maxsize=8)
def _policy(allowlist: str, allow_private: bool, ports_text: str) -> ssrf.Policy:
    """Empty allowlist: any public host (callback URLs point at the tenant's own
    systems, which Spool cannot list in advance); private, loopback and the other
    non-public ranges only with SPOOL_WEBHOOK_ALLOW_PRIVATE or an allowlisted CIDR;
    metadata addresses never. A list narrows it to those hosts. Either way only
    the ports SPOOL_WEBHOOK_PORTS names (by default 80, 443 and 1024-65535)."""
    ports = _ports(ports_text)
    entries = [e for e in (p.strip() for p in allowlist.split(",")) if e]
    if not entries:
        return ssrf.Policy(
            suffixes=("",),  # every name
            # Wide CIDRs: the guard opens only public addresses through them.
            networks=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")),
            allow_private=allow_private,
            setting=ALLOWLIST,
            ports=ports,
            ports_setting=PORTS,
        )
    try:
        policy = ssrf.Policy.parse(entries, allow_private, ALLOWLIST)
    except ValueError as exc:
        raise ConfigError(f"{ALLOWLIST}: {exc}") from None
    return dataclasses.replace(policy, ports=ports, ports_setting=PORTS)
