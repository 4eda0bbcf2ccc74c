"""Spool's Chalice app: thin shells over chalicelib/. Routes arrive with the HTTP edge."""

from __future__ import annotations

from typing import Any

from chalice import Chalice

app = Chalice(app_name="spool")


@app.route("/health")
def health() -> dict[str, Any]:
    return {"status": "ok"}
