"""Keep credentials out of anything a person or a log reads.

Store URLs carry passwords (postgresql://spool:s3cret@db/spool), and they end
up in banners, log lines and error messages. Everything that shows a URL shows
`redact_url(url)`; everything that shows free text that may hold one shows
`redact_text(text)`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that hold secrets in the URLs Spool accepts (libpq's
# password=..., S3-style signatures, tokens).
_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|key|signature|credential|auth", re.IGNORECASE)
# scheme://user:password@host, anywhere in a text.
# The scheme's length is bounded: unbounded, every letter of a long run such as
# "a-a-a-..." started a match that ran to the run's end (quadratic time on text an
# attacker can choose, such as a handler's error message).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<user>[^/\s:@]*):[^/\s@]*@")
_KV_SECRET = re.compile(
    # No \b before the word: DB_PASSWORD= and API_TOKEN= are masked too.
    r"(?P<name>(?:password|passwd|pwd|secret|token)\s*=\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|\S+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """The URL with any password and secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAMS.search(name) for name, _ in pairs):
            query = urlencode(
                [(n, MASK if _SECRET_PARAMS.search(n) else v) for n, v in pairs], safe="*"
            )
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret; urlunsplit would also drop an empty "//" authority
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with URL passwords and
    `password=...` pairs masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _KV_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)
