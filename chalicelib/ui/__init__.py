"""The dashboard: one HTML shell, a committed script and stylesheet, and JSON reads.

The page holds no data and needs no key; its script asks for an API key, keeps
it in sessionStorage and sends it in X-API-Key on every fetch() to the JSON
routes under /ui/api/ (chalicelib/api/ui_routes.py). No cookie is ever set, so
a cross-site request carries no credential and CSRF does not arise. Every job
field is put on the page as text (textContent), never as HTML, and secrets in
payloads are masked on the server before they leave (redaction.py).
"""
