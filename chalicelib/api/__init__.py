"""The HTTP edge as plain Python: app.py hands each request here and turns the
answer back into a Chalice Response, so nothing in this package imports Chalice
and every route behaves the same on Lambda, under `chalice local` and behind the
local WSGI server."""
