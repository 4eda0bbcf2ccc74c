"""Handlers that ship with Spool. Importing a module registers its handlers."""
