"""Every bounded setting's range is in docs/settings.md, and is the range the code keeps.

`SPOOL_CACHE_RECHECK=120`, `SPOOL_HTTP_MAX_CONNECTIONS=8` or
`SPOOL_WEBHOOK_MAX_RESULT_BYTES=200000` stopped `spool serve` with "must be between ...",
a range the settings page never gave: a newcomer learnt it only by being refused. Each
reader below is the one the settings' own start-up check calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from chalicelib.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
WEBHOOKS = '{"acme": {"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}}'


def _key_ttl(s: Settings) -> object:
    from chalicelib.api import key_source

    return key_source.ttl(s)


def _edge(s: Settings) -> object:
    from chalicelib.edge_settings import value_refusal

    refused = value_refusal({**s.extra, "SPOOL_STORE_URL": "memory://"})
    if refused is not None:
        raise ConfigError(refused[0])
    return None


def _http(s: Settings) -> object:
    from local.http_limits import HttpLimits

    return HttpLimits.from_settings(s)


def _metrics_workers(s: Settings) -> object:
    from chalicelib.api.metric_labels import max_workers

    return max_workers(s)


def _smtp(s: Settings) -> object:
    from chalicelib.builtin.email import SmtpSettings
    from chalicelib.errors import PermanentError

    try:
        return SmtpSettings.from_settings(s)
    except PermanentError as exc:  # how a job of send_email would see it
        raise ConfigError(str(exc)) from None


def _webhooks(s: Settings) -> object:
    from chalicelib.webhooks import config

    return config.from_settings(Settings(extra={**s.extra, "SPOOL_WEBHOOKS": WEBHOOKS}))


# name -> (lowest, highest, the reader that refuses outside them)
RANGES: dict[str, tuple[float, float, Callable[[Settings], object]]] = {
    "SPOOL_API_KEYS_TTL": (0, 3600, _key_ttl),
    "SPOOL_HEALTH_CACHE_SECONDS": (0, 60, _edge),
    "SPOOL_CACHE_RECHECK": (0, 60, _edge),
    "SPOOL_METRICS_MAX_QUEUES": (0, 10000, _edge),
    "SPOOL_METRICS_MAX_WORKERS": (0, 10000, _metrics_workers),
    "SPOOL_HTTP_MAX_CONNECTIONS": (16, 1000000, _http),
    "SPOOL_HTTP_IDLE_TIMEOUT": (0.05, 86400, _http),
    "SPOOL_HTTP_REQUEST_TIMEOUT": (0.05, 3600, _http),
    "SPOOL_HTTP_SEND_TIMEOUT": (0.05, 86400, _http),
    "SPOOL_HTTP_MAX_HEADER_BYTES": (1024, 1048576, _http),
    "SPOOL_SMTP_PORT": (1, 65535, _smtp),
    "SPOOL_WEBHOOK_BACKOFF": (0, 3600, _webhooks),
    "SPOOL_WEBHOOK_BACKOFF_MAX": (0, 86400, _webhooks),
    "SPOOL_WEBHOOK_POLL": (0.01, 60, _webhooks),
    "SPOOL_WEBHOOK_MAX_RESULT_BYTES": (0, 100000, _webhooks),
}


def _meaning(name: str) -> str:
    text = (ROOT / "docs" / "settings.md").read_text()
    row = re.search(rf"^\| `{name}` \|.*$", text, re.M)
    assert row, f"{name} is not in docs/settings.md"
    return row[0].split("|")[5]


def _n(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


@pytest.mark.parametrize("name", sorted(RANGES))
def test_the_range_the_code_keeps_is_the_one_the_docs_give(name: str) -> None:
    low, high, read = RANGES[name]
    read(Settings(extra={name: _n(low)}))
    read(Settings(extra={name: _n(high)}))
    said = rf"{name} must be between {re.escape(_n(low))} and {_n(high)}\b"
    for outside in (low - 1 if low >= 1 else low / 2 if low else -1, high * 2):
        with pytest.raises(ConfigError, match=said):
            read(Settings(extra={name: _n(outside)}))
    documented = rf"(?<![\d.]){re.escape(_n(low))}(-| to ){_n(high)}(?![\d.]\d)"
    assert re.search(documented, _meaning(name)), (name, _meaning(name))


def test_every_log_level_the_code_takes_is_documented() -> None:
    """SPOOL_LOG_LEVEL=CRITICAL was taken, and named in the refusal of a wrong level,
    while the settings page listed DEBUG, INFO, WARNING and ERROR only."""
    from chalicelib import logs

    for level in logs.LEVELS:
        logs.level_of(Settings(extra={"SPOOL_LOG_LEVEL": level}))
        assert level in _meaning("SPOOL_LOG_LEVEL"), level
