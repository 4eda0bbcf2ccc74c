"""Keep secrets out of every log line: configured ones by value, the rest by shape.

Two kinds of secret reach a process. Some it is configured with: API keys
(SPOOL_API_KEYS, SPOOL_METRICS_KEYS, or the SSM parameter), the SMTP password,
the store's and the Pushgateway's URL passwords, any SPOOL_* setting named like a
password, secret or token (or ending in _KEY), and the variables
SPOOL_SECRET_VARIABLES names. Those are masked wherever their exact text appears,
whatever logged it (an exception that quotes a header, a handler printing its
config). Others
arrive with requests and payloads: an `Authorization` header of an http_request
job, an `X-API-Key`, a password in a URL. Those are masked by shape (the value
after a header name, `Bearer <token>`, `scheme://user:password@`, `password=`),
so a secret nobody configured is still not written.

Spool's own lines never carry payloads or request headers in the first place;
this is the net under everything else. A secret shorter than MIN_SECRET
characters is not masked by value: hiding every "abc" in every line would make
the logs unreadable, and such a key is no protection anyway.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chalicelib.redact import MASK, redact_text

if TYPE_CHECKING:
    from chalicelib.config import Settings

MIN_SECRET = 4
# SPOOL_* settings whose value is a secret as a whole.
# `_KEY` at the end too (SPOOL_API_KEY, a handler's own SPOOL_ name for its key), not
# the key lists below.
_SECRET_SETTING = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|_KEY$", re.IGNORECASE)
# Named like a secret but holding the names of secrets (named_secrets reads their
# values): masked, `KeyError: 'PARTNER_TOKEN'` read `KeyError: '***'` for a worker
# whose shell lacked the variable.
NAMES_OF_SECRETS = "SPOOL_SECRET_VARIABLES"
# Settings holding comma-separated `key[=name]` entries (chalicelib/api/auth.py).
KEY_LISTS = ("SPOOL_API_KEYS", "SPOOL_METRICS_KEYS")
HASHED = "sha256:"
# Header (or field) names whose value is a credential, however it is quoted.
SENSITIVE_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "api_key",
        "apikey",
        "cookie",
        "set-cookie",
        "x-amz-security-token",
        "password",
        "smtp_password",
    }
)
_NAMES = "|".join(
    re.escape(n).replace(r"\-", "[-_]") for n in sorted(SENSITIVE_NAMES, key=len, reverse=True)
)
# `Authorization: Bearer x`, `'x-api-key': 'k'`, `"Authorization": "Basic y"`, and the
# same inside a JSON string that was itself encoded (`\"Authorization\": \"...\"`).
_NAMED_VALUE = re.compile(
    rf"(?P<name>(?<![A-Za-z0-9_-])(?:{_NAMES})(?![A-Za-z0-9_-])\\?[\"']?\s*[:=]\s*)"
    r"(?P<value>\\\"(?:[^\"\\]|\\[^\"])*\\\"|\"[^\"]*\"|'[^']*'"
    r"|(?:(?:bearer|basic|digest|token)\s+)?[^\s,;)}\]\"'\\]+)",
    re.IGNORECASE,
)
# A bearer token wherever it stands.
_BEARER = re.compile(r"(?P<scheme>\bbearer\s+)[A-Za-z0-9._~+/-]+=*", re.IGNORECASE)
# Every shape above (and redact_text's) contains one of these words (case-folded, as
# re.IGNORECASE matches): a text with none of them can hold only configured secrets,
# so a few substring tests spare four regex passes on the common line (a job event of
# ids and names). tests/test_redact.py checks each name in SENSITIVE_NAMES is covered.
# Every shape also needs one of these after its word (`=`, `:`, or the space after
# "Bearer"): an id, a name or a number has none, so it skips even the word search.
_SEPARATOR = re.compile(r"[=:\s]")
SHAPE_WORDS = (
    "authorization", "cookie", "token", "passw", "pwd", "secret", "bearer", "://",
    "api-key", "api_key", "apikey",
)  # fmt: skip


def _masked_value(match: re.Match[str]) -> str:
    value = match["value"]
    for quote in ('\\"', '"', "'"):
        if value.startswith(quote) and len(value) >= 2 * len(quote):
            return f"{match['name']}{quote}{MASK}{quote}"
    return f"{match['name']}{MASK}"


def _has_shape_word(folded: str) -> bool:
    # map over the bound __contains__ runs the tests in C: a generator in any() resumed
    # a Python frame per word, for every new piece of a log line (a job id's, each line).
    return any(map(folded.__contains__, SHAPE_WORDS))


def has_shape_word(text: str) -> bool:
    """True when a shape word is in `text`'s casefold: only then can a shape be masked."""
    return _has_shape_word(text.casefold())


# Short texts recur on every line (event names, tenants, types, queues): their masked
# form is remembered, up to REMEMBERED of them (then forgotten all at once), and
# forgotten whenever the secrets change.
REMEMBER_UP_TO = 64
REMEMBERED = 4096


class Redactor:
    """Masks the configured secrets by value and credentials by shape; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._known: dict[str, str] = {}
        self._spaced = False  # a secret (in some form) holds a space

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values from now on (each also as JSON writes it inside a string)."""
        new = {s for s in secrets if len(s) >= MIN_SECRET} - self._secrets
        if not new:
            return
        with self._lock:
            self._secrets |= new
            forms = set(self._secrets)
            forms |= {json.dumps(s)[1:-1] for s in self._secrets}
            forms |= {json.dumps(s, ensure_ascii=False)[1:-1] for s in self._secrets}
            # Longest first, so a secret containing another is masked whole.
            alternatives = sorted(forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))
            self._spaced = any(" " in form for form in forms)
            self._known = {}  # after the pattern: a text read from here on meets it

    def secrets_token(self) -> object:
        """An object that is replaced whenever the secrets change (add, clear): what a
        cache of masked text keys on, so that nothing masked under other secrets is
        used again (logs.text_line's pieces)."""
        return self._known

    def spans_spaces(self) -> bool:
        """True when a configured secret holds a space. When none does, nothing text()
        masks can span a space: no secret, and no shape word (SHAPE_WORDS hold none,
        and casefold maps no other character to one). So a text made by joining parts
        with spaces is left as it is when each part `leaves` alone
        (logs.text_line skips its whole line's pass on that ground)."""
        return self._spaced

    def leaves(self, text: str) -> bool:
        """True when no configured secret occurs in `text` and no shape word in its
        casefold: text() returns such a text unchanged, and so it does any text
        joined from such parts with spaces while `spans_spaces()` is False."""
        return not self.finds_secret(text) and not has_shape_word(text)

    def finds_secret(self, text: str) -> bool:
        """True when a configured secret occurs in `text` (leaves' first half, for a
        text known to hold no shape word)."""
        pattern = self._pattern
        return pattern is not None and pattern.search(text) is not None

    def add_settings(self, settings: Settings) -> None:
        self.add(secrets_in(settings))

    def text(self, text: str) -> str:
        if len(text) > REMEMBER_UP_TO:
            return self._masked(text)
        known = self._known
        masked = known.get(text)
        if masked is None:
            masked = self._masked(text)
            if len(known) >= REMEMBERED:
                known.clear()
            known[text] = masked
        return masked

    def shapes(self, text: str) -> str:
        """`text` with credentials masked by shape only (`password=...`, `Bearer ...`,
        `user:pw@`), never by the configured secrets' values: for what a tenant sent
        and reads back, where a `***` in place of a guess would confirm it is another
        tenant's key or the operator's password."""
        if _SEPARATOR.search(text) is None or not _has_shape_word(text.casefold()):
            return text
        text = _NAMED_VALUE.sub(_masked_value, text)
        text = _BEARER.sub(lambda m: f"{m['scheme']}{MASK}", text)
        return redact_text(text)

    def text_beside(self, text: str, told: Callable[[], str]) -> str:
        """`text` masked as text() masks it, except configured secrets that occur in
        what the reader sent (`told()`: a job's payload as JSON, read only when a
        secret is in the text). A handler's log tail goes back to the job's tenant: a
        handler that logs its payload would otherwise turn each `***` into a verdict
        on a guess the tenant planted there. A value the reader sent is no news to
        them, and a secret the handler logs by itself is still masked."""
        pattern = self._pattern
        if pattern is None or pattern.search(text) is None:
            return self.shapes(text)
        sent = told()

        def unless_sent(match: re.Match[str]) -> str:
            found = match.group(0)
            return found if found in sent or json.dumps(found)[1:-1] in sent else MASK

        return self.shapes(pattern.sub(unless_sent, text))

    def _masked(self, text: str) -> str:
        """The configured secrets by value, then the shapes. Masking a value takes
        words away and adds none ("***" holds no shape word or separator), so the
        shapes' gate reads the masked text as it would have read the original."""
        pattern = self._pattern
        return self.shapes(pattern.sub(MASK, text) if pattern is not None else text)

    def value(self, value: Any, depth: int = 0) -> Any:
        """A structured log field with its secrets masked (strings, and dicts/lists of them)."""
        if isinstance(value, str):
            return self.text(value)
        if depth > 4 or isinstance(value, (int, float, bool)) or value is None:
            return value
        if isinstance(value, Mapping):
            return {
                k: MASK if str(k).lower() in SENSITIVE_NAMES else self.value(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.value(v, depth + 1) for v in value]
        return self.text(str(value))

    def clear(self) -> None:
        with self._lock:
            self._secrets = set()
            self._pattern = None
            self._spaced = False
            self._known = {}


def secrets_in(settings: Settings) -> set[str]:
    """Every secret these settings hold: API and metrics keys (not their sha256 forms),
    the store's and the Pushgateway's URL passwords, and each SPOOL_* setting named
    like a password or token."""
    found: set[str] = set()
    lists = {name: settings.extra.get(name, "") for name in KEY_LISTS}
    lists["SPOOL_API_KEYS"] = settings.api_keys or lists["SPOOL_API_KEYS"]
    for text in lists.values():
        found |= key_entries(text)
    for url in (settings.store_url, settings.pushgateway_url or ""):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            found.add(password)
    for name, value in settings.extra.items():
        # A `<SECRET>_PARAMETER` holds where the secret is (an SSM name), not the secret:
        # chalicelib/secret_parameters.py masks the value it reads.
        if (
            _SECRET_SETTING.search(name)
            and value.strip()
            and name != NAMES_OF_SECRETS
            and not name.endswith("_PARAMETER")
        ):
            found.add(value.strip())
    # SPOOL_WEBHOOKS_PARAMETER's secrets are masked when the parameter is read
    # (chalicelib/webhooks/source.py): reading it here would call SSM at start.
    found |= webhook_secrets(settings.extra.get("SPOOL_WEBHOOKS", ""))
    found |= named_secrets(settings)
    return found


def named_secrets(settings: Settings, env: Mapping[str, str] | None = None) -> set[str]:
    """The values of the environment variables SPOOL_SECRET_VARIABLES names: a
    handler's own credentials, under names of its own (PARTNER_API_KEY)."""
    env = os.environ if env is None else env
    names = settings.items("SPOOL_SECRET_VARIABLES")
    return {value.strip() for name in names if (value := env.get(name, "")).strip()}


def webhook_secrets(raw: str) -> set[str]:
    """The signing secrets in SPOOL_WEBHOOKS or its parameter's value
    ({"tenant": {"secrets": [...]}}), read leniently: a malformed value is
    webhooks/config.py's to refuse, not the logs'."""
    try:
        tenants = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return set()
    found: set[str] = set()
    for entry in tenants.values() if isinstance(tenants, dict) else ():
        if not isinstance(entry, dict):
            continue
        listed = entry.get("secrets")
        for secret in [*(listed if isinstance(listed, list) else []), entry.get("secret")]:
            if isinstance(secret, str) and secret.strip():
                found.add(secret.strip())
    return found


def key_entries(text: str) -> set[str]:
    """The plain keys in a `key=tenant,...` list; an entry with `=` in its key counts whole too."""
    found: set[str] = set()
    for entry in text.split(","):
        entry = entry.strip()
        if not entry or entry[: len(HASHED)].lower() == HASHED:
            continue
        found.add(entry)
        key, sep, _ = entry.rpartition("=")
        if sep and key:
            found.add(key)
    return found


redactor = Redactor()
