"""The dashboard's HTML shell and its two static files, with the headers that keep it safe.

Every URL in the shell is relative ("ui/static/app.js"), so the page works at
/ui under `spool serve` and `chalice local`, behind a proxy that adds a prefix,
and under an API Gateway stage (/api/ui). The script finds the JSON routes
relative to its own URL.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

STATIC = Path(__file__).parent / "static"
FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}

# No inline script or style, nothing from elsewhere, no framing, no forms posting away;
# and (Trusted Types, with no policy allowed) no string ever made HTML or script: app.js
# writes text nodes only, and a slip that set innerHTML would throw, not parse.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Spool</title>
<link rel="stylesheet" href="ui/static/app.css">
</head>
<body>
<header class="top">
  <span class="brand">Spool</span>
  <nav id="nav"></nav>
  <span id="who"></span>
</header>
<main id="app"><noscript>The Spool dashboard needs JavaScript.</noscript></main>
<script src="ui/static/app.js" defer></script>
</body>
</html>
"""


def shell() -> tuple[str, dict[str, str]]:
    return SHELL, {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        **SECURITY_HEADERS,
    }


@lru_cache(maxsize=len(FILES))
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def static(name: str) -> tuple[str, dict[str, str]] | None:
    """A committed static file by its exact name, or None (no path is ever joined)."""
    kind = FILES.get(name)
    if kind is None:
        return None
    return _read(name), {"Content-Type": kind, "Cache-Control": "no-cache", **SECURITY_HEADERS}
