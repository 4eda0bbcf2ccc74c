"""Spool's engine: plain Python that app.py (Chalice) and local/ (the emulator) drive."""
